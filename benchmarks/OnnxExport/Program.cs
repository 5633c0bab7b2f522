// ONNX export benchmark, fp32 vs int8 (per-channel symmetric weights with dynamic int8 activations through
// DynamicQuantizeLinear + MatMulInteger, and blockwise 8-bit weights through ORT's MatMulNBits): file size, CPU tokens/s
// of greedy generation through ONNX Runtime with the past/present variant (TorchSharp's TextGenerator beside it), and
// validation perplexity of the Shakespeare character model after a short training run. The GPT-2 124M shape is random-
// initialised: size and speed only. The machine is shared: the load average is printed; compare ratios within a run.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using Microsoft.ML;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using TorchSharp;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
long trainSteps = args.Length > 0 ? long.Parse(args[0], CultureInfo.InvariantCulture) : 300;
int newTokens = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 48;
string Load() => File.ReadAllText("/proc/loadavg").Split(' ')[0];
Console.WriteLine($"Machine: {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}; load average {Load()} at start");
torch.set_num_threads(Environment.ProcessorCount);
var ml = new MLContext(1);
string root = Path.Combine(Path.GetTempPath(), "onnx-bench-" + Guid.NewGuid().ToString("N"));
Directory.CreateDirectory(root);
try
{
    // 1. Shakespeare, character level (nanoGPT's CPU model, 0.8M parameters), trained briefly.
    string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt"));
    int split = (int)(text.Length * 0.9);
    var tokenizer = LmTokenizer.Character([text]);
    var trainIds = tokenizer.Encode(text[..split]);
    var blocks = new List<Block>();
    for (int s = 0; s + 65 <= trainIds.Length; s += 16)
        blocks.Add(new Block { Tokens = trainIds[s..(s + 65)] });
    var schema = Microsoft.ML.Data.SchemaDefinition.Create(typeof(Block));
    schema[nameof(Block.Tokens)].ColumnType = new Microsoft.ML.Data.VectorDataViewType(Microsoft.ML.Data.NumberDataViewType.Int32, 65);
    var options = new CausalLmTrainerOptions
    {
        Model = GptConfig.ShakespeareChar(),
        Tokenizer = tokenizer,
        BatchSize = 12,
        MaxSteps = trainSteps,
        LearningRate = 1e-3,
        MinLearningRate = 1e-4,
        WarmupSteps = (int)Math.Min(100, trainSteps / 5),
        Beta2 = 0.99,
        Seed = 1337,
    };
    var clock = Stopwatch.StartNew();
    using var shakespeare = ml.Llm().Trainers.CausalLm(options).Fit(ml.Data.LoadFromEnumerable(blocks, schema));
    Console.WriteLine($"Shakespeare model: {shakespeare.Model.ParameterCount / 1e6:F2}M parameters, trained {trainSteps} steps in {clock.Elapsed.TotalSeconds:F0} s");

    var validationIds = tokenizer.Encode(text[split..]);
    var validation = Enumerable.Range(0, Math.Min(128, validationIds.Length / 65)).Select(b => validationIds[(b * 65)..(b * 65 + 65)]).ToArray();
    Console.WriteLine($"Validation: {validation.Length} blocks of 64 predictions from the held-out 10%");
    Console.WriteLine();
    Console.WriteLine("| model | weights | file MB | fp32/int8 size | val perplexity | ORT greedy tok/s | TorchSharp tok/s | load |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|");
    double torchPerplexity = Math.Exp(-validation.Average(b => (double)shakespeare.ScoreTokens(b)));
    double torchSpeed = TorchTokensPerSecond(ml, shakespeare, [tokenizer.Encode("\n")[0]], newTokens);
    Console.WriteLine($"| Shakespeare char | TorchSharp fp32, ScoreTokens (softmax over the {shakespeare.Config.PaddedVocabularySize} padded columns) | | | {torchPerplexity:F4} | | {torchSpeed:F0} | {Load()} |");
    Console.WriteLine($"| Shakespeare char | TorchSharp fp32, softmax over the {tokenizer.VocabularySize} real columns (what the export computes) | | | {RealColumnPerplexity(shakespeare.Model, validation):F4} | | | {Load()} |");
    Report("Shakespeare char", shakespeare.Model, validation, [tokenizer.Encode("\n")[0]], newTokens, tokenizer: false);

    // 2. GPT-2 124M shape, random initialisation: size and speed.
    torch.manual_seed(1);
    using var gpt2 = new GptModel(GptConfig.Gpt2Small());
    gpt2.eval();
    int[] prompt = Enumerable.Range(0, 16).Select(i => 100 + 37 * i).ToArray();
    Console.WriteLine($"| GPT-2 124M (random) | TorchSharp fp32 | | | | | {TorchTokensPerSecondIds(gpt2, prompt, newTokens):F1} | {Load()} |");
    Report("GPT-2 124M (random)", gpt2, null, prompt, newTokens, tokenizer: false);
}
finally
{
    Directory.Delete(root, recursive: true);
}

