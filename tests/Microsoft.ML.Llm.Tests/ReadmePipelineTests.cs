using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>The README's pipeline, at test scale: normalize → BPE trained in Fit → pack → Modern GPT → zip → generate.</summary>
[Collection("Torch")]
public class ReadmePipelineTests
{
    [Fact]
    public void ReadmePipelineTrainsSavesLoadsAndGenerates()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llm-readme-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var docs = Enumerable.Range(0, 40).Select(i => new TestData.TextRow { Text = $"Document {i}:  “{TestData.Corpus}”\u200b" });
            var text = ml.Data.LoadFromEnumerable(docs);
            var prep = ml.Transforms.Text.NormalizeForLm("Text", "Text")
                .Append(ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { VocabularySize = 320 }))
                .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: 32))
                .Fit(text);
            var lm = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
            {
                Model = GptConfig.Tiny(contextLength: 32) with { Style = GptStyle.Modern },
                MaxSteps = 30,
                LearningRate = 3e-3,
                WarmupSteps = 5,
                CheckpointDirectory = Path.Combine(dir, "ckpt"),
                CheckpointInterval = 10,
                NumberOfThreads = 1,
            }).Fit(prep.Transform(text));
            Assert.Equal(LmTokenizerKind.Bpe, lm.Tokenizer!.Kind);
            Assert.Equal(320, lm.Config.VocabularySize);                 // taken from the trained tokenizer
            Assert.True(lm.History[^1].Loss < lm.History[0].Loss - 1.0);
            Assert.Equal(2, Directory.GetFiles(Path.Combine(dir, "ckpt")).Length);   // KeepCheckpoints = 2: steps 20 and 30

            var model = prep.Append(lm);
            string zip = Path.Combine(dir, "model.zip");
            ml.Model.Save(model, text.Schema, zip);
            var generator = ml.Llm().CreateGenerator(ml.Model.Load(zip, out _));
            string completion = generator.Generate("Document 3:", new GenerationOptions { MaxNewTokens = 12, Temperature = 0.8f, TopK = 50, Seed = 5 });
            Assert.False(string.IsNullOrEmpty(completion));
            Assert.Equal(completion, generator.Generate("Document 3:", new GenerationOptions { MaxNewTokens = 12, Temperature = 0.8f, TopK = 50, Seed = 5 }));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }
}
