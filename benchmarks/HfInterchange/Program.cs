// Hugging Face interchange timings: export (HuggingFaceCheckpoint.Save) and import (LoadHuggingFace) of a GPT-2 124M
// model and a Llama-style model of the same width (GQA 12/4, untied head), side by side with the ML.NET model zip's
// save and load of the same transformer, in one run (the machine is shared: compare the ratios).
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using TorchSharp;

int repeats = args.Length > 0 ? int.Parse(args[0]) : 2;
Console.WriteLine($"Machine: {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at start");
Console.WriteLine($"Best of {repeats} runs per figure.");
Console.WriteLine();
Console.WriteLine("| model | params | safetensors MB | HF export s | HF import s | zip save s | zip load s | import/zip-load |");
Console.WriteLine("|---|---|---|---|---|---|---|---|");
var ml = new MLContext(0);
string root = Path.Combine(Path.GetTempPath(), "hf-bench-" + Guid.NewGuid().ToString("N"));
Directory.CreateDirectory(root);
try
{
    foreach (var (name, config) in new[]
    {
        ("GPT-2 124M", GptConfig.Gpt2Small()),
        ("Llama-style 12L 768 GQA 12/4 untied", GptConfig.ModernSmall(50257) with { KeyValueHeadCount = 4, TiedEmbeddings = false }),
    })
    {
        torch.manual_seed(1);
        string folder = Path.Combine(root, "seed");
        using (var model = new GptModel(config))
            HuggingFaceCheckpoint.Save(model, LmTokenizer.Bytes(), folder);
        using var lm = ml.Llm().LoadHuggingFace(folder);
        double export = double.MaxValue, import = double.MaxValue, zipSave = double.MaxValue, zipLoad = double.MaxValue;
        for (int r = 0; r < repeats; r++)
        {
            string target = Path.Combine(root, $"out{r}");
            var clock = Stopwatch.StartNew();
            lm.SaveHuggingFace(target);
            export = Math.Min(export, clock.Elapsed.TotalSeconds);
            clock.Restart();
            using (var loaded = ml.Llm().LoadHuggingFace(target))
                import = Math.Min(import, clock.Elapsed.TotalSeconds);
            string zip = Path.Combine(root, $"model{r}.zip");
            clock.Restart();
            ml.Model.Save(lm, null, zip);
            zipSave = Math.Min(zipSave, clock.Elapsed.TotalSeconds);
            clock.Restart();
            using (var loaded = (CausalLmTransformer)ml.Model.Load(zip, out _))
                zipLoad = Math.Min(zipLoad, clock.Elapsed.TotalSeconds);
            Directory.Delete(target, recursive: true);
            File.Delete(zip);
        }

        double mb = new FileInfo(Path.Combine(folder, "model.safetensors")).Length / 1e6;
        Console.WriteLine($"| {name} | {lm.Model.ParameterCount / 1e6:F2}M | {mb:F1} | {export:F2} | {import:F2} | {zipSave:F2} | {zipLoad:F2} | {import / zipLoad:F2} |");
        Directory.Delete(folder, recursive: true);
    }
}
finally
{
    Directory.Delete(root, recursive: true);
}
