using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests.Generation;

/// <summary>
/// <c>mlContext.Llm().GenerateText</c>: a completion column over an IDataView of prompts, batched, lazy, row-to-row,
/// through the pipeline's text transforms, saved and loaded in a model zip.
/// </summary>
[Collection("Torch")]
public class TextGenerationTransformerTests : IClassFixture<TextGenerationTransformerTests.TrainedPipeline>
{
    private static readonly string[] Prompts = ["TO BE", "whether", "The slings and", "o", "NOT", "to be or not to"];

    private readonly TrainedPipeline _trained;

    public TextGenerationTransformerTests(TrainedPipeline trained) => _trained = trained;

    /// <summary>Lowercasing normalizer → character tokenizer → packing → a tiny LM trained for a few steps.</summary>
    public sealed class TrainedPipeline
    {
        public TrainedPipeline()
        {
            Pipeline = Train(new MLContext(seed: 1), steps: 30);
            LanguageModel = Pipeline.LastTransformer;
        }

        /// <summary>The pipeline, its language model trained <paramref name="steps"/> steps (the format fixture's maker uses it too).</summary>
        public static TransformerChain<CausalLmTransformer> Train(MLContext ml, int steps)
        {
            var text = ml.Data.LoadFromEnumerable(new[] { new TestData.TextRow { Text = string.Concat(Enumerable.Repeat(TestData.Corpus, 3)) } });
            var prep = ml.Transforms.Text.NormalizeForLm("Normalized", "Text", lowercase: true)
                .Append(ml.Transforms.Text.TokenizeForLm("Ids", "Normalized", new LmTokenizerOptions { Kind = LmTokenizerKind.Character }))
                .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: 16))
                .Fit(text);
            var lm = ml.Llm().Trainers.CausalLm(TestData.TinyOptions(16, maxSteps: steps)).Fit(prep.Transform(text));
            return prep.Append(lm);
        }

        public TransformerChain<CausalLmTransformer> Pipeline { get; }

        public CausalLmTransformer LanguageModel { get; }
    }

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";

        public int Id { get; set; }
    }

    public sealed class CompletionRow
    {
        public string Prompt { get; set; } = "";

        public string Completion { get; set; } = "";
    }

    public sealed class CompletionsRow
    {
        [VectorType(3)]
        public string[] Completion { get; set; } = [];
    }

    private static IDataView PromptData(MLContext ml) =>
        ml.Data.LoadFromEnumerable(Prompts.Select((p, i) => new PromptRow { Prompt = p, Id = i }));

    private static string[] Completions(MLContext ml, IDataView data) =>
        data.GetColumn<ReadOnlyMemory<char>>("Completion").Select(c => c.ToString()).ToArray();

    [Fact]
    public void PromptsPassThroughThePipelinesTextTransformsBeforeTokenization()
    {
        var ml = new MLContext(seed: 1);
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 20 };
        var generator = ml.Llm().CreateGenerator(_trained.Pipeline);
        Assert.Equal("to be", generator.PreparePrompt("TO BE"));
        Assert.Equal(ml.Llm().CreateGenerator(_trained.LanguageModel).Generate("to be", greedy), generator.Generate("TO BE", greedy));

        // The language model alone has no normalizer: upper-case letters are not in its character vocabulary.
        Assert.ThrowsAny<Exception>(() => ml.Llm().CreateGenerator(_trained.LanguageModel).Generate("TO BE", greedy));
    }

    [Fact]
    public void PromptTransformsFollowTheTokenizersInputColumnBackThroughTheChain()
    {
        // Raw → (redact) Clean → (normalize) Text → tokenizer; a normalizer of another column is not on the path.
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new { Raw = "Mail ME at someone@example.com", Other = "x" } });
        var chain = ml.Transforms.Text.RedactPii("Clean", "Raw")
            .Append(ml.Transforms.Text.NormalizeForLm("Elsewhere", "Other", lowercase: true))
            .Append(ml.Transforms.Text.NormalizeForLm("Text", "Clean", lowercase: true))
            .Append(ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Kind = LmTokenizerKind.Character }))
            .Fit(data);
        var transforms = LlmCatalog.PromptTransforms(chain.ToList());
        Assert.Equal([typeof(PiiRedactorTransformer), typeof(TextNormalizerTransformer)], transforms.Select(t => t.GetType()));
        Assert.Equal("Text", ((TextNormalizerTransformer)transforms[1]).OutputColumnName);

        using var model = GenerationTestModel.Create();
        var generator = new TextGenerator(model, GenerationTestModel.Tokenizer, transforms);
        string prompt = "Mail ME at someone@example.com";
        Assert.Equal(LmTextNormalizer.Normalize(PiiRedactor.Redact(prompt), new TextNormalizerOptions { Lowercase = true }), generator.PreparePrompt(prompt));
        Assert.DoesNotContain("someone", generator.PreparePrompt(prompt), StringComparison.Ordinal);
    }

    [Fact]
    public void CompletionsAreBatchedAcrossRowsAndEqualDirectGeneration()
    {
        var ml = new MLContext(seed: 1);
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 20, StopStrings = ["."] };
        var generator = ml.Llm().CreateGenerator(_trained.Pipeline);
        var expected = Prompts.Select(p => generator.Generate(p, greedy)).ToArray();
        foreach (int batchSize in new[] { 1, 4, 8 })
        {
            var transformer = ml.Llm().GenerateText("Completion", "Prompt", _trained.Pipeline, greedy, batchSize).Fit(PromptData(ml));
            var output = transformer.Transform(PromptData(ml));
            Assert.Equal(expected, Completions(ml, output));
            Assert.Equal(Enumerable.Range(0, Prompts.Length), output.GetColumn<int>("Id"));   // input columns pass through
        }
    }

    [Fact]
    public void TheTransformRoundTripsThroughAZipAndWorksInAPredictionEngine()
    {
        string path = Path.Combine(Path.GetTempPath(), "llm-gen-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            var ml = new MLContext(seed: 1);
            var options = new TextGenerationOptions
            {
                BatchSize = 4,
                Generation = new GenerationOptions { MaxNewTokens = 15, Seed = 5, TopK = 8, NoRepeatNgramSize = 4, StopStrings = ["q"], EosTokenIds = [0] },
            };
            var transformer = ml.Llm().GenerateText(_trained.Pipeline, options).Fit(PromptData(ml));
            var before = Completions(ml, transformer.Transform(PromptData(ml)));
            Assert.Equal(before, Completions(ml, transformer.Transform(PromptData(ml))));   // seeded per batch: reproducible
            ml.Model.Save(transformer, PromptData(ml).Schema, path);

            var fresh = new MLContext(seed: 99);
            var loaded = fresh.Model.Load(path, out var schema);
            Assert.Equal(before, Completions(fresh, loaded.Transform(PromptData(fresh))));
            var loadedGeneration = Assert.IsType<TextGenerationTransformer>(loaded is TransformerChain<ITransformer> chain ? chain.Single() : loaded);
            Assert.Equal(["q"], loadedGeneration.GenerationOptions.StopStrings);
            Assert.Equal(4, loadedGeneration.BatchSize);
            Assert.Equal("to be", loadedGeneration.Generator.PreparePrompt("TO BE"));   // the normalizer was saved with it

            // Appended after the fitted language model, in one zip with the whole pipeline.
            ml.Model.Save(_trained.Pipeline.Append(transformer), new MLContext().Data.LoadFromEnumerable(new[] { new TestData.TextRow() }).Schema, path);
            var whole = (IEnumerable<ITransformer>)fresh.Model.Load(path, out _);
            var appended = whole.OfType<TextGenerationTransformer>().Single();
            Assert.Equal(before, Completions(fresh, appended.Transform(PromptData(fresh))));
            Assert.Equal(5, whole.Count());
            // The zip holds the language model (and the normalizer) once: the generator refers to the pipeline's own
            // entries, and loads as the same instances.
            using (var zip = System.IO.Compression.ZipFile.OpenRead(path))
                Assert.Single(zip.Entries, e => e.Name == "Weights");

            Assert.Same(whole.OfType<CausalLmTransformer>().Single(), appended.LanguageModel);
            Assert.Same(whole.OfType<TextNormalizerTransformer>().Single(), appended.Generator.PromptTransforms.Single());

            // A PredictionEngine generates one row at a time: greedy gives the batched result.
            var greedy = ml.Llm().GenerateText("Completion", "Prompt", _trained.Pipeline, new GenerationOptions { DoSample = false, MaxNewTokens = 12 }).Fit(PromptData(ml));
            ml.Model.Save(greedy, PromptData(ml).Schema, path);
            var engine = fresh.Model.CreatePredictionEngine<PromptRow, CompletionRow>(fresh.Model.Load(path, out _));
            var batched = Completions(ml, greedy.Transform(PromptData(ml)));
            for (int i = 0; i < Prompts.Length; i++)
            {
                Assert.Equal(batched[i], engine.Predict(new PromptRow { Prompt = Prompts[i], Id = i }).Completion);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    public sealed class TextPrompt
    {
        public string Text { get; set; } = "";
    }

    public sealed class TextCompletion
    {
        public string Completion { get; set; } = "";
    }

    public sealed class ScoredCompletion
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];

        public float LogLikelihood { get; set; }

        public string Completion { get; set; } = "";
    }

    [Fact]
    public void TheTrainingChainWithGenerationAppendedGeneratesOverPromptsInTransformAndInAPredictionEngine()
    {
        string path = Path.Combine(Path.GetTempPath(), "llm-chain-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            var ml = new MLContext(seed: 1);
            IDataView PromptsOf(MLContext context) => context.Data.LoadFromEnumerable(Prompts.Select(p => new TextPrompt { Text = p }));
            var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 12 };
            // Prompts come in the pipeline's own text column, as ML.NET's prediction inputs share the training schema.
            var generate = ml.Llm().GenerateText("Completion", "Text", _trained.Pipeline, greedy, batchSize: 4).Fit(PromptsOf(ml));
            var chain = _trained.Pipeline.Append(generate);     // normalize → tokenize → PackTokens → language model → generate
            var alone = ml.Llm().CreateGenerator(_trained.Pipeline);
            var expected = Prompts.Select(p => alone.Generate(p, greedy)).ToArray();
            Assert.Contains(expected, c => c.Length > 0);

            // Over an IDataView: PackTokens packs and the language model scores blocks, as in training; GenerateText then
            // generates over the rows packing read: one row per prompt, the prompt and its completion, in batches.
            var output = chain.Transform(PromptsOf(ml));
            Assert.Equal(["Text", "Completion"], output.Schema.Select(c => c.Name));
            Assert.Equal(output.Schema.Select(c => (c.Name, c.Type)), chain.GetOutputSchema(PromptsOf(ml).Schema).Select(c => (c.Name, c.Type)));
            Assert.Equal(Prompts, output.GetColumn<ReadOnlyMemory<char>>("Text").Select(t => t.ToString()));
            Assert.Equal(expected, Completions(ml, output));

            // One prompt at a time: the whole chain is a row-to-row mapper (PackTokens gives the row its own tokens at
            // inference time; the language model scores a row only when asked).
            Assert.True(((ITransformer)chain).IsRowToRowMapper);
            var engine = ml.Model.CreatePredictionEngine<TextPrompt, TextCompletion>(chain);
            Assert.Equal(expected, Prompts.Select(p => engine.Predict(new TextPrompt { Text = p }).Completion));

            // The columns on the way: the prompt's tokens after the normalizer and tokenizer, unpacked, and their score.
            var scored = ml.Model.CreatePredictionEngine<TextPrompt, ScoredCompletion>(chain).Predict(new TextPrompt { Text = "TO BE or not" });
            Assert.Equal(_trained.LanguageModel.Tokenizer!.Encode("to be or not"), scored.Tokens);
            Assert.Equal(_trained.LanguageModel.ScoreTokens(scored.Tokens), scored.LogLikelihood, 5);
            Assert.Equal(alone.Generate("TO BE or not", greedy), scored.Completion);

            // Training is untouched: the pipeline's Transform of text still packs blocks of ContextLength + 1 tokens.
            var text = ml.Data.LoadFromEnumerable(new[] { new TestData.TextRow { Text = TestData.Corpus } });
            var blocks = new TransformerChain<ITransformer>([.. _trained.Pipeline.Take(3)]).Transform(text);
            Assert.Equal(["Tokens"], blocks.Schema.Select(c => c.Name));
            Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32, 17), blocks.Schema["Tokens"].Type);
            Assert.True(blocks.GetColumn<VBuffer<int>>("Tokens").Count() > 1, "one document is packed into several blocks");

            // One zip (the weights once): loaded, both ways give the same completions.
            ml.Model.Save(chain, text.Schema, path);
            var fresh = new MLContext(seed: 99);
            var loaded = fresh.Model.Load(path, out _);
            var loadedEngine = fresh.Model.CreatePredictionEngine<TextPrompt, TextCompletion>(loaded);
            Assert.Equal(expected, Prompts.Select(p => loadedEngine.Predict(new TextPrompt { Text = p }).Completion));
            Assert.Equal(expected, Completions(fresh, loaded.Transform(PromptsOf(fresh))));

            // Prompts that are not in the pipeline's text column cannot pass its transforms: the usual message names it.
            var missing = Assert.ThrowsAny<ArgumentException>(() => chain.Transform(PromptData(ml)));
            Assert.Contains("'Text'", missing.Message, StringComparison.Ordinal);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void SeveralReturnSequencesMakeAVectorColumn()
    {
        var ml = new MLContext(seed: 1);
        var beams = new GenerationOptions { DoSample = false, MaxNewTokens = 10, NumBeams = 3, NumReturnSequences = 3 };
        var estimator = ml.Llm().GenerateText("Completion", "Prompt", _trained.Pipeline, beams, batchSize: 4);
        var output = estimator.Fit(PromptData(ml)).Transform(PromptData(ml));
        Assert.Equal(new VectorDataViewType(TextDataViewType.Instance, 3), output.Schema["Completion"].Type);
        var rows = ml.Data.CreateEnumerable<CompletionsRow>(output, reuseRowObject: false).ToArray();
        var generator = ml.Llm().CreateGenerator(_trained.Pipeline);
        for (int i = 0; i < Prompts.Length; i++)
        {
            Assert.Equal(generator.Generate([Prompts[i]], beams), rows[i].Completion);
        }
    }

    [Fact]
    public void BadColumnsAndOptionsAreReportedByName()
    {
        var ml = new MLContext(seed: 1);
        var estimator = ml.Llm().GenerateText("Completion", "Question", _trained.Pipeline);
        var ex = Assert.ThrowsAny<ArgumentException>(() => estimator.Fit(PromptData(ml)));
        Assert.Contains("Question", ex.Message, StringComparison.Ordinal);
        var batch = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().GenerateText("Completion", "Prompt", _trained.Pipeline, batchSize: 0));
        Assert.Equal("TextGenerationOptions.BatchSize is 0; expected an integer of at least 1. (Parameter 'BatchSize')", batch.Message);
        var generation = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().GenerateText("Completion", "Prompt", _trained.Pipeline, new GenerationOptions { NumBeams = 0 }));
        Assert.Equal("GenerationOptions.NumBeams is 0; expected an integer of at least 1 (1 turns beam search off). (Parameter 'NumBeams')", generation.Message);
    }
}
