using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests;

[Collection("Torch")]
public class PersistenceAndGenerationTests
{
    [Fact]
    public void SaveLoadInANewContextGivesIdenticalLogitsAndGreedyText()
    {
        string path = Path.Combine(Path.GetTempPath(), "llm-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            var ml = new MLContext(seed: 1);
            var text = ml.Data.LoadFromEnumerable(new[] { new TestData.TextRow { Text = string.Concat(Enumerable.Repeat(TestData.Corpus, 3)) } });
            var prep = ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Kind = LmTokenizerKind.Character })
                .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: 16))
                .Fit(text);
            var options = TestData.TinyOptions(16, maxSteps: 40);
            var lm = ml.Llm().Trainers.CausalLm(options).Fit(prep.Transform(text));
            var model = prep.Append(lm);
            Assert.NotNull(lm.Tokenizer);   // found through the PackTokens column's annotation
            ml.Model.Save(model, text.Schema, path);

            var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 40 };
            string before = ml.Llm().CreateGenerator(model).Generate("to be", greedy);
            var scoresBefore = ml.Data.CreateEnumerable<Scored>(model.Transform(text), reuseRowObject: false).Select(s => s.LogLikelihood).ToArray();

            var fresh = new MLContext(seed: 99);
            var loaded = fresh.Model.Load(path, out var schema);
            Assert.Equal("Text", schema[0].Name);
            var loadedLm = ((IEnumerable<ITransformer>)loaded).OfType<CausalLmTransformer>().Single();
            Assert.Equal(lm.Config, loadedLm.Config);
            Assert.Equal(lm.History.Select(h => h.Loss), loadedLm.History.Select(h => h.Loss));

            using (var scope = NewDisposeScope())
            using (no_grad())
            {
                var idx = tensor(lm.Tokenizer!.Encode("to be or not").Select(i => (long)i).ToArray(), new long[] { 1, 12 });
                var a = lm.Model.forward(idx);
                var b = loadedLm.Model.forward(idx);
                Assert.True(a.eq(b).all().item<bool>(), "logits differ after save/load");
            }
            Assert.Equal(before, fresh.Llm().CreateGenerator(loaded).Generate("to be", greedy));
            Assert.Equal(40, before.Length);
            var scoresAfter = fresh.Data.CreateEnumerable<Scored>(loaded.Transform(text), reuseRowObject: false).Select(s => s.LogLikelihood).ToArray();
            Assert.Equal(scoresBefore, scoresAfter);
            Assert.All(scoresAfter, s => Assert.InRange(s, -10f, 0f));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void SampledGenerationIsDeterministicPerSeedAndStopsAtStopStrings()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 60);
        options.Tokenizer = tok;
        var lm = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, 17));
        var gen = ml.Llm().CreateGenerator(lm);
        var sample = new GenerationOptions { MaxNewTokens = 60, Temperature = 1.0f, TopK = 5, Seed = 11 };
        string a = gen.Generate("the ", sample);
        Assert.Equal(a, gen.Generate("the ", sample));
        Assert.NotEqual(a, gen.Generate("the ", new GenerationOptions { MaxNewTokens = 60, Temperature = 1.0f, TopK = 5, Seed = 12 }));
        Assert.Equal(60, a.Length);
        Assert.Equal(a, string.Concat(gen.GenerateStreaming("the ", sample)));

        // Greedy text of this corpus has spaces every few characters: generation stops before the first one.
        string free = gen.Generate("to be or", new GenerationOptions { MaxNewTokens = 30, DoSample = false });
        int space = free.IndexOf(' ', StringComparison.Ordinal);
        Assert.True(space >= 0, $"expected a space in '{free}'");
        string untilStop = gen.Generate("to be or", new GenerationOptions { MaxNewTokens = 30, DoSample = false, StopStrings = [" "] });
        Assert.Equal(free[..space], untilStop);
    }

    [Fact]
    public void CachedGenerationEqualsFullForwardGreedyPastTheContext()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 40);
        options.Tokenizer = tok;
        var lm = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, 17));
        var prompt = tok.Encode("to be or not");
        var generated = ml.Llm().CreateGenerator(lm).GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = 30 });

        // Reference: nanoGPT's generate — crop to the context, run the whole window, take the argmax of the last position.
        var history = prompt.ToList();
        for (int i = 0; i < 30; i++)
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var window = history.Skip(Math.Max(0, history.Count - 16)).Select(t => (long)t).ToArray();
            var logits = lm.Model.forward(tensor(window, new long[] { 1, window.Length }))[0, -1, ..lm.Model.VocabularySize];
            history.Add((int)logits.argmax().item<long>());
        }
        Assert.Equal(history.Skip(prompt.Length), generated);   // 12 + 30 tokens: crosses the 16-token context

        var gen = ml.Llm().CreateGenerator(lm);
        gen.Generate("to be", new GenerationOptions { MaxNewTokens = 20, Seed = 1 });
        long live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
            gen.Generate("to be", new GenerationOptions { MaxNewTokens = 20, Seed = i });
        Assert.Equal(live, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void TokenIdsOutsideTheVocabularyAreRejectedByScoringAndGeneration()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 1);
        options.Tokenizer = tok;
        var lm = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, 17));
        int v = lm.Model.VocabularySize;
        var score = Assert.Throws<ArgumentOutOfRangeException>(() => lm.ScoreTokens([1, v, 2]));
        Assert.StartsWith($"Token id {v} is outside the model's vocabulary [0, {v}).", score.Message);
        var prompt = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().CreateGenerator(lm).GenerateTokens([-1, 2]));
        Assert.StartsWith($"Prompt token id -1 is outside the model's vocabulary [0, {v}).", prompt.Message);
    }

    private sealed class Scored
    {
        public float LogLikelihood { get; set; }
        public float Perplexity { get; set; }
    }
}
