using Microsoft.ML.Llm.Data;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests;

/// <summary>The fast training step (issue 10): the flat AdamW, activation checkpointing, deferred loss read-back,
/// throughput metrics.</summary>
[Collection("Torch")]
public class FastStepTests
{
    private const int Block = 17;   // context 16 + 1

    private static GptModel TinyModel(double dropout = 0.0)
    {
        torch.manual_seed(11);
        return new GptModel(GptConfig.Tiny(vocabularySize: 40, contextLength: 16) with { Dropout = dropout });
    }

    /// <summary>Gives every parameter of both models the same seeded pseudo-random gradient.</summary>
    private static void SetGradients(GptModel a, GptModel b, int step)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)(1000 + step));
        foreach (var (pa, pb) in a.parameters().Zip(b.parameters()))
        {
            var g = randn(pa.shape, generator: generator) * 0.01;
            if (pa.grad is null)
                pa.grad = g.clone();
            else
                pa.grad.copy_(g);
            pb.grad!.copy_(g);    // the fused optimizer's gradients are views of its buffer: write into them
        }
    }

    private static double MaxDifference(GptModel a, GptModel b)
    {
        using var scope = NewDisposeScope();
        return a.parameters().Zip(b.parameters()).Max(p => (p.First - p.Second).abs().max().item<float>());
    }

    private static AdamW Reference(GptModel model, double lr, double weightDecay) =>
        torch.optim.AdamW(
            new[]
            {
                new AdamW.ParamGroup(model.DecayParameters, new AdamW.Options { weight_decay = weightDecay }),
                new AdamW.ParamGroup(model.NoDecayParameters, new AdamW.Options { weight_decay = 0.0 }),
            },
            lr: lr, beta1: 0.9, beta2: 0.95, eps: 1e-8);

    /// <summary>Also with chunks much smaller than the model (1,000 elements: several chunks per tensor, and a chunk that
    /// straddles the end of the decayed range), so the per-chunk decay covers exactly the decayed parameters.</summary>
    [Theory]
    [InlineData(0L)]
    [InlineData(1000L)]
    [InlineData(777L)]
    public void FusedAdamWMatchesTorchSharpAdamWOnTheSameGradients(long chunkElements)
    {
        using var a = TinyModel();
        using var b = TinyModel();
        Assert.Equal(0.0, MaxDifference(a, b));
        using var reference = Reference(a, 1e-2, 0.1);
        using var fused = new FusedAdamW(b.DecayParameters.ToList(), b.NoDecayParameters.ToList(), 1e-2, 0.9, 0.95, 1e-8, 0.1);
        if (chunkElements > 0)
            fused.ChunkElements = chunkElements;
        long decayed = b.DecayParameters.Sum(p => p.numel());
        Assert.True(chunkElements == 0 || decayed % chunkElements != 0, "a chunk must straddle the decay boundary");

        // The parameters now live in the flat buffer: equal values, and each is a view (an update moves them).
        Assert.Equal(0.0, MaxDifference(a, b));
        for (int step = 0; step < 10; step++)
        {
            double lr = 1e-2 * (1 - step / 20.0);     // a changing learning rate, as a schedule sets it
            foreach (var g in reference.ParamGroups)
                g.LearningRate = lr;
            fused.LearningRate = lr;
            fused.ZeroGrad();
            SetGradients(a, b, step);
            reference.step();
            fused.Step();
        }

        double difference = MaxDifference(a, b);
        Assert.True(difference <= 1e-6, $"max |Δ| after 10 steps = {difference}");
        using (var scope = NewDisposeScope())
        {
            var first = b.parameters().First();
            Assert.True((first - a.parameters().First()).abs().max().item<float>() <= 1e-6);
        }

        // Weight decay applies to ≥2-D weights only: with zero gradients and a large decay, only those shrink.
        using var c = TinyModel();
        using var decayOnly = new FusedAdamW(c.DecayParameters.ToList(), c.NoDecayParameters.ToList(), 0.5, 0.9, 0.95, 1e-8, 1.0);
        var before = c.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        decayOnly.ZeroGrad();
        decayOnly.Step();
        foreach (var (name, p) in c.named_parameters())
        {
            float expected = p.dim() >= 2 ? 0.5f : 1f;
            float ratio = (p.detach().abs().sum() / before[name].abs().sum()).item<float>();
            if (before[name].abs().sum().item<float>() > 0)
                Assert.True(Math.Abs(ratio - expected) < 1e-5, $"{name}: ratio {ratio}, expected {expected}");
        }

        foreach (var t in before.Values)
            t.Dispose();
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(777L)]
    public void ClippingMatchesTorchSharpClipGradNorm(long chunkElements)
    {
        using var a = TinyModel();
        using var b = TinyModel();
        using var reference = Reference(a, 1e-3, 0.1);
        using var fused = new FusedAdamW(b.DecayParameters.ToList(), b.NoDecayParameters.ToList(), 1e-3, 0.9, 0.95, 1e-8, 0.1);
        if (chunkElements > 0)
            fused.ChunkElements = chunkElements;
        for (int step = 0; step < 3; step++)
        {
            fused.ZeroGrad();
            SetGradients(a, b, step);
            var parameters = a.DecayParameters.Concat(a.NoDecayParameters).ToList();
            double expected = nn.utils.clip_grad_norm_(parameters, 0.05);
            using var norm = fused.ClipGradientNorm(0.05);
            Assert.Equal(expected, norm.item<float>(), 5);
            Assert.True(expected > 0.05, "the gradients were large enough to be clipped");

            // The clip is applied inside the step, chunk by chunk: the same update as clip_grad_norm_ then AdamW. The
            // first moment is linear in the clipped gradient (Adam's update itself hardly sees a gradient's scale).
            reference.step();
            fused.Step();
            Assert.True(MaxDifference(a, b) <= 1e-7, $"step {step}: max |Δw| = {MaxDifference(a, b)}");
            using var scope = NewDisposeScope();
            var referenceMoment = cat(reference.state_dict().State.Select(st => ((AdamW.State)st).exp_avg.reshape(-1)).ToArray());
            Assert.True((referenceMoment - fused.FirstMoment).abs().max().item<float>() <= 1e-9, $"step {step}: the first moments differ");
            Assert.Equal(0f, fused.Gradients.abs().max().item<float>());   // and the gradients are zero for the next step
        }

        // A clip that no step used (an fp16 step skipped) is dropped: the next step updates with its own gradients.
        fused.ZeroGrad();
        SetGradients(a, b, 7);
        using (fused.ClipGradientNorm(1e-6))
            fused.ZeroGrad();
        SetGradients(a, b, 8);
        reference.step();
        fused.Step();
        Assert.True(MaxDifference(a, b) <= 1e-7, $"after a dropped clip: max |Δw| = {MaxDifference(a, b)}");
        using var final = NewDisposeScope();
        var moment = cat(reference.state_dict().State.Select(st => ((AdamW.State)st).exp_avg.reshape(-1)).ToArray());
        Assert.True((moment - fused.FirstMoment).abs().max().item<float>() <= 1e-9, "after a dropped clip: the first moments differ");
    }

    [Fact]
    public void TorchSharpAdamWStateConvertsAndContinuesExactly()
    {
        using var a = TinyModel();
        using var b = TinyModel();
        using var reference = Reference(a, 1e-2, 0.1);
        for (int step = 0; step < 3; step++)
        {
            foreach (var p in a.parameters())
                p.grad?.zero_();
            SetGradientsSingle(a, step);
            reference.step();
        }

        // b takes a's weights and a's optimizer state as checkpoint formats 1 and 2 wrote it (save_state_dict).
        using (var noGrad = no_grad())
        {
            foreach (var (pa, pb) in a.parameters().Zip(b.parameters()))
                pb.copy_(pa);
        }

        var stream = new MemoryStream();
        reference.save_state_dict(new BinaryWriter(stream));
        stream.Position = 0;
        using var fused = new FusedAdamW(b.DecayParameters.ToList(), b.NoDecayParameters.ToList(), 1e-2, 0.9, 0.95, 1e-8, 0.1);
        fused.LoadTorchSharpState(new BinaryReader(stream));
        Assert.Equal(3, fused.StepCount);
        Assert.Equal(stream.Length, stream.Position);

        for (int step = 3; step < 6; step++)
        {
            fused.ZeroGrad();
            SetGradients(a, b, step);
            reference.step();
            fused.Step();
        }

        Assert.True(MaxDifference(a, b) <= 1e-6, $"max |Δ| = {MaxDifference(a, b)}");

        // And the fused state round-trips through its own format.
        var own = new MemoryStream();
        fused.Save(new BinaryWriter(own));
        own.Position = 0;
        using var c = TinyModel();
        using var again = new FusedAdamW(c.DecayParameters.ToList(), c.NoDecayParameters.ToList(), 1e-2, 0.9, 0.95, 1e-8, 0.1);
        again.Load(new BinaryReader(own));
        Assert.Equal(6, again.StepCount);
    }

    private static void SetGradientsSingle(GptModel a, int step)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)(1000 + step));
        foreach (var p in a.parameters())
        {
            var g = randn(p.shape, generator: generator) * 0.01;
            if (p.grad is null)
                p.grad = g.clone();
            else
                p.grad.copy_(g);
        }
    }

    [Theory]
    [InlineData(TrainingPrecision.Fp32)]
    [InlineData(TrainingPrecision.Bf16Mixed)]
    public void ActivationCheckpointingGivesTheSameGradientsAndReplaysDropout(TrainingPrecision precision)
    {
        (Dictionary<string, Tensor> Grads, float Loss, Tensor Rng) Run(bool checkpointing)
        {
            using var model = TinyModel(dropout: 0.2);
            model.train();
            model.ActivationCheckpointing = checkpointing;
            torch.manual_seed(5);
            using var scope = NewDisposeScope();
            var x = randint(0, 40, [3, 16]);
            var y = randint(0, 40, [3, 16]);
            Tensor loss;
            using (Autocast.Enable(precision))   // backward runs outside the scope, as in the trainer: the recomputation must still be in bf16
            {
                var logits = model.forward(x);
                loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), y.view(-1));
            }

            loss.backward();
            var grads = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone().MoveToOuterDisposeScope());
            return (grads, loss.item<float>(), torch.random.get_rng_state().MoveToOuterDisposeScope());
        }

        var plain = Run(false);
        var checkpointed = Run(true);
        Assert.Equal(plain.Loss, checkpointed.Loss);
        Assert.Equal(plain.Grads.Keys, checkpointed.Grads.Keys);
        foreach (var (name, g) in plain.Grads)
        {
            float difference = (g - checkpointed.Grads[name]).abs().max().item<float>();
            Assert.True(difference <= 1e-5, $"{name}: max |Δgrad| = {difference}");
            Assert.True(g.abs().sum().item<float>() > 0, $"{name} has a gradient");
        }

        // The generator ends where it would have without recomputation (the replay restores it).
        Assert.True(plain.Rng.eq(checkpointed.Rng).all().item<bool>());
    }

    [Theory]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Fp32)]
    [InlineData(GptStyle.Modern, TrainingPrecision.Fp32)]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Bf16Mixed)]
    [InlineData(GptStyle.Modern, TrainingPrecision.Bf16Mixed)]
    public void PreallocatedGradientsGiveTheUnfusedLossAndGradients(GptStyle style, TrainingPrecision precision)
    {
        // GPT-2 style: tied output layer (wte gets the sparse lookup's rows and the fused loss's dW in one buffer);
        // Modern style untied: wte only the rows, lm_head only dW. Some targets are -1, and the loss is scaled before
        // backward (as the trainer's 1/micro-steps), so the saved gradient must take the upstream factor.
        (Dictionary<string, Tensor> Grads, float Loss) Run(bool preallocated)
        {
            torch.manual_seed(11);
            using var model = new GptModel(GptConfig.Tiny(vocabularySize: 40, contextLength: 16) with { Style = style, TiedEmbeddings = style == GptStyle.Gpt2 });
            model.train();
            foreach (var p in model.parameters())
                p.grad = zeros_like(p);                     // dense preallocated gradients, as FusedAdamW's views
            var names = model.named_parameters().Select(p => p.name).Concat(model.named_modules().Select(m => m.name)).ToList();
            model.PreallocatedGradients = preallocated;
            using var scope = NewDisposeScope();
            var generator = new Generator(5);
            var x = randint(0, 40, [3, 16], generator: generator);
            var y = randint(0, 40, [3, 16], generator: generator);
            y[0, ..5] = tensor(-1L);                        // not targets
            Tensor loss;
            using (Autocast.Enable(precision))
                loss = model.TrainingLoss(x, null, y);
            (loss / 7).backward();
            Assert.Equal(preallocated, model.PreallocatedGradients);
            Assert.Equal(names, model.named_parameters().Select(p => p.name).Concat(model.named_modules().Select(m => m.name)));   // the lookup twin is neither a parameter nor a submodule
            var grads = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.detach().clone().MoveToOuterDisposeScope());
            Assert.All(model.parameters(), p => Assert.False(p.grad!.is_sparse));
            return (grads, loss.item<float>());
        }

        var unfused = Run(false);
        var fused = Run(true);
        Assert.Equal(unfused.Loss, fused.Loss, 1e-4f);
        Assert.Equal(unfused.Grads.Keys, fused.Grads.Keys);
        float scale = unfused.Grads.Values.Max(g => g.abs().max().item<float>());
        float tolerance = precision == TrainingPrecision.Fp32 ? 1e-6f : 2e-3f * scale;
        foreach (var (name, g) in unfused.Grads)
        {
            float difference = (g - fused.Grads[name]).abs().max().item<float>();
            Assert.True(difference <= tolerance, $"{name}: max |Δgrad| = {difference} (tolerance {tolerance})");
            Assert.True(g.abs().sum().item<float>() > 0, $"{name} has a gradient");
        }
    }

    [Fact]
    public void TrainerWithCheckpointingAndSparseLogsKeepsEveryStepsExactLoss()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var data = TestData.Blocks(ml, tok, Block, repeats: 3);
        CausalLmTrainerOptions Options(int logInterval, bool checkpointing)
        {
            var o = TestData.TinyOptions(16, maxSteps: 12);
            o.Tokenizer = tok;
            o.Model = GptConfig.Tiny(contextLength: 16) with { Dropout = 0.1 };
            o.GradientAccumulationSteps = 2;
            o.LogInterval = logInterval;
            o.EvaluationInterval = 1000;
            o.ActivationCheckpointing = checkpointing;
            o.PeakFlops = 1e11;
            return o;
        }

        var reports = new List<TrainingProgress>();
        var everyStep = ml.Llm().Trainers.CausalLm(Options(1, false)).Fit(data).History;
        var sparse = Options(5, false);
        sparse.Progress = new CausalLmTrainerTests.SyncProgress(reports.Add);
        var sparseHistory = ml.Llm().Trainers.CausalLm(sparse).Fit(data).History;
        var checkpointed = ml.Llm().Trainers.CausalLm(Options(5, true)).Fit(data).History;

        // Read back every 5 steps, the history still has each step's own loss and gradient norm, bit for bit.
        Assert.Equal(everyStep.Select(h => h.Loss), sparseHistory.Select(h => h.Loss));
        Assert.Equal(everyStep.Select(h => h.GradientNorm), sparseHistory.Select(h => h.GradientNorm));
        Assert.All(sparseHistory, h => Assert.True(double.IsFinite(h.Loss) && double.IsFinite(h.GradientNorm)));
        Assert.Equal([5L, 10, 12], reports.Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(sparseHistory[(int)r.Step - 1].Loss, r.Loss));

        // MFU against the given peak: flops/token × tokens/s ÷ 1e11.
        var config = GptConfig.Tiny(vocabularySize: tok.VocabularySize, contextLength: 16);
        using (var model = new GptModel(config))
        {
            Assert.All(reports, r => Assert.Equal(model.FlopsPerToken * r.TokensPerSecond / 1e11, r.Mfu, 12));
        }

        Assert.All(reports, r => Assert.True(r.PeakMemoryBytes > 0));

        // Checkpointing recomputes the same function: the losses agree to float rounding.
        Assert.All(everyStep.Zip(checkpointed), p => Assert.Equal(p.First.Loss, p.Second.Loss, 5));
    }

    [Fact]
    public void NativeTensorsStayFlatWithActivationCheckpointingAndSparseLogs()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 40);
        options.Tokenizer = tok;
        options.Model = GptConfig.Tiny(contextLength: 16) with { Dropout = 0.1 };
        options.ActivationCheckpointing = true;
        options.LogInterval = 4;
        options.EvaluationInterval = 1000;
        var live = new Dictionary<long, long>();
        options.Progress = new CausalLmTrainerTests.SyncProgress(p => live[p.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));

        // The recomputation's tensors, the generator snapshots and the pending losses are all released: after the
        // first steps the number of live native tensors is the same at every report.
        Assert.All(new long[] { 12, 20, 28, 36 }, s => Assert.Equal(live[8], live[s]));
    }

    [Fact]
    public void MeasuredPeakIsCachedAndPositive()
    {
        var cpu = new Device(DeviceType.CPU);
        double first = MatmulPeak.FlopsPerSecond(cpu, ScalarType.Float32);
        Assert.True(first > 1e9, $"a 2048³ fp32 matmul runs at more than 1 GFLOP/s (measured {first:E2})");
        Assert.Equal(first, MatmulPeak.FlopsPerSecond(cpu, ScalarType.Float32));
    }

    [Fact]
    public void PeakFlopsMustBePositive()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 2);
        options.Tokenizer = tok;
        options.PeakFlops = 0;
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block)));
        Assert.StartsWith("Option 'PeakFlops' must be a positive finite number; got 0.", ex.Message);
    }
}