void Report(string name, GptModel lm, int[][]? validation, int[] prompt, int count, bool tokenizer)
{
    long fp32Size = 0;
    foreach (var (quantization, block) in new[]
    {
        (OnnxWeightQuantization.None, 0), (OnnxWeightQuantization.Int8, 0),
        (OnnxWeightQuantization.Int8MatMulNBits, 32), (OnnxWeightQuantization.Int8MatMulNBits, 64),
    })
    {
        string folder = Path.Combine(root, $"{name.Split(' ')[0]}-{quantization}-{block}");
        var clock = Stopwatch.StartNew();
        var options = new OnnxExportOptions { Quantization = quantization, IncludeTokenizer = tokenizer };
        if (block > 0)
            options.BlockSize = block;
        OnnxExporter.Export(lm, null, folder, options);
        double exportSeconds = clock.Elapsed.TotalSeconds;
        long size = Directory.GetFiles(folder, "model.onnx*").Sum(f => new FileInfo(f).Length);
        if (quantization == OnnxWeightQuantization.None)
            fp32Size = size;
        using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFileName), new SessionOptions
        {
            GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL,
            IntraOpNumThreads = Environment.ProcessorCount,
        });
        var decoder = new OrtDecoder(session, lm.Config);
        string perplexity = validation is null ? "" : $"{decoder.Perplexity(validation):F4}";
        decoder.Greedy(prompt, 4);   // warm-up
        double best = 0;
        for (int r = 0; r < 3; r++)
        {
            clock.Restart();
            decoder.Greedy(prompt, count);
            best = Math.Max(best, count / clock.Elapsed.TotalSeconds);
        }

        string ratio = quantization == OnnxWeightQuantization.None ? "" : $"{(double)fp32Size / size:F2}×";
        Console.WriteLine($"| {name} | ONNX {Label(quantization, block)} (export {exportSeconds:F1} s) | {size / 1e6:F2} | {ratio} | {perplexity} | {best:F1} | | {Load()} |");
    }
}

static string Label(OnnxWeightQuantization q, int block) => q switch
{
    OnnxWeightQuantization.None => "fp32",
    OnnxWeightQuantization.Int8 => "int8 per-channel, MatMulInteger",
    _ => $"int8 blocks of {block}, MatMulNBits",
};

static double TorchTokensPerSecond(MLContext ml, CausalLmTransformer lm, int[] prompt, int count)
{
    var generator = ml.Llm().CreateGenerator(lm);
    var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = count };
    generator.GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = 4 });
    double best = 0;
    for (int r = 0; r < 3; r++)
    {
        var clock = Stopwatch.StartNew();
        int n = generator.GenerateTokens(prompt, greedy).Length;
        best = Math.Max(best, n / clock.Elapsed.TotalSeconds);
    }

    return best;
}

static double RealColumnPerplexity(GptModel model, int[][] blocks)
{
    using var scope = torch.NewDisposeScope();
    using var noGrad = torch.no_grad();
    int v = model.Config.VocabularySize!.Value;
    var ids = torch.tensor(blocks.SelectMany(b => b.Select(x => (long)x)).ToArray(), [blocks.Length, blocks[0].Length]);
    var logits = model.forward(ids[.., ..^1])[.., .., ..v];
    var loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), ids[.., 1..].reshape(-1));
    return Math.Exp(loss.item<float>());
}

