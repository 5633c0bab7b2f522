using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Export;

/// <summary>
/// ONNX export checked against the TorchSharp model with ONNX Runtime: logits of both styles (GPT-2 with biases; modern
/// with grouped-query attention and an untied head) with padding, greedy generation through the past/present variant
/// against <see cref="TextGenerator"/>, ML.NET's ApplyOnnxModel in a pipeline, int8 weights, external data, bad input.
/// </summary>
[Collection("Torch")]
public sealed class OnnxExportTests : IDisposable
{
    private readonly string _temp = Path.Combine(Path.GetTempPath(), "llm-onnx-tests-" + Guid.NewGuid().ToString("N"));

    public OnnxExportTests() => Directory.CreateDirectory(_temp);

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private string NewFolder(string name) => Path.Combine(_temp, name + "-" + Guid.NewGuid().ToString("N")[..6]);

    private static GptConfig Config(GptStyle style) => style == GptStyle.Gpt2
        ? GptConfig.Tiny(vocabularySize: 40, contextLength: 24)
        : GptConfig.Tiny(vocabularySize: 40, contextLength: 24) with { Style = GptStyle.Modern, HeadCount = 4, KeyValueHeadCount = 2, TiedEmbeddings = false, RopeTheta = 5000 };

    /// <summary>A random model whose weights are large enough that its logits are far from ties (std 0.02 is nearly flat).</summary>
    private static GptModel RandomModel(GptStyle style, int seed = 3, GeluApproximation gelu = GeluApproximation.Tanh)
    {
        torch.manual_seed(seed);
        var model = new GptModel(Config(style) with { GeluApproximation = gelu });
        using (no_grad())
        {
            foreach (var p in model.parameters())
                p.add_(randn_like(p) * 0.3);
        }

        model.eval();
        return model;
    }

    private static CausalLmTransformer Transformer(GptModel model, LmTokenizer? tokenizer = null) =>
        new(new MLContext(0), model, tokenizer, "Tokens", []);

