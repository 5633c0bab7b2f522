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

    public static void Parent(int steps, double peak32)
    {
        var configurations = new (string Optimizer, int Threads, bool Checkpointing, bool Kernels)[]
        {
            ("torchsharp", 2, false, false),
            ("fused", 2, false, true),
            ("fused", 2, true, false),
            ("torchsharp", 1, false, false),
            ("fused", 1, false, false),
        };
        Console.WriteLine();
        Console.WriteLine($"GPT-2 124M step anatomy, batch {Batch} × {Context}, fp32, median of {steps} steps after {Warmup} warm-up steps; each row a fresh process");
        Console.WriteLine();
        Console.WriteLine("| optimizer | threads | activation checkpointing | ms/step | tokens/s | data ms | forward ms | backward ms | optimizer ms (zero+clip+step) | peak RSS MB | MFU vs fp32 peak |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var results = new List<Dictionary<string, string>>();
        var kernelLines = new List<string>();
        foreach (var c in configurations)
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!, [typeof(StepAnatomy).Assembly.Location, "--child", c.Optimizer, c.Threads.ToString(CultureInfo.InvariantCulture), c.Checkpointing.ToString(), steps.ToString(CultureInfo.InvariantCulture), c.Kernels.ToString()])
            {
                RedirectStandardOutput = true,
            };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) != "dotnet")
                psi = new ProcessStartInfo(Environment.ProcessPath!, ["--child", c.Optimizer, c.Threads.ToString(CultureInfo.InvariantCulture), c.Checkpointing.ToString(), steps.ToString(CultureInfo.InvariantCulture), c.Kernels.ToString()]) { RedirectStandardOutput = true };
            using var child = Process.Start(psi)!;
            var lines = child.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            child.WaitForExit();
            var r = lines.Where(l => l.StartsWith("RESULT ", StringComparison.Ordinal)).Select(l => l[7..].Split(' ').Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => kv[1])).Single();
            kernelLines.AddRange(lines.Where(l => l.StartsWith('|') || l.StartsWith("KERNELS", StringComparison.Ordinal)));
            results.Add(r);
            double tokPerSec = double.Parse(r["tokens_per_s"], CultureInfo.InvariantCulture);
            double mfu = double.Parse(r["flops_per_token"], CultureInfo.InvariantCulture) * tokPerSec / (peak32 * 1e9);   // peak32 is in GFLOP/s
            Console.WriteLine($"| {c.Optimizer} | {c.Threads} | {(c.Checkpointing ? "on" : "off")} | {r["step_ms"]} | {r["tokens_per_s"]} | {r["data_ms"]} | {r["forward_ms"]} | {r["backward_ms"]} | {r["optimizer_ms"]} | {r["peak_rss_mb"]} | {100 * mfu:F1}% |");
        }

        double Get(int i, string key) => double.Parse(results[i][key], CultureInfo.InvariantCulture);
        Console.WriteLine();
        Console.WriteLine($"Optimizer phase, TorchSharp AdamW ÷ FusedAdamW: {Get(0, "optimizer_ms") / Get(1, "optimizer_ms"):F2}× at 2 threads, {Get(3, "optimizer_ms") / Get(4, "optimizer_ms"):F2}× at 1 thread; whole step {Get(0, "step_ms") / Get(1, "step_ms"):F2}× and {Get(3, "step_ms") / Get(4, "step_ms"):F2}×.");
        Console.WriteLine($"Peak RSS: TorchSharp AdamW {Get(0, "peak_rss_mb"):F0} MB, FusedAdamW {Get(1, "peak_rss_mb"):F0} MB, FusedAdamW + activation checkpointing {Get(2, "peak_rss_mb"):F0} MB (saved {Get(1, "peak_rss_mb") - Get(2, "peak_rss_mb"):F0} MB; step time ×{Get(2, "step_ms") / Get(1, "step_ms"):F2}).");
        Console.WriteLine($"Threads: FusedAdamW 2 threads ÷ 1 thread tokens/s = {Get(1, "tokens_per_s") / Get(4, "tokens_per_s"):F2}×.");
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
            var logits = model.forward(x);
            var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), y.view(-1));
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
            KernelBreakdown(config, threads);
        fused?.Dispose();
        reference?.Dispose();
        return 0;
    }

    /// <summary>
    /// Times each kernel kind of one forward pass in isolation at this shape (B·T = 256 rows), scaled to the whole
    /// model (× 12 layers), with the matmuls' GFLOP/s: shows which ops eat the time the matmul peak does not explain.
    /// </summary>
    private static void KernelBreakdown(GptConfig config, int threads)
    {
        int rows = Batch * Context, c = config.EmbeddingSize, layers = config.LayerCount, heads = config.HeadCount;
        long vocab = config.PaddedVocabularySize;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var gen = new Generator(3);
        Tensor R(params long[] shape) => randn(shape, generator: gen);
        var x = R(rows, c);
        var h = R(rows, 4 * c);
        var wAttn = R(3 * c, c);
        var wProj = R(c, c);
        var wFc = R(4 * c, c);
        var wFcProj = R(c, 4 * c);
        var wte = R(vocab, c);
        var q = R(Batch, heads, Context, c / heads);
        var targets = randint(0, config.ResolvedVocabularySize, [rows], generator: gen);
        var ln = ones(c);
        var lnb = zeros(c);
        var logits = R(rows, vocab);
        var kernels = new (string Name, int PerStep, double Flops, Action Run)[]
        {
            ("linear c_attn 768→2304", layers, 2.0 * rows * c * 3 * c, () => nn.functional.linear(x, wAttn).Dispose()),
            ("linear attn c_proj 768→768", layers, 2.0 * rows * c * c, () => nn.functional.linear(x, wProj).Dispose()),
            ("linear mlp c_fc 768→3072", layers, 2.0 * rows * c * 4 * c, () => nn.functional.linear(x, wFc).Dispose()),
            ("linear mlp c_proj 3072→768", layers, 2.0 * rows * 4 * c * c, () => nn.functional.linear(h, wFcProj).Dispose()),
            ("lm_head 768→50304 (tied wte)", 1, 2.0 * rows * c * vocab, () => nn.functional.linear(x, wte).Dispose()),
            ("scaled_dot_product_attention (causal)", layers, 4.0 * Batch * heads * Context * Context * (c / heads), () => nn.functional.scaled_dot_product_attention(q, q, q, is_casual: true).Dispose()),
            ("layer_norm", 2 * layers + 1, 0, () => nn.functional.layer_norm(x, [c], ln, lnb, 1e-5).Dispose()),
            ("gelu (tanh)", layers, 0, () => nn.functional.gelu(h, GELU.Approximate.tanh).Dispose()),
            ("residual add", 2 * layers, 0, () => (x + x).Dispose()),
            ("cross_entropy over 50304 logits", 1, 0, () => nn.functional.cross_entropy(logits, targets).Dispose()),
        };
        Console.WriteLine($"KERNELS Forward-pass kernels at B·T = {rows}, {threads} threads (median of 5 runs after 2 warm-ups; backward of a matmul is 2 matmuls of the same size):");
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