/// <summary>Every path that feeds a model builds its inputs on the model's device (ModelInputs), never a fixed one.</summary>
[Collection("Torch")]
public class DeviceConsistencyTests
{
    [Fact]
    public void ScoringGenerationAndEvaluationFollowTheModelToTheMetaDevice()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 2);
        options.Tokenizer = tok;
        var data = TestData.Blocks(ml, tok, 17);
        using var lm = ml.Llm().Trainers.CausalLm(options).Fit(data);

        // The model checks that its inputs sit on its device before the first kernel. On the meta device tensors have
        // shapes but no data, and the embedding has no meta kernel: an input built on the model's device (meta) passes
        // the check and fails in the embedding; an input built on a fixed device (the CPU) fails the check instead.
        lm.Model.to(new Device(DeviceType.META));
        Assert.Equal(DeviceType.META, lm.Device.type);
        var control = Assert.Throws<ArgumentException>(() => lm.Model.forward(torch.tensor(new long[] { 1, 2 }, new long[] { 1, 2 })));
        Assert.StartsWith("The token ids are on device CPU:-1, but the model's weights are on META:-1; build inputs on GptModel.Device.", control.Message);
        var errors = new List<string>
        {
            Assert.ThrowsAny<Exception>(() => lm.ScoreTokens([1, 2, 3, 4])).Message,
            Assert.ThrowsAny<Exception>(() => ml.Llm().CreateGenerator(lm).Generate("to be", new GenerationOptions { MaxNewTokens = 2, DoSample = false })).Message,
            Assert.ThrowsAny<Exception>(() => ml.Llm().Evaluate(lm, data)).Message,
        };
        Assert.All(errors, e => Assert.StartsWith("aten::index_select: attempted to run this operator with Meta tensors", e));
    }

    [Fact]
    public void PeakMemoryIsTheProcesssPeakResidentSet()
    {
        // getrusage's ru_maxrss on Linux, Process.PeakWorkingSet64 (VmHWM) elsewhere: the same quantity, read two ways.
        long ours = PeakMemory.Bytes();
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        long proc = process.PeakWorkingSet64;
        Assert.True(ours > 50L << 20, $"peak {ours} bytes: the test host with libtorch loaded is above 50 MB");
        Assert.True(Math.Abs(ours - proc) <= 16L << 20, $"getrusage says {ours}, /proc/self/status says {proc}");
        Assert.True(PeakMemory.Bytes() >= ours, "a peak never goes down");
    }
}
