// LoRA vs full fine-tuning of a GPT-2 124M-shaped model (random initialisation: the cost does not depend on the values)
// with CausalLmTrainer itself, batch 4 × context 64: trainable parameters, peak memory and step time, side by side.
// Peak memory is the process's peak resident set (VmHWM), so each mode trains in a child process of its own; the
// parent prints the table and the ratios. Usage: LoraFineTuning [steps] (default 5; the first step is not timed).
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm;

if (args.Length >= 2 && args[0] == "--child")
    return Child(args[1], int.Parse(args[2], CultureInfo.InvariantCulture));

int steps = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 5;
Console.WriteLine($"Machine: {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}, load average {LoadAverage()} at start");
Console.WriteLine($"GPT-2 124M shape (12L, 12H, 768, vocab 50257), batch 4 × context 64, fp32, {steps} steps per mode (median of steps 2..{steps}).");
Console.WriteLine();
var results = new Dictionary<string, string[]>();
foreach (var mode in new[] { "full", "lora" })
{
    var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
    if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
        start.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);          // run as: dotnet LoraFineTuning.dll
    start.ArgumentList.Add("--child");
    start.ArgumentList.Add(mode);
    start.ArgumentList.Add(steps.ToString(CultureInfo.InvariantCulture));
    using var child = Process.Start(start)!;
    string output = child.StandardOutput.ReadToEnd();
    child.WaitForExit();
    var line = output.Split('\n').FirstOrDefault(l => l.StartsWith("RESULT ", StringComparison.Ordinal))
        ?? throw new InvalidOperationException($"The {mode} child failed (exit {child.ExitCode}):\n{output}");
    results[mode] = line.Split(' ');
}

Console.WriteLine("| mode | trainable params | of all | peak RSS MiB | s/step | tokens/s |");
Console.WriteLine("|---|---|---|---|---|---|");
foreach (var (mode, r) in results)
{
    long trainable = long.Parse(r[2], CultureInfo.InvariantCulture), total = long.Parse(r[3], CultureInfo.InvariantCulture);
    double rss = double.Parse(r[4], CultureInfo.InvariantCulture), step = double.Parse(r[5], CultureInfo.InvariantCulture);
    Console.WriteLine(FormattableString.Invariant($"| {(mode == "lora" ? "LoRA r 8, alpha 16, c_attn (PEFT's GPT-2 default)" : "full fine-tuning")} | {trainable:N0} | {100.0 * trainable / total:F2}% | {rss:F0} | {step:F2} | {256 / step:F0} |"));
}

double Ratio(int i) => double.Parse(results["lora"][i], CultureInfo.InvariantCulture) / double.Parse(results["full"][i], CultureInfo.InvariantCulture);
Console.WriteLine();
Console.WriteLine(FormattableString.Invariant($"LoRA / full: trainable parameters {Ratio(2):F4}, peak RSS {Ratio(4):F2}, step time {Ratio(5):F2}. Load average {LoadAverage()} at end."));
return 0;

static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "n/a";

static int Child(string mode, int steps)
{
    var ml = new MLContext(0);
    var random = new Random(1);
    var rows = Enumerable.Range(0, 4 * steps).Select(_ => new Row { Tokens = Enumerable.Range(0, 65).Select(_ => random.Next(50257)).ToArray() }).ToList();
    var schema = SchemaDefinition.Create(typeof(Row));
    schema[nameof(Row.Tokens)].ColumnType = new VectorDataViewType(NumberDataViewType.Int32, 65);
    var data = ml.Data.LoadFromEnumerable(rows, schema);
    var options = new CausalLmTrainerOptions
    {
        Model = GptConfig.Gpt2Small(50257, contextLength: 64),
        Lora = mode == "lora" ? new LoraOptions() : null,
        BatchSize = 4,
        MaxSteps = steps,
        WarmupSteps = 0,
        LearningRate = 1e-4,
        EvaluationInterval = 1_000_000,
        LogInterval = 1,
        Seed = 1,
    };
    using var model = ml.Llm().Trainers.CausalLm(options).Fit(data);
    var times = model.History.Zip(model.History.Skip(1), (a, b) => b.ElapsedSeconds - a.ElapsedSeconds).Order().ToArray();
    double median = times.Length == 0 ? model.History[0].ElapsedSeconds : times[times.Length / 2];
    var status = File.ReadAllLines("/proc/self/status").First(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
    double peakMiB = long.Parse(status.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
    Console.WriteLine(FormattableString.Invariant($"RESULT {mode} {model.Model.TrainableParameterCount} {model.Model.ParameterCount} {peakMiB:F1} {median:F3}"));
    return 0;
}

internal sealed class Row
{
    public int[] Tokens { get; set; } = [];
}