static double TorchTokensPerSecondIds(GptModel lm, int[] prompt, int count)
{
    // No tokenizer: the same cached greedy loop as TextGenerator, on ids.
    double best = 0;
    for (int r = 0; r < 2; r++)
    {
        var clock = Stopwatch.StartNew();
        using var cache = new KvCache(lm);
        var feed = prompt.Select(t => (long)t).ToArray();
        for (int i = 0; i < count; i++)
        {
            using var scope = torch.NewDisposeScope();
            var logits = lm.forward(torch.tensor(feed, [1, feed.Length]), cache)[0, -1];
            feed = [logits.argmax().item<long>()];
        }

        best = Math.Max(best, count / clock.Elapsed.TotalSeconds);
    }

    return best;
}

internal sealed class Block
{
    public int[] Tokens { get; set; } = [];
}

/// <summary>Runs an exported past/present model: greedy generation and perplexity of token blocks.</summary>
internal sealed class OrtDecoder(InferenceSession session, GptConfig config)
{
    private List<NamedOnnxValue> Inputs(long[] ids, int batch, int past, IReadOnlyList<DisposableNamedOnnxValue>? previous)
    {
        int t = ids.Length / batch;
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", new DenseTensor<long>(ids, [batch, t])),
            NamedOnnxValue.CreateFromTensor("attention_mask", new DenseTensor<long>(Enumerable.Repeat(1L, batch * (past + t)).ToArray(), [batch, past + t])),
            NamedOnnxValue.CreateFromTensor("position_ids", new DenseTensor<long>(Enumerable.Range(0, batch).SelectMany(_ => Enumerable.Range(past, t).Select(p => (long)p)).ToArray(), [batch, t])),
        };
        for (int i = 0; i < config.LayerCount; i++)
        {
            foreach (string kind in new[] { "key", "value" })
            {
                var tensor = previous?.First(v => v.Name == $"present.{i}.{kind}").AsTensor<float>()
                    ?? new DenseTensor<float>(Array.Empty<float>(), [batch, config.ResolvedKeyValueHeadCount, 0, config.HeadSize]);
                inputs.Add(NamedOnnxValue.CreateFromTensor($"past_key_values.{i}.{kind}", tensor));
            }
        }

        return inputs;
    }

    public int[] Greedy(int[] prompt, int count)
    {
        var output = new List<int>();
        var feed = prompt.Select(t => (long)t).ToArray();
        int past = 0, v = config.VocabularySize!.Value;
        IDisposableReadOnlyCollection<DisposableNamedOnnxValue>? results = null;
        for (int step = 0; step < count; step++)
        {
            var next = session.Run(Inputs(feed, 1, past, results?.ToList()));
            results?.Dispose();
            results = next;
            var logits = results.First(r => r.Name == "logits").AsTensor<float>() as DenseTensor<float>;
            var last = logits!.Buffer.Span.Slice((feed.Length - 1) * v, v);
            int best = 0;
            for (int i = 1; i < v; i++)
            {
                if (last[i] > last[best])
                    best = i;
            }

            past += feed.Length;
            output.Add(best);
            feed = [best];
        }

        results?.Dispose();
        return [.. output];
    }

    public double Perplexity(int[][] blocks)
    {
        double nats = 0;
        long count = 0;
        int v = config.VocabularySize!.Value;
        for (int start = 0; start < blocks.Length; start += 16)
        {
            var batch = blocks[start..Math.Min(blocks.Length, start + 16)];
            int t = batch[0].Length - 1;
            var ids = batch.SelectMany(b => b[..t].Select(x => (long)x)).ToArray();
            using var results = session.Run(Inputs(ids, batch.Length, 0, null));
            var logits = ((DenseTensor<float>)results.First(r => r.Name == "logits").AsTensor<float>()).Buffer.Span;
            for (int b = 0; b < batch.Length; b++)
            {
                for (int i = 0; i < t; i++)
                {
                    var row = logits.Slice((b * t + i) * v, v);
                    float max = float.MinValue;
                    foreach (float x in row)
                        max = Math.Max(max, x);
                    double sum = 0;
                    foreach (float x in row)
                        sum += Math.Exp(x - max);
                    nats += Math.Log(sum) + max - row[batch[b][i + 1]];
                    count++;
                }
            }
        }

        return Math.Exp(nats / count);
    }
}
