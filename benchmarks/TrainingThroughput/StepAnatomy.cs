using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Llm;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

/// <summary>
/// One GPT-2 124M training step (batch 4 × context 64, fp32) taken apart: phase times, optimizer variants, activation
/// checkpointing and thread counts, each configuration in a child process (peak RSS is per process).
/// </summary>
internal static class StepAnatomy
{
    private const int Batch = 4;
    private const int Context = 64;
    private const int Vocabulary = 50257;
    private const int Warmup = 2;

    public static void Parent(int steps, double peak32, TrainingPrecision? only = null)
    {
        var configurations = new (string Optimizer, int Threads, bool Checkpointing, bool Kernels, TrainingPrecision Precision)[]
        {
            ("torchsharp", 2, false, false, TrainingPrecision.Fp32),
            ("fused", 2, false, true, TrainingPrecision.Fp32),
            ("fused", 2, true, false, TrainingPrecision.Fp32),
            ("torchsharp", 1, false, false, TrainingPrecision.Fp32),
            ("fused", 1, false, false, TrainingPrecision.Fp32),
            ("fused", 2, false, true, TrainingPrecision.Bf16Mixed),
            ("fused", 1, false, false, TrainingPrecision.Bf16Mixed),
        };
        Console.WriteLine();
        Console.WriteLine($"GPT-2 124M step anatomy, batch {Batch} × {Context}, median of {steps} steps after {Warmup} warm-up steps; each row a fresh process");
        Console.WriteLine();
        Console.WriteLine("| optimizer | precision | threads | activation checkpointing | ms/step | tokens/s | data ms | forward ms | backward ms | optimizer ms (zero+clip+step) | peak RSS MB | MFU vs fp32 peak |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        var kernelLines = new List<string>();
        var rows = new Dictionary<(string, TrainingPrecision, int, bool), Dictionary<string, string>>();
        foreach (var c in configurations.Where(c => only is null || c.Precision == only))
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!, [typeof(StepAnatomy).Assembly.Location, "--child", c.Optimizer, c.Threads.ToString(CultureInfo.InvariantCulture), c.Checkpointing.ToString(), steps.ToString(CultureInfo.InvariantCulture), c.Kernels.ToString(), c.Precision.ToString()])
            {
                RedirectStandardOutput = true,
            };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) != "dotnet")
                psi = new ProcessStartInfo(Environment.ProcessPath!, ["--child", c.Optimizer, c.Threads.ToString(CultureInfo.InvariantCulture), c.Checkpointing.ToString(), steps.ToString(CultureInfo.InvariantCulture), c.Kernels.ToString(), c.Precision.ToString()]) { RedirectStandardOutput = true };
            using var child = Process.Start(psi)!;
            var lines = child.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            child.WaitForExit();
            var r = lines.Where(l => l.StartsWith("RESULT ", StringComparison.Ordinal)).Select(l => l[7..].Split(' ').Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => kv[1])).Single();
            kernelLines.AddRange(lines.Where(l => l.StartsWith('|') || l.StartsWith("KERNELS", StringComparison.Ordinal)));
            rows[(c.Optimizer, c.Precision, c.Threads, c.Checkpointing)] = r;
            double tokPerSec = double.Parse(r["tokens_per_s"], CultureInfo.InvariantCulture);
            double mfu = double.Parse(r["flops_per_token"], CultureInfo.InvariantCulture) * tokPerSec / (peak32 * 1e9);   // peak32 is in GFLOP/s
            Console.WriteLine($"| {c.Optimizer} | {c.Precision} | {c.Threads} | {(c.Checkpointing ? "on" : "off")} | {r["step_ms"]} | {r["tokens_per_s"]} | {r["data_ms"]} | {r["forward_ms"]} | {r["backward_ms"]} | {r["optimizer_ms"]} | {r["peak_rss_mb"]} | {100 * mfu:F1}% |");
        }

        double? Get(string optimizer, TrainingPrecision p, int threads, bool checkpointing, string key) =>
            rows.TryGetValue((optimizer, p, threads, checkpointing), out var r) ? double.Parse(r[key], CultureInfo.InvariantCulture) : null;
        const TrainingPrecision F = TrainingPrecision.Fp32, B = TrainingPrecision.Bf16Mixed;
        Console.WriteLine();
        if (Get("torchsharp", F, 2, false, "step_ms") is { } ts2 && Get("fused", F, 2, false, "step_ms") is { } fu2 && Get("torchsharp", F, 1, false, "step_ms") is { } ts1 && Get("fused", F, 1, false, "step_ms") is { } fu1)
        {
            Console.WriteLine($"Optimizer phase, TorchSharp AdamW ÷ FusedAdamW: {Get("torchsharp", F, 2, false, "optimizer_ms") / Get("fused", F, 2, false, "optimizer_ms"):F2}× at 2 threads, {Get("torchsharp", F, 1, false, "optimizer_ms") / Get("fused", F, 1, false, "optimizer_ms"):F2}× at 1 thread; whole step {ts2 / fu2:F2}× and {ts1 / fu1:F2}×.");
            Console.WriteLine($"Peak RSS: TorchSharp AdamW {Get("torchsharp", F, 2, false, "peak_rss_mb"):F0} MB, FusedAdamW {Get("fused", F, 2, false, "peak_rss_mb"):F0} MB, FusedAdamW + activation checkpointing {Get("fused", F, 2, true, "peak_rss_mb"):F0} MB (saved {Get("fused", F, 2, false, "peak_rss_mb") - Get("fused", F, 2, true, "peak_rss_mb"):F0} MB; step time ×{Get("fused", F, 2, true, "step_ms") / fu2:F2}).");
            Console.WriteLine($"Threads: FusedAdamW fp32 2 threads ÷ 1 thread tokens/s = {fu1 / fu2:F2}×.");
        }

        if (Get("fused", B, 2, false, "step_ms") is { } b2 && Get("fused", B, 1, false, "step_ms") is { } b1)
        {
            Console.WriteLine($"Bf16Mixed: 2 threads ÷ 1 thread tokens/s = {b1 / b2:F2}×" + (Get("fused", F, 2, false, "step_ms") is { } f2 ? $"; Bf16Mixed ÷ Fp32 tokens/s at 2 threads = {f2 / b2:F2}×" : "") + ".");
        }

        Console.WriteLine();
        foreach (var l in kernelLines)
            Console.WriteLine(l.StartsWith("KERNELS", StringComparison.Ordinal) ? l[8..] : l);
    }

    public static int Child(string[] args)
    {
        string optimizerKind = args[0];
        int threads = int.Parse(args[1], CultureInfo.InvariantCulture);
        bool checkpointing = bool.Parse(args[2]);
        int steps = int.Parse(args[3], CultureInfo.InvariantCulture);
        bool kernels = bool.Parse(args[4]);
        var precision = args.Length > 5 ? Enum.Parse<TrainingPrecision>(args[5]) : TrainingPrecision.Fp32;
        // As the trainer's RetainNativeMemory: null (the default) keeps the heap with Bf16Mixed and Fp16Mixed only.
        bool? retainHeap = args.Length > 6 && args[6] != "default" ? bool.Parse(args[6]) : null;
        torch.set_num_threads(threads);
        torch.manual_seed(1);
        var config = GptConfig.Gpt2Small(Vocabulary, Context);
        using var model = new GptModel(config);
        model.train();
        model.ActivationCheckpointing = checkpointing;
        var decay = model.DecayParameters.ToList();
        var noDecay = model.NoDecayParameters.ToList();
        var all = decay.Concat(noDecay).ToList();
        FusedAdamW? fused = null;
        AdamW? reference = null;
        if (optimizerKind == "fused")
        {
            fused = new FusedAdamW(decay, noDecay, 1e-4, 0.9, 0.95, 1e-8, 0.1);
            model.PreallocatedGradients = true;   // as TrainingRun does once the gradients are the optimizer's dense views
        }
        else
        {
            reference = torch.optim.AdamW(
                new[]
                {
                    new AdamW.ParamGroup(decay, new AdamW.Options { weight_decay = 0.1 }),
                    new AdamW.ParamGroup(noDecay, new AdamW.Options { weight_decay = 0.0 }),
                },
                lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8);
        }

        using var heap = retainHeap ?? precision != TrainingPrecision.Fp32 ? NativeHeap.Retain() : null;   // after the model and optimizer, as TrainingRun
        var rng = new Random(1);
        var cpu = new Device(DeviceType.CPU);
        var data = new List<(long[] X, long[] Y)>();
        for (int i = 0; i < Warmup + steps; i++)
        {
            data.Add((Enumerable.Range(0, Batch * Context).Select(_ => (long)rng.Next(Vocabulary)).ToArray(),
                      Enumerable.Range(0, Batch * Context).Select(_ => (long)rng.Next(Vocabulary)).ToArray()));
        }

        var phases = new List<double[]>();
        for (int i = 0; i < Warmup + steps; i++)
        {
            var t = new double[4];
            var sw = Stopwatch.StartNew();
            using var scope = NewDisposeScope();
            var x = ModelInputs.Int64(data[i].X, Batch, Context, cpu);
            var y = ModelInputs.Int64(data[i].Y, Batch, Context, cpu);
            t[0] = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            Tensor loss;
            using (Autocast.Enable(precision))
                loss = model.TrainingLoss(x, null, y) / (Batch * Context);   // as the trainer: fused with the flat optimizer

            t[1] = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            loss.backward();
            t[2] = sw.Elapsed.TotalMilliseconds;
            sw.Restart();
            if (fused is not null)
            {
                fused.ClipGradientNorm(1.0).Dispose();
                fused.Step();
                fused.ZeroGrad();
            }
            else
            {
                nn.utils.clip_grad_norm_(all, 1.0);
                reference!.step();
                reference.zero_grad();
            }

            t[3] = sw.Elapsed.TotalMilliseconds;
            if (i >= Warmup)
                phases.Add(t);
        }

        double Median(IEnumerable<double> v)
        {
            var a = v.Order().ToArray();
            return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
        }

        var stepMs = Median(phases.Select(p => p.Sum()));
        var inv = CultureInfo.InvariantCulture;
        long peak;
        using (var self = Process.GetCurrentProcess())
            peak = self.PeakWorkingSet64;
        Console.WriteLine(string.Create(inv,
            $"RESULT step_ms={stepMs:F0} tokens_per_s={Batch * Context * 1000 / stepMs:F1} data_ms={Median(phases.Select(p => p[0])):F1} forward_ms={Median(phases.Select(p => p[1])):F0} backward_ms={Median(phases.Select(p => p[2])):F0} optimizer_ms={Median(phases.Select(p => p[3])):F0} peak_rss_mb={peak / 1e6:F0} flops_per_token={model.FlopsPerToken:R}"));
        if (kernels)
        {
            KernelBreakdown(config, threads, precision);
            BackwardBreakdown(config, threads, precision);
            if (fused is not null)
                OptimizerBreakdown(fused, threads);
        }
        fused?.Dispose();
        reference?.Dispose();
        return 0;
    }

    /// <summary>
    /// Times forward and forward + backward of each layer kind as the model runs it (fp32 parameters whose gradients
    /// accumulate into existing fp32 buffers, through <see cref="Autocast"/> in the run's precision), so the backward's
    /// share of each kind, casts and gradient accumulation included, can be read off.
    /// </summary>
    private static void BackwardBreakdown(GptConfig config, int threads, TrainingPrecision precision)
    {
        int rows = Batch * Context, c = config.EmbeddingSize, layers = config.LayerCount;
        long vocab = config.PaddedVocabularySize;
        using var scope = NewDisposeScope();
        var gen = new Generator(5);
        Parameter P(params long[] shape)
        {
            var p = new Parameter(randn(shape, generator: gen) * 0.02);
            p.grad = zeros(shape);
            return p;
        }

        var wAttn = P(3 * c, c);
        var wProj = P(c, c);
        var wFc = P(4 * c, c);
        var wFcProj = P(c, 4 * c);
        var wte = P(vocab, c);
        using var embedding = nn.Embedding(vocab, c);
        embedding.weight!.grad = zeros(vocab, c);
        using var sparseEmbedding = nn.Embedding(vocab, c, sparse: true);   // as the trainer looks tokens up (GptModel.PreallocatedGradients)
        sparseEmbedding.weight!.grad = zeros(vocab, c);
        var ln = P(c);
        var lnb = P(c);
        var targets = randint(0, config.ResolvedVocabularySize, [rows], generator: gen);
        var ids = randint(0, config.ResolvedVocabularySize, [Batch, Context], generator: gen);
        // Inputs are made once (leaves reused across runs), so the timings hold no random-number generation.
        var x1 = randn([rows, c], generator: gen).requires_grad_(true);
        var x4 = randn([rows, 4 * c], generator: gen).requires_grad_(true);
        var q = randn([Batch, config.HeadCount, Context, c / config.HeadCount], generator: gen).requires_grad_(true);
        Tensor Low(Tensor t) => Autocast.ComputeTypeOf(precision) is { } lt ? t.to(lt) : t;
        var kinds = new (string Name, int PerStep, Func<Tensor> Forward)[]
        {
            ("linear c_attn 768→2304", layers, () => Autocast.Linear(x1, wAttn)),
            ("linear attn c_proj 768→768", layers, () => Autocast.Linear(x1, wProj)),
            ("linear mlp c_fc 768→3072", layers, () => Autocast.Linear(x1, wFc)),
            ("linear mlp c_proj 3072→768", layers, () => Autocast.Linear(x4, wFcProj)),
            ("layer_norm", 2 * layers + 1, () => nn.functional.layer_norm(Autocast.Float32(x1), [c], ln, lnb, 1e-5)),
            ("scaled_dot_product_attention (causal)", layers, () => Autocast.Attention(q, q, q, null, 0, isCausal: true)),
            ("gelu (tanh) on the c_fc output", layers, () => nn.functional.gelu(Low(x4), GELU.Approximate.tanh)),
            ("token embedding, dense (V, C) gradient (before 2026-12-03)", 0, () => embedding.call(ids)),
            ("token embedding, sparse gradient (the trainer's)", 1, () => sparseEmbedding.call(ids)),
            ("lm_head + cross_entropy, unfused (before 2026-12-03)", 0, () => nn.functional.cross_entropy(Autocast.Float32(Autocast.Linear(x1, wte)), targets)),
            ("lm_head + cross_entropy fused (the trainer's OutputLayerLoss)", 1, () => OutputLayerLoss.Run(x1, wte, targets) / rows),
        };
        Console.WriteLine($"KERNELS Forward and backward per layer kind at B·T = {rows}, {threads} threads, {precision} (fp32 parameters, gradients accumulated into fp32 buffers; median of 5 after 2 warm-ups):");
        Console.WriteLine("KERNELS ");
        Console.WriteLine("| layer kind | per step | forward ms | forward + backward ms | backward ÷ forward | ms per step |");
        Console.WriteLine("|---|---|---|---|---|---|");
        double total = 0;
        using var cast = Autocast.Enable(precision);
        foreach (var k in kinds)
        {
            var fwd = new List<double>();
            var both = new List<double>();
            for (int i = 0; i < 7; i++)
            {
                using var inner = NewDisposeScope();
                var sw = Stopwatch.StartNew();
                var y = k.Forward();
                double f = sw.Elapsed.TotalMilliseconds;
                (y.dim() == 0 ? y : y.to(ScalarType.Float32).sum()).backward();
                if (i >= 2)
                {
                    fwd.Add(f);
                    both.Add(sw.Elapsed.TotalMilliseconds);
                }
            }

            double mf = fwd.Order().ElementAt(2), mb = both.Order().ElementAt(2);
            total += mb * k.PerStep;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {k.Name} | {k.PerStep} | {mf:F2} | {mb:F2} | {(mb - mf) / mf:F1} | {mb * k.PerStep:F1} |"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| sum | | | | | {total:F1} |"));
        Console.WriteLine("KERNELS ");
    }

    /// <summary>
    /// Times the optimizer phase's parts (clip = norm + scale, AdamW update, zeroing) on the model's own flat buffers, and
    /// the update at several chunk sizes, interleaved round by round so that a noisy machine treats them alike: the
    /// update makes ten passes over each chunk, so a chunk whose four buffers stay in cache is read from memory once.
    /// </summary>
    private static void OptimizerBreakdown(FusedAdamW fused, int threads)
    {
        long[] chunks = [8L << 20, 2L << 20, 1L << 20, 1L << 19, 1L << 18, 1L << 16];
        var times = chunks.ToDictionary(c => c, _ => new List<double>());
        var clip = new List<double>();
        var zero = new List<double>();
        long original = fused.ChunkElements;
        for (int round = 0; round < 6; round++)
        {
            var sw = Stopwatch.StartNew();
            fused.ClipGradientNorm(1.0).Dispose();
            clip.Add(sw.Elapsed.TotalMilliseconds);
            foreach (var c in chunks)
            {
                fused.ChunkElements = c;
                sw.Restart();
                fused.Step();
                times[c].Add(sw.Elapsed.TotalMilliseconds);
            }

            sw.Restart();
            fused.ZeroGrad();
            zero.Add(sw.Elapsed.TotalMilliseconds);
        }

        fused.ChunkElements = original;
        static double Median(List<double> v) => v.Skip(1).Order().ElementAt((v.Count - 1) / 2);   // first round warms up
        Console.WriteLine($"KERNELS Optimizer phase on the flat buffers, {threads} threads (median of 5 rounds): clip {Median(clip):F1} ms, zero {Median(zero):F1} ms; AdamW update by chunk size (default {original:N0} elements):");
        Console.WriteLine("KERNELS ");
        Console.WriteLine("| chunk elements | chunk MiB per buffer | update ms |");
        Console.WriteLine("|---|---|---|");
        foreach (var c in chunks)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {c:N0} | {c * 4 / 1048576.0:F2} | {Median(times[c]):F1} |"));
        Console.WriteLine("KERNELS ");
    }

    /// <summary>
    /// Times each kernel kind of one forward pass in isolation at this shape (B·T = 256 rows), scaled to the whole
    /// model (× 12 layers), with the matmuls' GFLOP/s: shows which ops eat the time the matmul peak does not explain.
    /// </summary>
    private static void KernelBreakdown(GptConfig config, int threads, TrainingPrecision precision)
    {
        int rows = Batch * Context, c = config.EmbeddingSize, layers = config.LayerCount, heads = config.HeadCount;
        long vocab = config.PaddedVocabularySize;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var gen = new Generator(3);
        var low = Autocast.ComputeTypeOf(precision) ?? ScalarType.Float32;   // the matmuls' and attention's dtype
        Tensor R(params long[] shape) => randn(shape, generator: gen);
        Tensor L(params long[] shape) => randn(shape, generator: gen).to(low);
        var x = L(rows, c);
        var h = L(rows, 4 * c);
        var wAttn = L(3 * c, c);
        var wProj = L(c, c);
        var wFc = L(4 * c, c);
        var wFcProj = L(c, 4 * c);
        var wte32 = R(vocab, c);
        var wte = wte32.to(low);
        var x32 = R(rows, c);
        var q = L(Batch, heads, Context, c / heads);
        var targets = randint(0, config.ResolvedVocabularySize, [rows], generator: gen);
        var ln = ones(c);
        var lnb = zeros(c);
        var logits = R(rows, vocab);
        var logitsLow = logits.to(low);
        var kernels = new (string Name, int PerStep, double Flops, Action Run)[]
        {
            ("linear c_attn 768→2304", layers, 2.0 * rows * c * 3 * c, () => nn.functional.linear(x, wAttn).Dispose()),
            ("linear attn c_proj 768→768", layers, 2.0 * rows * c * c, () => nn.functional.linear(x, wProj).Dispose()),
            ("linear mlp c_fc 768→3072", layers, 2.0 * rows * c * 4 * c, () => nn.functional.linear(x, wFc).Dispose()),
            ("linear mlp c_proj 3072→768", layers, 2.0 * rows * 4 * c * c, () => nn.functional.linear(h, wFcProj).Dispose()),
            ("lm_head 768→50304 (tied wte)", 1, 2.0 * rows * c * vocab, () => nn.functional.linear(x, wte).Dispose()),
            ("scaled_dot_product_attention (causal)", layers, 4.0 * Batch * heads * Context * Context * (c / heads), () => nn.functional.scaled_dot_product_attention(q, q, q, is_casual: true).Dispose()),
            ("layer_norm (fp32)", 2 * layers + 1, 0, () => nn.functional.layer_norm(x32, [c], ln, lnb, 1e-5).Dispose()),
            ("gelu (tanh)", layers, 0, () => nn.functional.gelu(h, GELU.Approximate.tanh).Dispose()),
            ("residual add (fp32 stream + branch)", 2 * layers, 0, () => (x32 + x).Dispose()),
            ("cross_entropy over 50304 logits (fp32)", 1, 0, () => nn.functional.cross_entropy(logits, targets).Dispose()),
        };
        if (low != ScalarType.Float32)
        {
            kernels =
            [
                .. kernels,
                ("autocast: cast wte fp32 → low", 1, 0, () => wte32.to(low).Dispose()),
                ("autocast: cast logits low → fp32", 1, 0, () => logitsLow.to(ScalarType.Float32).Dispose()),
                ("autocast: cast a block input fp32 → low", 3 * layers, 0, () => x32.to(low).Dispose()),
            ];
        }
        Console.WriteLine($"KERNELS Forward-pass kernels at B·T = {rows}, {threads} threads, {precision} (median of 5 runs after 2 warm-ups; backward of a matmul is 2 matmuls of the same size):");
        Console.WriteLine("KERNELS ");
        Console.WriteLine("| kernel | per forward | ms each | ms per forward | GFLOP/s |");
        Console.WriteLine("|---|---|---|---|---|");
        double total = 0;
        foreach (var k in kernels)
        {
            var times = new List<double>();
            for (int i = 0; i < 7; i++)
            {
                var sw = Stopwatch.StartNew();
                k.Run();
                if (i >= 2)
                    times.Add(sw.Elapsed.TotalMilliseconds);
            }

            double ms = times.Order().ElementAt(times.Count / 2);
            total += ms * k.PerStep;
            string gflops = k.Flops > 0 ? (k.Flops / (ms / 1000) / 1e9).ToString("F1", CultureInfo.InvariantCulture) : "";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {k.Name} | {k.PerStep} | {ms:F2} | {ms * k.PerStep:F1} | {gflops} |"));
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| sum of the kernels above | | | {total:F1} | |"));
    }
}