    /// <summary>Our logits for one unpadded row: (T, V).</summary>
    private static float[] TorchLogits(GptModel model, long[] ids)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.forward(tensor(ids, [1, ids.Length]))[0, .., ..model.VocabularySize].contiguous();
        return logits.data<float>().ToArray();
    }

    private static DenseTensor<long> Longs(long[] values, params int[] dims) => new(values, dims);

    /// <summary>Runs the exported model; returns each output's values and dimensions.</summary>
    private static Dictionary<string, (float[] Values, int[] Dims)> Run(InferenceSession session, GptConfig config, long[] ids, long[] mask, long[] positions, int batch,
        Dictionary<string, (float[] Values, int[] Dims)>? past = null)
    {
        int t = ids.Length / batch, s = mask.Length / batch;
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", Longs(ids, batch, t)),
            NamedOnnxValue.CreateFromTensor("attention_mask", Longs(mask, batch, s)),
            NamedOnnxValue.CreateFromTensor("position_ids", Longs(positions, batch, t)),
        };
        if (session.InputMetadata.ContainsKey("past_key_values.0.key"))
        {
            for (int i = 0; i < config.LayerCount; i++)
            {
                foreach (string kind in new[] { "key", "value" })
                {
                    var (values, dims) = past?[$"present.{i}.{kind}"] ?? ([], [batch, config.ResolvedKeyValueHeadCount, 0, config.HeadSize]);
                    inputs.Add(NamedOnnxValue.CreateFromTensor($"past_key_values.{i}.{kind}", new DenseTensor<float>(values, dims)));
                }
            }
        }

        using var results = session.Run(inputs);
        return results.ToDictionary(r => r.Name, r =>
        {
            var tensor = r.AsTensor<float>();
            return (tensor.ToArray(), tensor.Dimensions.ToArray());
        });
    }

    private static float MaxDifference(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        float max = 0;
        for (int i = 0; i < a.Length; i++)
            max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    [Theory]
    [InlineData(GptStyle.Gpt2, false)]
    [InlineData(GptStyle.Gpt2, true)]
    [InlineData(GptStyle.Modern, false)]
    [InlineData(GptStyle.Modern, true)]
    [InlineData(GptStyle.Gpt2, false, GeluApproximation.None)]   // nanoGPT's exact GELU: an Erf node
    public void LogitsEqualTorchWithin1e4InABatchOfTwoWithPadding(GptStyle style, bool withPast, GeluApproximation gelu = GeluApproximation.Tanh)
    {
        using var model = RandomModel(style, gelu: gelu);
        var config = model.Config;
        string folder = NewFolder("logits");
        Transformer(model).ExportToOnnx(folder, new OnnxExportOptions { WithPastKeyValues = withPast });
        using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFileName));

        // Row 0: 10 real tokens. Row 1: 6 real tokens, left-padded with 4 (positions count real tokens only), then the
        // same 6 tokens right-padded (a second call): both must give the unpadded row's logits at the real positions.
        long[] row0 = [1, 5, 9, 13, 17, 21, 25, 29, 33, 37];
        long[] row1 = [2, 4, 8, 16, 32, 39];
        int t = row0.Length, v = config.ResolvedVocabularySize;
        var want0 = TorchLogits(model, row0);
        var want1 = TorchLogits(model, row1);

        long[] leftIds = [.. row0, 0, 0, 0, 0, .. row1];
        long[] leftMask = [.. Enumerable.Repeat(1L, t), 0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
        long[] leftPositions = [.. Enumerable.Range(0, t).Select(i => (long)i), 0, 0, 0, 0, 0, 1, 2, 3, 4, 5];
        var left = Run(session, config, leftIds, leftMask, leftPositions, 2);
        Assert.Equal([2, t, v], left["logits"].Dims);
        var logits = left["logits"].Values;
        Assert.True(MaxDifference(logits.AsSpan(0, t * v), want0) < 1e-4, $"row 0: max |onnx − torch| = {MaxDifference(logits.AsSpan(0, t * v), want0)}");
        Assert.True(MaxDifference(logits.AsSpan((t + 4) * v, 6 * v), want1) < 1e-4, $"left-padded row 1: max |onnx − torch| = {MaxDifference(logits.AsSpan((t + 4) * v, 6 * v), want1)}");
        Assert.True(want0.Max() - want0.Min() > 1, "the logits are not trivially flat");

        long[] rightIds = [.. row0, .. row1, 0, 0, 0, 0];
        long[] rightMask = [.. Enumerable.Repeat(1L, t), 1, 1, 1, 1, 1, 1, 0, 0, 0, 0];
        long[] rightPositions = [.. Enumerable.Range(0, t).Select(i => (long)i), .. Enumerable.Range(0, t).Select(i => (long)i)];
        var right = Run(session, config, rightIds, rightMask, rightPositions, 2)["logits"].Values;
        Assert.True(MaxDifference(right.AsSpan(t * v, 6 * v), want1) < 1e-4, $"right-padded row 1: max |onnx − torch| = {MaxDifference(right.AsSpan(t * v, 6 * v), want1)}");
        if (withPast)
        {
            var present = left[$"present.{config.LayerCount - 1}.value"];
            Assert.Equal([2, config.ResolvedKeyValueHeadCount, t, config.HeadSize], present.Dims);
        }
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void GreedyGenerationThroughThePastKeyValuesEqualsTextGenerator(GptStyle style)
    {
        using var model = RandomModel(style, seed: 5);
        var config = model.Config;
        var lm = Transformer(model, LmTokenizer.Character(["abcdefghijklmnopqrstuvwxyz ."]));
        string folder = NewFolder("generate");
        lm.ExportToOnnx(folder, new OnnxExportOptions { IncludeTokenizer = false });
        int[] prompt = [3, 1, 4, 1, 5];
        const int NewTokens = 15;   // 5 + 15 = 20 ≤ context 24: no cropping
        var expected = new MLContext(0).Llm().CreateGenerator(lm).GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = NewTokens });

        using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFileName));
        var generated = new List<int>();
        var feed = prompt.Select(t => (long)t).ToArray();
        int length = 0;
        Dictionary<string, (float[] Values, int[] Dims)>? past = null;
        for (int step = 0; step < NewTokens; step++)
        {
            var positions = Enumerable.Range(length, feed.Length).Select(p => (long)p).ToArray();
            var mask = Enumerable.Repeat(1L, length + feed.Length).ToArray();
            past = Run(session, config, feed, mask, positions, 1, past);
            int v = config.ResolvedVocabularySize;
            var last = past["logits"].Values.AsSpan((feed.Length - 1) * v, v);
            int next = 0;
            for (int i = 1; i < v; i++)
            {
                if (last[i] > last[next])
                    next = i;
            }

            Assert.Equal([1, config.ResolvedKeyValueHeadCount, length + feed.Length, config.HeadSize], past["present.0.key"].Dims);
            length += feed.Length;
            generated.Add(next);
            feed = [next];
        }

        Assert.Equal(expected, generated);
        Assert.True(generated.Distinct().Count() > 1, "a random model that repeats one token proves little");
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void OnnxRuntimeGenAIGeneratesTheTextGeneratorsGreedyTokens(GptStyle style)
    {
        using var model = RandomModel(style, seed: 9);
        var lm = Transformer(model, LmTokenizer.Character(["abcdefghijklmnopqrstuvwxyz ."]));
        string folder = NewFolder("genai");
        lm.ExportToOnnx(folder, new OnnxExportOptions { IncludeTokenizer = false });
        int[] prompt = [3, 1, 4, 1, 5];
        const int NewTokens = 15;
        int eos = model.Config.ResolvedVocabularySize - 1;   // the character tokenizer has no end-of-text token: the last id stands in
        var expected = new MLContext(0).Llm().CreateGenerator(lm).GenerateTokens(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = NewTokens, EosTokenIds = [eos] });

        using var genaiModel = new OnnxRuntimeGenAI.Model(folder);
        using var parameters = new OnnxRuntimeGenAI.GeneratorParams(genaiModel);
        parameters.SetSearchOption("max_length", prompt.Length + NewTokens);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new OnnxRuntimeGenAI.Generator(genaiModel, parameters);
        generator.AppendTokens(prompt);
        while (!generator.IsDone())
            generator.GenerateNextToken();
        var sequence = generator.GetSequence(0).ToArray();
        if (sequence[^1] == eos)
            sequence = sequence[..^1];   // GenAI keeps the end-of-sequence token; TextGenerator stops before it
        Assert.Equal([.. prompt, .. expected], sequence);
        Assert.True(expected.Length >= 5, $"only {expected.Length} tokens were generated");
    }

    private sealed class OnnxRow
    {
        [ColumnName("input_ids"), VectorType(8)]
        public long[] InputIds { get; set; } = [];

        [ColumnName("attention_mask"), VectorType(8)]
        public long[] AttentionMask { get; set; } = [];

        [ColumnName("position_ids"), VectorType(8)]
        public long[] PositionIds { get; set; } = [];
    }

    private sealed class OnnxScore
    {
        [ColumnName("logits")]
        public float[] Logits { get; set; } = [];
    }

    [Fact]
    public void MlNetApplyOnnxModelScoresTheExportInAPipeline()
    {
        using var model = RandomModel(GptStyle.Modern, seed: 7);
        string folder = NewFolder("mlnet");
        var ml = new MLContext(0);
        ml.Llm().ExportToOnnx(Transformer(model), folder, withPastKeyValues: false);   // the catalog's flat overload
        long[][] rows = [[1, 2, 3, 4, 5, 6, 7, 8], [9, 8, 7, 6, 5, 4, 3, 2]];
        long[] positions = [0, 1, 2, 3, 4, 5, 6, 7];
        var data = ml.Data.LoadFromEnumerable(rows.Select(r => new OnnxRow { InputIds = r, AttentionMask = [1, 1, 1, 1, 1, 1, 1, 1], PositionIds = positions }));
        var shapes = new Dictionary<string, int[]> { ["input_ids"] = [1, 8], ["attention_mask"] = [1, 8], ["position_ids"] = [1, 8] };
        var pipeline = ml.Transforms.ApplyOnnxModel(["logits"], ["input_ids", "attention_mask", "position_ids"], Path.Combine(folder, OnnxExporter.ModelFileName), shapes, gpuDeviceId: null, fallbackToCpu: false, recursionLimit: 100)
            .Append(ml.Transforms.CopyColumns("Scores", "logits"));
        using var transformer = (IDisposable)pipeline.Fit(data);
        var scored = ml.Data.CreateEnumerable<OnnxScore>(((ITransformer)transformer).Transform(data), reuseRowObject: false).ToList();
        Assert.Equal(2, scored.Count);
        for (int r = 0; r < rows.Length; r++)
        {
            var want = TorchLogits(model, rows[r]);
            Assert.True(MaxDifference(scored[r].Logits, want) < 1e-4, $"row {r}: max |ML.NET − torch| = {MaxDifference(scored[r].Logits, want)}");
        }
    }

    [Theory]
    [InlineData(GptStyle.Gpt2, OnnxWeightQuantization.Int8)]
    [InlineData(GptStyle.Modern, OnnxWeightQuantization.Int8)]
    [InlineData(GptStyle.Gpt2, OnnxWeightQuantization.Int8MatMulNBits)]
    [InlineData(GptStyle.Modern, OnnxWeightQuantization.Int8MatMulNBits)]
    public void Int8WeightsAreAbout4xSmallerAndKeepTheLogitsClose(GptStyle style, OnnxWeightQuantization quantization)
    {
        torch.manual_seed(11);
        using var model = new GptModel(Config(style) with { EmbeddingSize = 64 });   // trained-scale weights (std 0.02)
        model.eval();
        string fp32 = NewFolder("fp32"), int8 = NewFolder("int8");
        Transformer(model).ExportToOnnx(fp32, new OnnxExportOptions { WithPastKeyValues = false });
        Transformer(model).ExportToOnnx(int8, new OnnxExportOptions { WithPastKeyValues = false, Quantization = quantization, BlockSize = 32 });
        double ratio = (double)new FileInfo(Path.Combine(fp32, OnnxExporter.ModelFileName)).Length / new FileInfo(Path.Combine(int8, OnnxExporter.ModelFileName)).Length;
        // Per channel: 1 byte per weight; blocks of 32: 1 + 4/32 bytes. Norms, biases and positions stay fp32 in both.
        Assert.True(ratio > (quantization == OnnxWeightQuantization.Int8 ? 3.0 : 2.8), $"fp32 / int8 file size = {ratio:F2}");

        using var session = new InferenceSession(Path.Combine(int8, OnnxExporter.ModelFileName));
        long[] ids = [1, 5, 9, 13, 17, 21, 25, 29];
        var logits = Run(session, model.Config, ids, [1, 1, 1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6, 7], 1)["logits"].Values;
        var want = TorchLogits(model, ids);
        float spread = want.Max() - want.Min();
        float error = MaxDifference(logits, want);
        Assert.True(error < 0.05f * spread, $"max |int8 − fp32| = {error}, logit spread {spread}");
        Assert.True(error > 0, "int8 logits equal fp32 exactly: the weights were not quantized");
    }

    [Theory]
    [InlineData(18)]
    [InlineData(21)]
    public void LaterOpsetsGiveTheSameLogits(int opset)
    {
        using var model = RandomModel(GptStyle.Modern);   // RMSNorm: ReduceMean takes its axes as an input from opset 18
        string folder = NewFolder("opset");
        OnnxExporter.Export(model, null, folder, new OnnxExportOptions { Opset = opset, WithPastKeyValues = false });
        using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFileName));
        long[] ids = [3, 1, 4, 1, 5, 9];
        var logits = Run(session, model.Config, ids, [1, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5], 1)["logits"].Values;
        Assert.True(MaxDifference(logits, TorchLogits(model, ids)) < 1e-4);
    }

    [Fact]
    public void QuantizeRowsIsPerChannelSymmetric()
    {
        using var scope = NewDisposeScope();
        var weight = tensor(new float[] { 1f, -2f, 0.5f, 0f, 0f, 0f, 0.005f, 0.02f, -0.0127f }, [3, 3]);   // (out 3, in 3)
        var (values, scales) = OnnxExporter.QuantizeRows(weight);
        Assert.Equal([2f / 127, 1f, 0.02f / 127], scales, (a, b) => Math.Abs(a - b) < 1e-9);
        // Transposed (in, out): column o holds row o of the weight.
        Assert.Equal(new sbyte[] { 64, 0, 32, -127, 0, 127, 32, 0, -81 }, values);
    }

    [Fact]
    public void QuantizeBlocksScalesEachBlockAndOffsetsBy128()
    {
        using var scope = NewDisposeScope();
        var weight = tensor(Enumerable.Range(0, 32).Select(i => i < 16 ? (i - 8) / 8f : (i - 16) / 100f).ToArray(), [1, 32]);   // (out 1, in 32)
        var (codes, scales) = OnnxExporter.QuantizeBlocks(weight, 16);
        Assert.Equal([1f / 127, 0.15f / 127], scales, (a, b) => Math.Abs(a - b) < 1e-9);
        Assert.Equal(128 - 127, codes[0]);        // −1 → −127
        Assert.Equal(128, codes[8]);              //  0 → 0
        Assert.Equal(128 + 111, codes[15]);       // 7/8 · 127 = 111.125
        Assert.Equal(128 + 127, codes[31]);       // 0.15 → 127
    }

    [Fact]
    public void LargeWeightsGoToExternalDataThatOnnxRuntimeReads()
    {
        using var model = RandomModel(GptStyle.Gpt2);
        string folder = NewFolder("external");
        OnnxExporter.Export(model, null, folder, new OnnxExportOptions { WithPastKeyValues = false, ExternalDataThreshold = 0 });
        Assert.True(File.Exists(Path.Combine(folder, OnnxExporter.ExternalDataFileName)));
        Assert.True(new FileInfo(Path.Combine(folder, OnnxExporter.ModelFileName)).Length < new FileInfo(Path.Combine(folder, OnnxExporter.ExternalDataFileName)).Length);
        using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFileName));
        long[] ids = [1, 2, 3, 4];
        var logits = Run(session, model.Config, ids, [1, 1, 1, 1], [0, 1, 2, 3], 1)["logits"].Values;
        Assert.True(MaxDifference(logits, TorchLogits(model, ids)) < 1e-4);
    }

    [Fact]
    public void TheExportFolderHoldsTheModelGenAIConfigAndNoTemporaryFolder()
    {
        using var model = RandomModel(GptStyle.Modern);
        string folder = NewFolder("files");
        OnnxExporter.Export(model, null, folder);
        Assert.Equal(["genai_config.json", "model.onnx"], Directory.GetFiles(folder).Select(f => Path.GetFileName(f)!).Order().ToArray());
        Assert.Single(Directory.GetFileSystemEntries(_temp));
        var genai = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, OnnxExporter.GenAIConfigFileName)))!["model"]!;
        Assert.Equal("llama", genai["type"]!.GetValue<string>());
        Assert.Equal(2, genai["decoder"]!["num_key_value_heads"]!.GetValue<int>());
        Assert.Equal("past_key_values.%d.key", genai["decoder"]!["inputs"]!["past_key_names"]!.GetValue<string>());
    }

    [Fact]
    public void TheTokenizersHuggingFaceFilesAreWrittenBesideTheModelAndGenAIReadsThem()
    {
        torch.manual_seed(2);
        using var model = new GptModel(GptConfig.Tiny(vocabularySize: 257, contextLength: 8));
        var tokenizer = LmTokenizer.Bytes();   // the 256 bytes, then <|endoftext|> = id 256
        string folder = NewFolder("tokenizer");
        Transformer(model, tokenizer).ExportToOnnx(folder);
        Assert.Equal(["genai_config.json", "merges.txt", "model.onnx", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"],
            Directory.GetFiles(folder).Select(f => Path.GetFileName(f)!).Order().ToArray());
        var reloaded = LmTokenizer.FromHuggingFace(folder);
        Assert.Equal(tokenizer.Encode("to be, or not"), reloaded.Encode("to be, or not"));
        var genai = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(folder, OnnxExporter.GenAIConfigFileName)))!["model"]!;
        Assert.Equal(256, genai["eos_token_id"]!.GetValue<int>());
        Assert.Equal(257, genai["vocab_size"]!.GetValue<int>());
    }

    [Fact]
    public void BadInputThrowsNamingTheOptionOrPath()
    {
        using var model = RandomModel(GptStyle.Gpt2);
        var opset = Assert.Throws<ArgumentOutOfRangeException>(() => OnnxExporter.Export(model, null, NewFolder("opset"), new OnnxExportOptions { Opset = 13 }));
        Assert.Equal("Opset", opset.ParamName);
        Assert.StartsWith("OnnxExportOptions.Opset is 13; the exporter writes opsets 17 to 21", opset.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => OnnxExporter.Export(model, null, NewFolder("opset"), new OnnxExportOptions { Opset = 22 }));

        string full = NewFolder("full");
        Directory.CreateDirectory(full);
        File.WriteAllText(Path.Combine(full, "other.txt"), "x");
        var nonEmpty = Assert.Throws<IOException>(() => OnnxExporter.Export(model, null, full));
        Assert.Equal($"The ONNX export folder '{full}' exists and is not empty; choose a new folder (nothing was written).", nonEmpty.Message);

        // A folder below a file cannot be created (by root either).
        string file = Path.Combine(_temp, "a-file");
        File.WriteAllText(file, "x");
        var unwritable = Assert.Throws<IOException>(() => OnnxExporter.Export(model, null, Path.Combine(file, "model")));
        Assert.StartsWith($"Cannot write the ONNX export '{Path.Combine(file, "model")}'", unwritable.Message);

        var blockSize = Assert.Throws<ArgumentOutOfRangeException>(() => OnnxExporter.Export(model, null, NewFolder("block"),
            new OnnxExportOptions { Quantization = OnnxWeightQuantization.Int8MatMulNBits, BlockSize = 24 }));
        Assert.Equal("OnnxExportOptions.BlockSize is 24; MatMulNBits takes a power of two from 16 (16, 32, 64, 128, ...). (Parameter 'BlockSize')\nActual value was 24.", blockSize.Message);
        var dims = Assert.Throws<ArgumentException>(() => OnnxExporter.Export(model, null, NewFolder("dims"),
            new OnnxExportOptions { Quantization = OnnxWeightQuantization.Int8MatMulNBits, BlockSize = 64 }));
        Assert.StartsWith("OnnxExportOptions.BlockSize is 64, but 'lm_head' has 32 input features, not a multiple of it", dims.Message);

        using (var adapted = RandomModel(GptStyle.Gpt2))
        {
            adapted.register_parameter("lora_A", nn.Parameter(zeros(2, 2)));
            var unknown = Assert.Throws<NotSupportedException>(() => OnnxExporter.Export(adapted, null, NewFolder("lora")));
            Assert.Equal("The model has weights the ONNX exporter does not know: lora_A; merge adapters into the base weights before exporting.", unknown.Message);
        }

        var character = LmTokenizer.Character(["abc"]);
        var tokenizer = Assert.Throws<NotSupportedException>(() => OnnxExporter.Export(model, character, NewFolder("tok")));
        Assert.Contains("Set OnnxExportOptions.IncludeTokenizer = false", tokenizer.Message, StringComparison.Ordinal);
        Assert.Equal(2, Directory.GetFileSystemEntries(_temp).Length);   // "full" and "a-file": nothing else was written (no temporary folders)
    }
}
