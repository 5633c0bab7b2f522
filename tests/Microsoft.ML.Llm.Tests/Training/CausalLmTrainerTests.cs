using Microsoft.ML.Llm.Data;
using TorchSharp;

namespace Microsoft.ML.Llm.Tests;

[Collection("Torch")]
public class CausalLmTrainerTests
{
    private const int Block = 17;   // context 16 + 1

    [Fact]
    public void TinyModelOverfitsTinyCorpus()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var data = TestData.Blocks(ml, tok, Block, repeats: 4, stride: 5);
        var options = TestData.TinyOptions(16, maxSteps: 600);
        options.Tokenizer = tok;
        var model = ml.Llm().Trainers.CausalLm(options).Fit(data);

        // At initialisation (std 0.02) the logits are near zero: a uniform guess over the padded vocabulary of 64 costs
        // ln 64 ≈ 4.16 nats (nanoGPT likewise starts near ln 50304 ≈ 10.8). Memorising the corpus drives it far lower.
        Assert.Equal(64, model.Config.PaddedVocabularySize);
        double first = model.History[0].Loss, last = model.History.TakeLast(10).Average(m => m.Loss);
        Assert.InRange(first, Math.Log(64) - 0.15, Math.Log(64) + 0.15);
        Assert.True(last < 0.6, $"loss after 600 steps was {last:F3}, expected < 0.6");
        Assert.Equal(600, model.History.Count);
        Assert.Equal(600, model.History[^1].Step);
        // The learning-rate column follows the schedule.
        Assert.Equal(LearningRateSchedule.At(LearningRateScheduleKind.Cosine, 0, 3e-3, 3e-4, 5, 600), model.History[0].LearningRate, 12);
    }

    [Fact]
    public void SameSeedGivesSameLossesAndDifferentSeedDiffers()
    {
        var tok = TestData.CharTokenizer();
        double[] Run(int seed)
        {
            var ml = new MLContext(seed: 1);
            var options = TestData.TinyOptions(16, maxSteps: 12);
            options.Tokenizer = tok;
            options.Seed = seed;
            return ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block)).History.Select(h => h.Loss).ToArray();
        }
        var a = Run(3);
        Assert.Equal(a, Run(3));
        Assert.NotEqual(a, Run(4));
    }

    [Fact]
    public void FineTuningLearningRateTrainsWithTheDefaultMinimum()
    {
        // 2e-5 is below the old fixed MinLearningRate default (6e-5); unset, the floor is LearningRate / 10 (nanoGPT).
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = new CausalLmTrainerOptions
        {
            Model = GptConfig.Tiny(contextLength: 16),
            Tokenizer = tok,
            LearningRate = 2e-5,
            MaxSteps = 4,
            WarmupSteps = 1,
            NumberOfThreads = 1,
        };
        var model = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));

        Assert.Null(options.MinLearningRate);
        Assert.Equal(tok.VocabularySize, model.Config.VocabularySize);   // null in the preset: taken from the tokenizer
        Assert.Equal(4, model.History.Count);
        Assert.All(model.History, h => Assert.True(double.IsFinite(h.Loss)));
        for (int step = 0; step < 4; step++)
            Assert.Equal(LearningRateSchedule.At(LearningRateScheduleKind.Cosine, step, 2e-5, 2e-5 / 10, 1, 4), model.History[step].LearningRate);
    }

    [Fact]
    public void ResumedRunReproducesTheUninterruptedLossCurve()
    {
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            CausalLmTrainerOptions Options(string? checkpoints)
            {
                var o = TestData.TinyOptions(16, maxSteps: 20);
                o.Tokenizer = tok;
                o.Model = GptConfig.Tiny(contextLength: 16) with { Dropout = 0.1 };   // dropout: the RNG state must be restored too
                o.GradientAccumulationSteps = 2;
                o.CheckpointDirectory = checkpoints;
                o.CheckpointInterval = 5;
                return o;
            }

            var ml = new MLContext(seed: 1);
            var data = TestData.Blocks(ml, tok, Block, repeats: 3);
            var full = ml.Llm().Trainers.CausalLm(Options(null)).Fit(data).History.Select(h => h.Loss).ToArray();

            // Interrupt after step 12: cancellation ends at the step boundary with a checkpoint.
            using var cts = new CancellationTokenSource();
            var interrupted = Options(dir);
            interrupted.CancellationToken = cts.Token;
            interrupted.Progress = new SyncProgress(p => { if (p.Step == 12) cts.Cancel(); });
            var ex = Assert.Throws<OperationCanceledException>(() => ml.Llm().Trainers.CausalLm(interrupted).Fit(data));
            Assert.Equal($"Training was cancelled at step 12; resume with ResumeFrom = \"{dir}\".", ex.Message);
            Assert.Equal(["checkpoint-000000010.ckpt", "checkpoint-000000012.ckpt"], Directory.GetFiles(dir).Select(f => Path.GetFileName(f)!).Order().ToArray());

            var resumed = Options(dir);
            resumed.ResumeFrom = dir;
            var history = ml.Llm().Trainers.CausalLm(resumed).Fit(data).History;
            Assert.Equal(full, history.Select(h => h.Loss).ToArray());
            Assert.Equal(Enumerable.Range(1, 20).Select(i => (long)i), history.Select(h => h.Step));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ValidationEarlyStoppingAndBestWeights()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 400);
        options.Tokenizer = tok;
        // Validation text differs from the training text, so memorising the training corpus eventually hurts it.
        options.ValidationSet = TestData.BlocksOf(ml, tok, TestData.HeldOut, Block);
        options.EvaluationInterval = 5;
        options.EarlyStoppingPatience = 3;
        var model = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block, repeats: 4, stride: 3));

        var evals = model.History.Where(h => h.ValidationLoss is not null).ToList();
        Assert.True(model.History.Count < 400, "early stopping should end training before MaxSteps");
        double best = evals.Min(h => h.ValidationLoss!.Value);
        // The last three evaluations did not improve on the best one by any amount.
        Assert.All(evals.TakeLast(3), h => Assert.True(h.ValidationLoss >= best));
        // The returned weights are the best evaluation's: evaluating them again gives the best loss.
        var metrics = ml.Llm().Evaluate(model, options.ValidationSet);
        Assert.Equal(best, metrics.Loss, 4);
        Assert.Equal(Math.Exp(metrics.Loss), metrics.Perplexity, 6);
        // Bits per byte: every character is one byte here, so bpb = loss / ln 2.
        Assert.Equal(metrics.Loss / Math.Log(2), metrics.BitsPerByte, 6);
        Assert.True(evals[0].ValidationBitsPerByte > 0);
    }

    [Fact]
    public void NativeMemoryStaysFlatOver200Steps()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 200);
        options.Tokenizer = tok;
        options.ValidationSet = TestData.Blocks(ml, tok, Block, repeats: 1);
        options.EvaluationInterval = 50;
        var live = new Dictionary<long, long>();
        options.Progress = new SyncProgress(p => live[p.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));
        // From the first evaluation on (step 50: the best-weights copy is taken, and the optimizer state exists), the
        // number of live native tensors never changes, across training steps and validation passes alike.
        Assert.True(live[50] > live[20], "the best-weights copy made at the first evaluation is live");
        Assert.All(new long[] { 60, 99, 100, 140, 150, 199, 200 }, s => Assert.Equal(live[50], live[s]));
    }

    [Fact]
    public void DocumentMaskingTrainsOnBestFitPackedBlocks()
    {
        var ml = new MLContext(seed: 1);
        var docs = TestData.Corpus.Split(". ", StringSplitOptions.RemoveEmptyEntries).Select(d => new TestData.TextRow { Text = d + ". " }).ToArray();
        var text = ml.Data.LoadFromEnumerable(Enumerable.Repeat(docs, 6).SelectMany(d => d));
        var prep = ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Kind = LmTokenizerKind.Character, CharacterSpecialTokens = true })
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", new TokenPackerOptions { ContextLength = 32, Mode = PackingMode.BestFit }))
            .Fit(text);
        var packed = prep.Transform(text);
        var options = TestData.TinyOptions(32, maxSteps: 60);
        options.DocumentIdsColumnName = "DocumentIds";
        options.LossMaskColumnName = "LossMask";
        options.UseDocumentMasking = true;
        var masked = ml.Llm().Trainers.CausalLm(options).Fit(packed);
        Assert.True(masked.History.TakeLast(5).Average(h => h.Loss) < masked.History.Take(5).Average(h => h.Loss) - 1.0);

        // The same run without masking sees other documents in its context, so its losses differ.
        options.UseDocumentMasking = false;
        var unmasked = ml.Llm().Trainers.CausalLm(options).Fit(packed);
        Assert.NotEqual(masked.History.Select(h => h.Loss), unmasked.History.Select(h => h.Loss));
    }

    [Fact]
    public void MetricsCsvAndTensorBoardLogsAreWritten()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-logs-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = TestData.TinyOptions(16, maxSteps: 6);
            options.Tokenizer = tok;
            options.LogDirectory = dir;
            var model = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));
            var lines = File.ReadAllLines(Path.Combine(dir, "metrics.csv"));
            Assert.Equal("step,epoch,tokens,loss,learning_rate,grad_norm,tokens_per_second,mfu,peak_memory_bytes,elapsed_seconds,val_loss,val_perplexity,val_bits_per_byte", lines[0]);
            Assert.Equal(7, lines.Length);
            Assert.StartsWith("6,", lines[6]);
            var inv = System.Globalization.CultureInfo.InvariantCulture;
            var last = lines[6].Split(',');
            Assert.Equal(model.History[5].Loss, double.Parse(last[3], inv));
            Assert.Equal(model.History[5].Mfu, double.Parse(last[7], inv), 4);
            Assert.Equal(model.History[5].PeakMemoryBytes, long.Parse(last[8], inv));
            Assert.True(model.History[5].PeakMemoryBytes > 100L << 20, "the process's peak RSS (libtorch alone is > 100 MB)");
            var events = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Where(f => Path.GetFileName(f).StartsWith("events.out.tfevents", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(events);
            string eventText = System.Text.Encoding.Latin1.GetString(File.ReadAllBytes(events[0]));
            Assert.Contains("train/mfu", eventText, StringComparison.Ordinal);
            Assert.Contains("train/peak_memory_mb", eventText, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void LossPlotIsDrawnAtEachEvaluationAndAtTheEnd()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-plot-" + Guid.NewGuid().ToString("N"));
        try
        {
            var options = TestData.TinyOptions(16, maxSteps: 6);
            options.Tokenizer = tok;
            options.LogDirectory = dir;
            options.ValidationSet = TestData.BlocksOf(ml, tok, TestData.HeldOut, Block);
            options.EvaluationInterval = 3;
            string png = Path.Combine(dir, "loss.png");
            var seenAt = new List<long>();
            options.Progress = new SyncProgress(p =>
            {
                if (p.Validation is not null && File.Exists(png))
                    seenAt.Add(p.Step);
            });
            var model = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));
            // Drawn before the progress report of each evaluation (steps 3 and 6) and again at the end.
            Assert.Equal([3L, 6L], seenAt);
            using (var bitmap = SkiaSharp.SKBitmap.Decode(png))
            {
                Assert.NotNull(bitmap);
                Assert.Equal((TrainingPlots.DefaultWidth, TrainingPlots.DefaultHeight), (bitmap.Width, bitmap.Height));
            }
            Assert.False(File.Exists(png + ".tmp"));

            // The public helper draws any history, at any size.
            string custom = Path.Combine(dir, "custom", "history.png");
            TrainingPlots.SaveLossPlot(model.History, custom, width: 320, height: 200);
            using (var bitmap = SkiaSharp.SKBitmap.Decode(custom))
                Assert.Equal((320, 200), (bitmap.Width, bitmap.Height));
            var none = Assert.Throws<ArgumentException>(() => TrainingPlots.SaveLossPlot([], custom));
            Assert.StartsWith("The history has 0 rows and none holds a training or validation loss; there is nothing to draw.", none.Message);
            var tiny = Assert.Throws<ArgumentOutOfRangeException>(() => TrainingPlots.SaveLossPlot(model.History, custom, width: 4));
            Assert.StartsWith("The plot width must be between 16 and 16384 pixels; got 4.", tiny.Message);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void UnwritableLogDirectoryFailsBeforeTraining()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        string file = Path.GetTempFileName();   // a file where a directory is needed: no user, even root, can create it
        try
        {
            var options = TestData.TinyOptions(16, maxSteps: 1000);
            options.Tokenizer = tok;
            options.LogDirectory = Path.Combine(file, "logs");
            int steps = 0;
            options.Progress = new SyncProgress(_ => steps++);
            var error = Assert.Throws<ArgumentException>(() => ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block)));
            Assert.StartsWith($"Option 'LogDirectory' is '{options.LogDirectory}', which cannot be written: ", error.Message);
            Assert.Contains("Give a directory this process can create and write.", error.Message);
            Assert.Equal(0, steps);
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>IProgress that runs on the training thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    internal sealed class SyncProgress(Action<TrainingProgress> action) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => action(value);
    }
}
