using System.Runtime.InteropServices;
using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Mixed precision (issue 10): autocast semantics, bf16/fp16 training, the fp16 loss scale, resume, persistence
/// and bad input.</summary>
[Collection("Torch")]
public class MixedPrecisionTests
{
    private const int Block = 17;   // context 16 + 1

    [Fact]
    public void AutocastRunsMatmulsInBf16AndKeepsNormsLogitsAndGradientsInFp32()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(1);
        using var model = new GptModel(GptConfig.Tiny(64, contextLength: 16));
        var idx = randint(0, 64, [2, 16], dtype: ScalarType.Int64);
        var x = randn(2, 16, 32);
        var w = randn(48, 32);
        var b = randn(48);

        Tensor fp32Logits = model.forward(idx), bf16Logits, linear, normed;
        using (Autocast.Enable(TrainingPrecision.Bf16Mixed))
        {
            linear = Autocast.Linear(x, w, b);
            normed = new GptNorm("ln", 48, GptConfig.Tiny(64)).call(linear);
            bf16Logits = model.forward(idx);
            nn.functional.cross_entropy(bf16Logits.view(-1, 64), idx.view(-1)).backward();
        }

        // The linear layer runs in bf16 and equals the bf16 product of the bf16-rounded operands (the reference).
        Assert.Equal(ScalarType.BFloat16, linear.dtype);
        var reference = x.to(ScalarType.BFloat16).matmul(w.to(ScalarType.BFloat16).t()) + b.to(ScalarType.BFloat16);
        Assert.True(linear.to(ScalarType.Float32).allclose(reference.to(ScalarType.Float32), rtol: 1e-2, atol: 1e-1));
        // Norms and the logits come back in fp32; weights and their gradients stay fp32 (master weights).
        Assert.Equal(ScalarType.Float32, normed.dtype);
        Assert.Equal(ScalarType.Float32, bf16Logits.dtype);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float32, p.grad!.dtype));
        // bf16 changes the numbers a little (8 mantissa bits), not the function.
        double diff = (bf16Logits - fp32Logits).abs().max().item<float>();
        Assert.InRange(diff, 1e-6, 0.05);
        // Outside the scope autocast is off again.
        Assert.Null(Autocast.ComputeType);
        Assert.Equal(ScalarType.Float32, Autocast.Linear(x, w, b).dtype);
    }

    [Fact]
    public void Bf16TrainingAttentionAtShortContextsMatchesTheFusedKernelInValueAndGradient()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(3);
        var q0 = randn(2, 3, 24, 8);   // (B, nh, T, hs)
        var k0 = randn(2, 3, 24, 8);
        var v0 = randn(2, 3, 24, 8);
        var dy = randn(2, 3, 24, 8);

        (Tensor Y, Tensor Dq, Tensor Dk, Tensor Dv) Run(Func<Tensor, Tensor, Tensor, Tensor> attention)
        {
            var q = q0.clone().requires_grad_();
            var k = k0.clone().requires_grad_();
            var v = v0.clone().requires_grad_();
            var y = attention(q, k, v);
            (y.to(ScalarType.Float32) * dy).sum().backward();
            return (y.detach().to(ScalarType.Float32), q.grad!, k.grad!, v.grad!);
        }

        Tensor explicitPath(Tensor q, Tensor k, Tensor v)
        {
            using var _ = Autocast.Enable(TrainingPrecision.Bf16Mixed);
            return Autocast.Attention(q, k, v, mask: null, dropout: 0, isCausal: true);
        }
        // The references: the fused kernel on the same bf16 operands, and the exact fp32 attention.
        Tensor fusedBf16(Tensor q, Tensor k, Tensor v) => nn.functional.scaled_dot_product_attention(
            q.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), v.to(ScalarType.BFloat16), is_casual: true);
        Tensor fp32(Tensor q, Tensor k, Tensor v) => nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);

        var got = Run(explicitPath);
        var fused = Run(fusedBf16);
        var exact = Run(fp32);
        Assert.Equal(ScalarType.BFloat16, explicitPath(q0, k0, v0).dtype);
        Assert.Equal(ScalarType.Float32, got.Dq.dtype);   // gradients reach the fp32 inputs in fp32
        foreach (var (a, b, c) in new[] { (got.Y, fused.Y, exact.Y), (got.Dq, fused.Dq, exact.Dq), (got.Dk, fused.Dk, exact.Dk), (got.Dv, fused.Dv, exact.Dv) })
        {
            // Within bf16 rounding of both references (8 mantissa bits: ~0.4% relative per rounding).
            double scale = c.abs().max().item<float>();
            Assert.InRange((a - c).abs().max().item<float>() / scale, 0, 0.03);
            Assert.InRange((a - b).abs().max().item<float>() / scale, 0, 0.03);
        }
        // The first query attends to the first key only: its output is v's first row, as causal masking requires.
        Assert.True(got.Y[.., .., 0].allclose(v0.to(ScalarType.BFloat16).to(ScalarType.Float32)[.., .., 0], rtol: 1e-2, atol: 1e-2));

        // The explicit form serves bf16 on the CPU at contexts up to 256 only; everything else keeps the kernel.
        Tensor Bf16(long t) => zeros(1, 1, t, 8, dtype: ScalarType.BFloat16);
        Assert.True(Autocast.UseExplicitAttention(Bf16(Autocast.ExplicitAttentionMaxContext), Bf16(Autocast.ExplicitAttentionMaxContext)));
        Assert.False(Autocast.UseExplicitAttention(Bf16(Autocast.ExplicitAttentionMaxContext + 1), Bf16(Autocast.ExplicitAttentionMaxContext + 1)));
        Assert.False(Autocast.UseExplicitAttention(Bf16(1), Bf16(24)));   // a decode step against a cache
        Assert.False(Autocast.UseExplicitAttention(zeros(1, 1, 24, 8), zeros(1, 1, 24, 8)));
        Assert.False(Autocast.UseExplicitAttention(Bf16(24).half(), Bf16(24).half()));
        using (no_grad())   // evaluation and checkpointing's first forward take the training path too
            Assert.True(Autocast.UseExplicitAttention(Bf16(24), Bf16(24)));

        // Dropout on the attention weights: training output differs from the dropout-free one, and stays finite.
        using (Autocast.Enable(TrainingPrecision.Bf16Mixed))
        {
            var dropped = Autocast.Attention(q0, k0, v0, mask: null, dropout: 0.5, isCausal: true).to(ScalarType.Float32);
            Assert.True(dropped.isfinite().all().item<bool>());
            Assert.False(dropped.allclose(got.Y, rtol: 1e-2, atol: 1e-2));
        }
    }

    [Theory]
    [InlineData(TrainingPrecision.Bf16Mixed)]
    [InlineData(TrainingPrecision.Fp16Mixed)]
    public void MixedPrecisionTrainsCloseToFp32WithFp32MasterWeights(TrainingPrecision precision)
    {
        var tok = TestData.CharTokenizer();
        var live = new Dictionary<long, long>();
        CausalLmTransformer Train(TrainingPrecision p)
        {
            var ml = new MLContext(seed: 1);
            var options = TestData.TinyOptions(16, maxSteps: 30);
            options.Tokenizer = tok;
            options.Precision = p;
            options.Progress = new CausalLmTrainerTests.SyncProgress(r => live[r.Step] = DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            return ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));
        }

        using var full = Train(TrainingPrecision.Fp32);
        using var mixed = Train(precision);
        // Casts, the scaled loss and the unscaling all happen inside the step's dispose scope: live tensors stay flat.
        Assert.All(new long[] { 5, 10, 20, 30 }, step => Assert.Equal(live[2], live[step]));
        var a = full.History.Select(h => h.Loss).ToArray();
        var b = mixed.History.Select(h => h.Loss).ToArray();
        Assert.NotEqual(a, b);                                                   // the low precision really ran
        Assert.True(a.Zip(b).Max(t => Math.Abs(t.First - t.Second)) < 0.05, $"fp32 {string.Join(' ', a)}\n{precision} {string.Join(' ', b)}");
        Assert.True(b[^1] < b[0] - 0.5, $"loss went from {b[0]} to {b[^1]}");
        Assert.Equal(precision, mixed.Model.Precision);
        Assert.All(mixed.Model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
        Assert.Equal(a, Train(TrainingPrecision.Fp32).History.Select(h => h.Loss).ToArray());      // fp32 unchanged, deterministic
        Assert.Equal(b, Train(precision).History.Select(h => h.Loss).ToArray());                 // same seed, same losses
    }

    [Theory]
    [InlineData(TrainingPrecision.Bf16Mixed, null, 1)]    // the default keeps the heap in the low precisions
    [InlineData(TrainingPrecision.Fp32, null, 0)]         // and not in fp32
    [InlineData(TrainingPrecision.Fp32, true, 1)]
    [InlineData(TrainingPrecision.Bf16Mixed, false, 0)]
    public void RetainNativeMemoryKeepsTheHeapWhileTrainingRunsAndChangesNoNumber(TrainingPrecision precision, bool? retain, int holdersWhileTraining)
    {
        var tok = TestData.CharTokenizer();
        var ml = new MLContext(seed: 1);
        var data = TestData.Blocks(ml, tok, Block, repeats: 2);
        int? seen = null;
        double[] Train(bool? keep)
        {
            var o = TestData.TinyOptions(16, maxSteps: 4);
            o.Tokenizer = tok;
            o.Precision = precision;
            o.RetainNativeMemory = keep;
            o.Progress = new CausalLmTrainerTests.SyncProgress(_ => seen ??= NativeHeap.Holders);
            return ml.Llm().Trainers.CausalLm(o).Fit(data).History.Select(h => h.Loss).ToArray();
        }

        Assert.Equal(0, NativeHeap.Holders);
        var losses = Train(retain);
        Assert.Equal(NativeHeap.IsSupported ? holdersWhileTraining : 0, seen);
        Assert.Equal(0, NativeHeap.Holders);                                     // restored when the run ends
        seen = null;
        Assert.Equal(losses, Train(!(retain ?? holdersWhileTraining == 1)));   // the other setting: same losses
        Assert.Equal(0, NativeHeap.Holders);
    }

    [Fact]
    public void NativeHeapRetentionIsSharedByOverlappingRunsAndRestoredByTheLast()
    {
        if (RuntimeInformation.OSDescription.Contains("Debian", StringComparison.OrdinalIgnoreCase))
            Assert.True(NativeHeap.IsSupported);                                 // glibc: the machines this project is built and tested on
        var first = NativeHeap.Retain();
        var second = NativeHeap.Retain();
        int expected = NativeHeap.IsSupported ? 2 : 0;
        Assert.Equal(expected, NativeHeap.Holders);
        first?.Dispose();
        first?.Dispose();                                                        // a second Dispose releases nothing more
        Assert.Equal(expected / 2, NativeHeap.Holders);
        second?.Dispose();
        Assert.Equal(0, NativeHeap.Holders);
        using (var big = torch.ones(40L << 20, dtype: ScalarType.Float32))     // a 160 MB block still allocates and frees after the restore
            Assert.Equal(40L << 20, big.sum().item<float>());
    }

    [Theory]
    [InlineData(TrainingPrecision.Bf16Mixed)]
    [InlineData(TrainingPrecision.Fp16Mixed)]
    public void ResumedMixedPrecisionRunReproducesTheUninterruptedLosses(TrainingPrecision precision)
    {
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-amp-resume-" + Guid.NewGuid().ToString("N"));
        try
        {
            CausalLmTrainerOptions Options(string? checkpoints)
            {
                var o = TestData.TinyOptions(16, maxSteps: 12);
                o.Tokenizer = tok;
                o.Model = GptConfig.Tiny(contextLength: 16) with { Dropout = 0.1 };
                o.GradientAccumulationSteps = 2;
                o.Precision = precision;
                o.CheckpointDirectory = checkpoints;
                o.CheckpointInterval = 4;
                // fp16: start high so the scale backs off during the run; its state must survive the checkpoint.
                o.InitialLossScale = Math.Pow(2, 30);
                return o;
            }

            var ml = new MLContext(seed: 1);
            var data = TestData.Blocks(ml, tok, Block, repeats: 3);
            var full = ml.Llm().Trainers.CausalLm(Options(null)).Fit(data).History.Select(h => h.Loss).ToArray();

            using var cts = new CancellationTokenSource();
            var interrupted = Options(dir);
            interrupted.CancellationToken = cts.Token;
            interrupted.Progress = new CausalLmTrainerTests.SyncProgress(p => { if (p.Step == 6) cts.Cancel(); });
            Assert.Throws<OperationCanceledException>(() => ml.Llm().Trainers.CausalLm(interrupted).Fit(data));
            var (saved, scaler) = Checkpoint.ReadPrecision(Checkpoint.Resolve(dir));
            Assert.Equal(precision, saved);
            if (precision == TrainingPrecision.Fp16Mixed)
                Assert.True(scaler.Scale < Math.Pow(2, 30), $"scale {scaler.Scale}: expected overflow back-offs from 2^30");

            var resumed = Options(dir);
            resumed.ResumeFrom = dir;
            var history = ml.Llm().Trainers.CausalLm(resumed).Fit(data).History;
            Assert.Equal(full, history.Select(h => h.Loss).ToArray());
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Fp16OverflowSkipsTheStepAndHalvesTheLossScale()
    {
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-amp-overflow-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var options = TestData.TinyOptions(16, maxSteps: 1);
            options.Tokenizer = tok;
            options.Precision = TrainingPrecision.Fp16Mixed;
            // loss × 2^40 makes the fp16 gradients of the output layer overflow (fp16 ends at 65504): the step must be
            // skipped and the scale halved, as torch.amp.GradScaler does.
            options.InitialLossScale = Math.Pow(2, 40);
            options.CheckpointDirectory = dir;
            options.CheckpointInterval = 1;
            using var lm = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));

            var (_, scaler) = Checkpoint.ReadPrecision(Checkpoint.Resolve(dir));
            Assert.Equal(Math.Pow(2, 39), scaler.Scale);
            Assert.Equal(0, scaler.GoodSteps);
            Assert.True(double.IsFinite(lm.History[0].Loss));

            // Skipped: the weights are exactly the initial ones (an AdamW step would have moved every one of them).
            torch.manual_seed(7);
            using var initial = new GptModel(lm.Config);
            var before = initial.state_dict();
            foreach (var (name, weight) in lm.Model.state_dict())
                Assert.True(weight.eq(before[name]).all().item<bool>(), $"{name} changed: the overflowed step was not skipped");

            // The default scale (2^16) trains this model without overflow: steps count towards the growth interval.
            options.InitialLossScale = CausalLmTrainerOptions.Defaults.InitialLossScale;
            options.MaxSteps = 3;
            options.CheckpointDirectory = dir + "-2";
            using var normal = ml.Llm().Trainers.CausalLm(options).Fit(TestData.Blocks(ml, tok, Block));
            (_, scaler) = Checkpoint.ReadPrecision(Checkpoint.Resolve(dir + "-2"));
            Assert.Equal(65536.0, scaler.Scale);
            Assert.Equal(3, scaler.GoodSteps);
        }
        finally
        {
            foreach (var d in new[] { dir, dir + "-2" })
            {
                if (Directory.Exists(d))
                    Directory.Delete(d, recursive: true);
            }
        }
    }

    [Fact]
    public void GradScalerUnscalesBacksOffAndGrows()
    {
        using var scope = NewDisposeScope();
        var p = nn.Parameter(zeros(3));
        p.grad = tensor(new float[] { 65536f * 0.5f, -65536f * 0.25f, 65536f * 3f });
        var scaler = new GradScaler();
        Assert.True(scaler.UnscaleAndUpdate([p]));
        Assert.Equal(new float[] { 0.5f, -0.25f, 3f }, p.grad!.data<float>().ToArray());   // exact: the scale is a power of two
        Assert.Equal((65536.0, 1), (scaler.Scale, scaler.GoodSteps));

        p.grad = tensor(new float[] { 1f, float.PositiveInfinity, 0f });
        Assert.False(scaler.UnscaleAndUpdate([p]));
        Assert.Equal((32768.0, 0), (scaler.Scale, scaler.GoodSteps));
        p.grad = tensor(new float[] { float.NaN, 0f, 0f });
        Assert.False(scaler.UnscaleAndUpdate([p]));
        Assert.Equal(16384.0, scaler.Scale);

        for (int i = 0; i < GradScaler.GrowthInterval - 1; i++)
            scaler.Update(finite: true);
        Assert.Equal((16384.0, 1999), (scaler.Scale, scaler.GoodSteps));
        scaler.Update(finite: true);
        Assert.Equal((32768.0, 0), (scaler.Scale, scaler.GoodSteps));
    }

    [Fact]
    public void Bf16ModelScoresEvaluatesGeneratesAndRoundTripsInItsPrecision()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var options = TestData.TinyOptions(16, maxSteps: 20);
        options.Tokenizer = tok;
        options.Precision = TrainingPrecision.Bf16Mixed;
        var data = TestData.Blocks(ml, tok, Block);
        using var lm = ml.Llm().Trainers.CausalLm(options).Fit(data);
        var ids = tok.Encode(TestData.Corpus)[..40];
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 12 };

        float bf16Score = lm.ScoreTokens(ids);
        double bf16Loss = ml.Llm().Evaluate(lm, data).Loss;
        var bf16Text = ml.Llm().CreateGenerator(lm).GenerateTokens(ids[..5], greedy);
        lm.Model.Precision = TrainingPrecision.Fp32;
        float fp32Score = lm.ScoreTokens(ids);
        double fp32Loss = ml.Llm().Evaluate(lm, data).Loss;
        lm.Model.Precision = TrainingPrecision.Bf16Mixed;

        // Scoring and evaluation run in bf16: close to fp32, not equal.
        Assert.NotEqual(fp32Score, bf16Score);
        Assert.InRange(Math.Abs(fp32Score - bf16Score), 0, 0.05);
        Assert.NotEqual(fp32Loss, bf16Loss);
        Assert.InRange(Math.Abs(fp32Loss - bf16Loss), 0, 0.05);
        Assert.Equal(12, bf16Text.Length);

        // The zip keeps fp32 weights and records the precision: the reloaded model scores exactly as before.
        string zip = Path.Combine(Path.GetTempPath(), "llm-amp-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            ml.Model.Save(lm, data.Schema, zip);
            var loaded = (CausalLmTransformer)new MLContext(seed: 1).Model.Load(zip, out _);
            Assert.Equal(TrainingPrecision.Bf16Mixed, loaded.Model.Precision);
            Assert.All(loaded.Model.parameters(), p => Assert.Equal(ScalarType.Float32, p.dtype));
            Assert.Equal(bf16Score, loaded.ScoreTokens(ids));
            Assert.Equal(bf16Text, ml.Llm().CreateGenerator(loaded).GenerateTokens(ids[..5], greedy));
            loaded.Dispose();
        }
        finally
        {
            File.Delete(zip);
        }

        // Zips written before the precision was recorded load as fp32 models.
        var old = ml.Model.Load(Path.Combine(Compatibility.FormatV1Fixture.OutputFolder("format-v2"), Compatibility.FormatV1Fixture.ZipName), out _);
        Assert.Equal(TrainingPrecision.Fp32, ((IEnumerable<ITransformer>)old).OfType<CausalLmTransformer>().Single().Model.Precision);
    }

    [Fact]
    public void TheDefaultPrecisionIsChosenPerDeviceAndAResumedRunKeepsItsCheckpoints()
    {
        // The rules: the fastest precision that reaches fp32's quality on the device.
        Assert.Null(new CausalLmTrainerOptions().Precision);
        Assert.Equal((TrainingPrecision.Bf16Mixed, "CPU with AVX-512 BF16"), PrecisionSupport.PreferredOnCpu(new HashSet<string> { "avx2", "avx512f", "avx512_bf16" }));
        Assert.Equal((TrainingPrecision.Bf16Mixed, "CPU with AMX-BF16"), PrecisionSupport.PreferredOnCpu(new HashSet<string> { "amx_bf16", "avx512_bf16" }));
        Assert.Equal((TrainingPrecision.Fp32, "CPU without AVX-512 BF16 or AMX-BF16"), PrecisionSupport.PreferredOnCpu(new HashSet<string> { "avx2", "avx512f" }));
        Assert.Equal((TrainingPrecision.Fp32, "CPU features unknown"), PrecisionSupport.PreferredOnCpu(null));
        Assert.Equal(TrainingPrecision.Bf16Mixed, PrecisionSupport.PreferredOnCuda(8).Precision);
        Assert.Equal(TrainingPrecision.Bf16Mixed, PrecisionSupport.PreferredOnCuda(9).Precision);
        Assert.Equal((TrainingPrecision.Fp16Mixed, "CUDA GPU of compute capability 7.x: fp16 tensor cores, no bf16"), PrecisionSupport.PreferredOnCuda(7));
        Assert.Equal(TrainingPrecision.Fp32, PrecisionSupport.PreferredOnCuda(6).Precision);
        Assert.Equal(TrainingPrecision.Fp32, PrecisionSupport.PreferredOnCuda(null).Precision);
        if (!torch.cuda.is_available())
            Assert.Null(CudaCapability.Major(0));   // no driver here: unknown, never a guess

        // A run with the default trains in this CPU's choice, and the log says why; the returned model generates and
        // scores in fp32, the CPU's faster inference precision (autocast would recast every weight per token).
        var (expected, reason) = PrecisionSupport.PreferredOnCpu(PrecisionSupport.CpuFlags());
        var ml = new MLContext(seed: 1);
        var log = new List<string>();
        ml.Log += (_, e) => log.Add(e.Message);
        var tok = TestData.CharTokenizer();
        var data = TestData.Blocks(ml, tok, Block);
        var options = TestData.TinyOptions(16, maxSteps: 2);
        options.Tokenizer = tok;
        options.Precision = null;
        string dir = Path.Combine(Path.GetTempPath(), "llm-amp-default-" + Guid.NewGuid().ToString("N"));
        try
        {
            using (var lm = ml.Llm().Trainers.CausalLm(options).Fit(data))
                Assert.Equal(TrainingPrecision.Fp32, lm.Model.Precision);
            Assert.Contains(log, m => m.Contains($"Precision: {expected}, chosen for this device ({reason}); set CausalLmTrainerOptions.Precision to choose another.", StringComparison.Ordinal));
            Assert.Contains(log, m => m.Contains($"precision {expected}, seed", StringComparison.Ordinal));
            Assert.Equal(expected != TrainingPrecision.Fp32, log.Any(m => m.Contains($"Validation and the trained model's scoring and generation run in Fp32 (training in {expected})", StringComparison.Ordinal)));

            // Resuming without a precision takes the checkpoint's, whatever this device would choose.
            options.Precision = TrainingPrecision.Fp16Mixed;   // not what any CPU chooses
            options.CheckpointDirectory = dir;
            ml.Llm().Trainers.CausalLm(options).Fit(data).Dispose();
            options.Precision = null;
            options.ResumeFrom = dir;
            options.MaxSteps = 3;
            log.Clear();
            using var resumed = ml.Llm().Trainers.CausalLm(options).Fit(data);
            Assert.Contains(log, m => m.Contains("precision Fp16Mixed, seed", StringComparison.Ordinal));
            Assert.Equal(TrainingPrecision.Fp32, resumed.Model.Precision);   // inference as any default run's on the CPU
            Assert.Equal(3, resumed.History.Count);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void BadPrecisionInputIsReportedWithTheOptionValueAndWhatIsAccepted()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var data = TestData.Blocks(ml, tok, Block);
        var options = TestData.TinyOptions(16, maxSteps: 2);
        options.Tokenizer = tok;

        options.Precision = (TrainingPrecision)7;
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(options));
        Assert.StartsWith("Option 'Precision' is 7; expected Fp32, Bf16Mixed or Fp16Mixed, or null to choose per device.", ex.Message);
        options.Precision = TrainingPrecision.Fp16Mixed;
        options.InitialLossScale = 0;
        ex = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(options));
        Assert.StartsWith("Option 'InitialLossScale' must be a positive finite number; got 0.", ex.Message);
        options.InitialLossScale = 65536;

        // A device without kernels for the dtype (libtorch raises): the probe is replaced by one that fails as libtorch does.
        void NoFp16(ScalarType t, Device d)
        {
            if (t == ScalarType.Float16)
                throw new ExternalException("\"addmm_impl_cpu_\" not implemented for 'Half'");
        }
        using var channel = ((Runtime.IHostEnvironment)ml).Start("test");
        var probeError = Assert.Throws<ArgumentException>(() => PrecisionSupport.Check(TrainingPrecision.Fp16Mixed, CPU, channel, NoFp16));
        Assert.Equal("Option 'Precision' is Fp16Mixed, but device cpu cannot compute in Float16: \"addmm_impl_cpu_\" not implemented for 'Half' " +
            "Accepted on this device: Fp32, Bf16Mixed. (Parameter 'Precision')", probeError.Message);

        // Resuming with another precision than the checkpoint's.
        string dir = Path.Combine(Path.GetTempPath(), "llm-amp-bad-" + Guid.NewGuid().ToString("N"));
        try
        {
            options.Precision = TrainingPrecision.Fp32;
            options.CheckpointDirectory = dir;
            ml.Llm().Trainers.CausalLm(options).Fit(data).Dispose();
            string file = Checkpoint.Resolve(dir);
            options.ResumeFrom = dir;
            options.MaxSteps = 3;
            options.Precision = TrainingPrecision.Bf16Mixed;
            var mismatch = Assert.Throws<ArgumentException>(() => ml.Llm().Trainers.CausalLm(options).Fit(data));
            Assert.Equal($"Option 'Precision' is Bf16Mixed, but checkpoint '{file}' was written by a run with Precision = Fp32. " +
                "Resume with Precision = Fp32 (the precision of a run cannot change mid-run), or start a new run without ResumeFrom. (Parameter 'Precision')", mismatch.Message);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }

        // An undefined precision on the model itself.
        using var model = new GptModel(GptConfig.Tiny(64));
        var modelError = Assert.Throws<ArgumentOutOfRangeException>(() => model.Precision = (TrainingPrecision)(-1));
        Assert.StartsWith("GptModel.Precision is -1; expected Fp32, Bf16Mixed or Fp16Mixed.", modelError.Message);
    }
}
