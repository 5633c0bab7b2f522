// Measures, on this machine, through TorchSharp/libtorch:
//   1. the peak throughput of a 2048³ matmul in fp32, bf16 and fp16 (warmup, repeats, median and best), the denominator
//      of the trainer's MFU (model flops utilisation);
//   2. the time of one training step of the ShakespeareChar GPT (nanoGPT's CPU configuration) at batch 12 × 64,
//      split into forward, backward and AdamW, in fp32 and with the whole model in bf16.
// Usage: MatmulPeak [--size N] [--repeats R] [--threads K] [--steps S] [--skip-model]
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML.Llm;
using TorchSharp;
using static TorchSharp.torch;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
int size = IntOption("--size", 2048);
int repeats = IntOption("--repeats", 10);
int threads = IntOption("--threads", Environment.ProcessorCount);
int steps = IntOption("--steps", 30);
bool skipModel = args.Contains("--skip-model");

torch.set_num_threads(threads);
Console.WriteLine("== Machine");
Console.WriteLine($"CPU:        {CpuModel()}");
Console.WriteLine($"Cores:      {Environment.ProcessorCount} logical (Environment.ProcessorCount); torch threads {torch.get_num_threads()}");
Console.WriteLine($"OS:         {RuntimeInformation.OSDescription} ({RuntimeInformation.OSArchitecture})");
Console.WriteLine($"Runtime:    .NET {Environment.Version}, libtorch {torch.__version__}, TorchSharp {typeof(torch).Assembly.GetName().Version}");
Console.WriteLine($"CPU flags:  avx512f={HasFlag("avx512f")} avx512_bf16={HasFlag("avx512_bf16")} amx_bf16={HasFlag("amx_bf16")}");
Console.WriteLine($"Load:       {LoadAverage()} (1/5/15-minute load average at start; the machine is shared)");
Console.WriteLine();

Console.WriteLine($"== Matmul {size}×{size}×{size} ({2.0 * size * size * size / 1e9:F1} GFLOP per call), 3 warmup + {repeats} timed calls");
// fp16 too: Fp16Mixed training runs on the CPU only if libtorch's fp16 matmul is usable there (issue 10).
foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16, ScalarType.Float16 })
{
    var seconds = TimeMatmul(size, dtype, repeats);
    double flops = 2.0 * size * size * size;
    Console.WriteLine($"{dtype,-9}  median {flops / Median(seconds) / 1e9,7:F1} GFLOP/s   best {flops / seconds.Min() / 1e9,7:F1} GFLOP/s   " +
                      $"(median {Median(seconds) * 1e3:F1} ms/call)");
}

if (!skipModel)
{
    Console.WriteLine();
    Console.WriteLine($"== Training step, GptConfig.ShakespeareChar(65), batch 12 × context 64, 5 warmup + {steps} timed steps");
    foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
    {
        TimeTrainingStep(dtype, steps);
    }
}

static List<double> TimeMatmul(int n, ScalarType dtype, int repeats)
{
    using var scope = NewDisposeScope();
    var generator = new torch.Generator(1);
    var a = randn(n, n, generator: generator).to(dtype);
    var b = randn(n, n, generator: generator).to(dtype);
    var seconds = new List<double>();
    for (int i = 0; i < 3 + repeats; i++)
    {
        var watch = Stopwatch.StartNew();
        using (var c = a.matmul(b))
        {
            watch.Stop();
        }

        if (i >= 3)
        {
            seconds.Add(watch.Elapsed.TotalSeconds);
        }
    }

    return seconds;
}

static void TimeTrainingStep(ScalarType dtype, int steps)
{
    const int Batch = 12, Context = 64, Vocabulary = 65;
    torch.manual_seed(1337);
    using var model = new GptModel(GptConfig.ShakespeareChar(Vocabulary));
    model.to(dtype);
    model.train();
    // nanoGPT's optimiser: AdamW β = (0.9, 0.95), weight decay 0.1 on ≥2-D weights only.
    var groups = new List<TorchSharp.Modules.AdamW.ParamGroup>
    {
        new(model.DecayParameters, new TorchSharp.Modules.AdamW.Options { weight_decay = 0.1 }),
        new(model.NoDecayParameters, new TorchSharp.Modules.AdamW.Options { weight_decay = 0.0 }),
    };
    using var optimizer = optim.AdamW(groups, lr: 1e-3, beta1: 0.9, beta2: 0.95);
    var generator = new torch.Generator(7);
    var forward = new List<double>();
    var backward = new List<double>();
    var update = new List<double>();
    var total = new List<double>();
    float loss = 0;
    for (int step = 0; step < 5 + steps; step++)
    {
        using var scope = NewDisposeScope();
        var tokens = randint(0, Vocabulary, [Batch, Context + 1], dtype: ScalarType.Int64, generator: generator);
        var x = tokens[.., ..Context];
        var y = tokens[.., 1..];
        var watch = Stopwatch.StartNew();
        var logits = model.forward(x);
        var lossTensor = nn.functional.cross_entropy(logits.view(-1, logits.shape[2]).to(ScalarType.Float32), y.reshape(-1));
        double t1 = watch.Elapsed.TotalSeconds;
        optimizer.zero_grad();
        lossTensor.backward();
        double t2 = watch.Elapsed.TotalSeconds;
        optimizer.step();
        double t3 = watch.Elapsed.TotalSeconds;
        loss = lossTensor.item<float>();
        if (step >= 5)
        {
            forward.Add(t1);
            backward.Add(t2 - t1);
            update.Add(t3 - t2);
            total.Add(t3);
        }
    }

    double flopsPerStep = model.FlopsPerToken * Batch * Context;
    Console.WriteLine($"{dtype,-9}  step median {Median(total) * 1e3,6:F1} ms (best {total.Min() * 1e3:F1})  = forward {Median(forward) * 1e3:F1} + backward {Median(backward) * 1e3:F1} + AdamW {Median(update) * 1e3:F1} ms;  " +
                      $"{flopsPerStep / Median(total) / 1e9:F1} GFLOP/s model flops ({model.ParameterCount:N0} params, {flopsPerStep / 1e9:F2} GFLOP/step); " +
                      $"2000 steps ≈ {Median(total) * 2000:F0} s; last loss {loss:F3}");
}

Console.WriteLine();
Console.WriteLine($"Load at end: {LoadAverage()}");

static string LoadAverage() =>
    File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

static double Median(List<double> values)
{
    var sorted = values.Order().ToArray();
    return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
}

static string CpuModel()
{
    const string CpuInfo = "/proc/cpuinfo";
    if (File.Exists(CpuInfo))
    {
        var line = File.ReadLines(CpuInfo).FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
        if (line is not null)
        {
            return line[(line.IndexOf(':') + 1)..].Trim();
        }
    }

    return RuntimeInformation.ProcessArchitecture.ToString();
}

static bool HasFlag(string flag)
{
    const string CpuInfo = "/proc/cpuinfo";
    var flags = File.Exists(CpuInfo) ? File.ReadLines(CpuInfo).FirstOrDefault(l => l.StartsWith("flags", StringComparison.Ordinal)) : null;
    return flags is not null && flags.Split(' ').Contains(flag);
}

int IntOption(string name, int fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}
