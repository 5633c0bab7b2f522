using System.Text;
using System.Text.Json.Nodes;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Interchange;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Interchange;

/// <summary>
/// Hugging Face checkpoint interchange against the fixtures of tests/fixture-makers/make_hf_fixtures.py: a tiny GPT-2
/// (fp32, one file, vocab.json + merges.txt) and a tiny Llama (bf16, two shards with an index, GQA 4/2, untied head,
/// rope_theta 5000, rms_norm_eps 1e-6, tokenizer.json), with the logits, tokens and greedy continuation of the reference.
/// </summary>
[Collection("Torch")]
public sealed class HuggingFaceCheckpointTests : IDisposable
{
    private static readonly string FixtureRoot = Path.Combine(AppContext.BaseDirectory, "Fixtures", "hf");
    private readonly string _temp = Path.Combine(Path.GetTempPath(), "llm-hf-tests-" + Guid.NewGuid().ToString("N"));

    public HuggingFaceCheckpointTests() => Directory.CreateDirectory(_temp);

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private static string Fixture(string name) => Path.Combine(FixtureRoot, name);

    private static JsonObject Expected(string name) => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture(name), "expected.json")))!.AsObject();

    private static int[] Ints(JsonNode node) => node.AsArray().Select(n => n!.GetValue<int>()).ToArray();

    private string CopyFixture(string name)
    {
        string target = Path.Combine(_temp, name + "-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(target);
        foreach (string file in Directory.GetFiles(Fixture(name)))
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        return target;
    }

    private static Tensor Logits(GptModel model, long[,] ids)
    {
        var idx = tensor(ids.Cast<long>().ToArray(), [ids.GetLength(0), ids.GetLength(1)]);
        using var noGrad = no_grad();
        return model.forward(idx)[.., .., ..model.VocabularySize];
    }

    private static long[,] InputIds(JsonObject expected)
    {
        var rows = expected["input_ids"]!.AsArray();
        var ids = new long[rows.Count, rows[0]!.AsArray().Count];
        for (int b = 0; b < rows.Count; b++)
        {
            for (int t = 0; t < ids.GetLength(1); t++)
                ids[b, t] = rows[b]![t]!.GetValue<long>();
        }

        return ids;
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void ImportedLogitsEqualTheReferenceWithin1e4(string name)
    {
        using var scope = NewDisposeScope();
        using var lm = new MLContext(0).Llm().LoadHuggingFace(Fixture(name));
        var expected = Expected(name);
        var logits = Logits(lm.Model, InputIds(expected));
        var reference = expected["logits"]!.AsArray();
        var want = tensor(reference.SelectMany(s => s!.AsArray().SelectMany(r => r!.AsArray().Select(v => v!.GetValue<float>()))).ToArray(), logits.shape);
        double maxError = (logits - want).abs().max().item<float>();
        Assert.True(maxError < 1e-4, $"max |ours - reference| = {maxError}");
        Assert.True(want.abs().max().item<float>() > 1, "the reference logits are not trivially small");
    }

    [Fact]
    public void LlamaConfigMapsGqaUntiedHeadRopeThetaAndEpsilon()
    {
        using var lm = new MLContext(0).Llm().LoadHuggingFace(Fixture("llama-tiny"));
        var c = lm.Config;
        Assert.Equal(GptStyle.Modern, c.Style);
        Assert.Equal((4, 2, false, 5000.0, 1e-6, 64, 64, 297, 1), (c.HeadCount, c.KeyValueHeadCount!.Value, c.TiedEmbeddings, c.RopeTheta, c.NormEpsilon, c.IntermediateSize, c.ContextLength, c.VocabularySize!.Value, c.VocabularyPaddingMultiple));
        using var gpt2 = new MLContext(0).Llm().LoadHuggingFace(Fixture("gpt2-tiny"));
        Assert.Equal((GptStyle.Gpt2, true, 0.1, 128, 32), (gpt2.Config.Style, gpt2.Config.TiedEmbeddings, gpt2.Config.Dropout, gpt2.Config.IntermediateSize, gpt2.Config.ContextLength));
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void TokenizerAndGreedyGenerationMatchTheReference(string name)
    {
        var ml = new MLContext(0);
        using var lm = ml.Llm().LoadHuggingFace(Fixture(name));
        var expected = Expected(name);
        var tokenizer = lm.Tokenizer!;
        Assert.Equal(296, tokenizer.EndOfTextId);
        Assert.Equal(297, tokenizer.VocabularySize);
        Assert.Equal(Ints(expected["prompt_ids"]!), tokenizer.Encode(expected["prompt"]!.GetValue<string>()));
        Assert.Equal(Ints(expected["tokenized_corpus"]!), tokenizer.Encode("The fox sleeps. 123 tensors!"));
        var generated = ml.Llm().CreateGenerator(lm).GenerateTokens(Ints(expected["prompt_ids"]!), new GenerationOptions { DoSample = false, MaxNewTokens = 10 });
        Assert.Equal(Ints(expected["greedy_ids"]!), generated);
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void ExportThenImportIsExact(string name)
    {
        using var scope = NewDisposeScope();
        var ml = new MLContext(0);
        using var original = ml.Llm().LoadHuggingFace(Fixture(name));
        string folder = Path.Combine(_temp, "export");
        original.SaveHuggingFace(folder);
        Assert.Equal(new[] { "config.json", "generation_config.json", "merges.txt", "model.safetensors", "special_tokens_map.json", "tokenizer_config.json", "vocab.json" },
            Directory.GetFiles(folder).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal).ToArray());
        using var reloaded = ml.Llm().LoadHuggingFace(folder);
        Assert.Equal(original.Config, reloaded.Config);
        var a = original.Model.state_dict();
        var b = reloaded.Model.state_dict();
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        Assert.All(a, kv => Assert.True(kv.Value.allclose(b[kv.Key], 0, 0), kv.Key));
        var ids = InputIds(Expected(name));
        Assert.True(Logits(original.Model, ids).allclose(Logits(reloaded.Model, ids), 0, 0));
        string text = "The quick brown fox sleeps. 123 tensors!";
        Assert.Equal(original.Tokenizer!.Encode(text), reloaded.Tokenizer!.Encode(text));
        Assert.Equal(original.Tokenizer.EndOfTextId, reloaded.Tokenizer.EndOfTextId);
    }

    [Theory]
    [InlineData(GptStyle.Gpt2, null, true)]
    [InlineData(GptStyle.Modern, 1, false)]
    [InlineData(GptStyle.Modern, null, true)]
    [InlineData(GptStyle.Gpt2, null, true, GeluApproximation.None)]   // nanoGPT's exact GELU: activation_function "gelu"
    public void OurModelsExportAndReimportWithTheSameLogits(GptStyle style, int? kvHeads, bool tied, GeluApproximation gelu = GeluApproximation.Tanh)
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(5);
        // Vocabulary 259 padded to 320 rows: the export drops the padding, the import has exactly 259 rows.
        var config = GptConfig.Tiny(259) with { Style = style, KeyValueHeadCount = kvHeads, TiedEmbeddings = tied, Bias = style == GptStyle.Gpt2 ? false : null, GeluApproximation = gelu };
        using var model = new GptModel(config);
        model.eval();
        var tokenizer = LmTokenizer.Bytes(padToken: "<|pad|>");
        string folder = Path.Combine(_temp, "ours");
        HuggingFaceCheckpoint.Save(model, tokenizer, folder);
        using var reloaded = HuggingFaceCheckpoint.LoadModel(folder);
        var ids = new long[,] { { 1, 200, 3, 258, 17, 9, 44, 0 } };
        Assert.Equal(0.0, (Logits(model, ids) - Logits(reloaded, ids)).abs().max().item<float>(), 6);
        Assert.Equal(kvHeads, reloaded.Config.KeyValueHeadCount);
        Assert.Equal(tied, reloaded.Config.TiedEmbeddings);
        Assert.Equal(gelu, reloaded.Config.GeluApproximation);
        if (style == GptStyle.Gpt2)
            Assert.Equal(gelu == GeluApproximation.Tanh ? "gelu_new" : "gelu", JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!["activation_function"]!.GetValue<string>());
        var hfTokenizer = HuggingFaceCheckpoint.LoadTokenizer(folder, reloaded);
        string text = "héllo, wörld 😀 the end";
        Assert.Equal(tokenizer.Encode(text), hfTokenizer.Encode(text));
        Assert.Equal((256, 257), (hfTokenizer.EndOfTextId, hfTokenizer.PadId));

        // By hand: LLM_HF_EXPORT_DIR=/some/dir dotnet test --filter OurModelsExport... leaves the exports and our logits
        // there for tests/fixture-makers/check_hf_export.py, which loads them with Python (transformers when installed).
        if (Environment.GetEnvironmentVariable("LLM_HF_EXPORT_DIR") is { Length: > 0 } exportDir)
        {
            string keep = Path.Combine(exportDir, $"{style}-kv{kvHeads?.ToString() ?? "all"}-{(tied ? "tied" : "untied")}{(gelu == GeluApproximation.Tanh ? "" : "-gelu")}");
            if (Directory.Exists(keep))
                Directory.Delete(keep, recursive: true);
            HuggingFaceCheckpoint.Save(model, tokenizer, keep);
            var logits = Logits(model, ids)[0];
            var rows = new JsonArray();
            for (int t = 0; t < logits.shape[0]; t++)
                rows.Add(new JsonArray(logits[t].data<float>().Select(v => (JsonNode?)JsonValue.Create(v)).ToArray()));
            var ours = new JsonObject { ["input_ids"] = new JsonArray(new JsonArray(Enumerable.Range(0, ids.GetLength(1)).Select(i => (JsonNode?)JsonValue.Create(ids[0, i])).ToArray())), ["logits"] = new JsonArray(rows), ["text"] = text, ["text_ids"] = new JsonArray(tokenizer.Encode(text).Select(i => (JsonNode?)JsonValue.Create(i)).ToArray()) };
            File.WriteAllText(Path.Combine(exportDir, Path.GetFileName(keep) + ".ours.json"), ours.ToJsonString());
        }
    }

    [Fact]
    public void ExportIsAtomicAndRefusesWhatItCannotWrite()
    {
        using var model = new GptModel(GptConfig.Tiny(40));
        string target = Path.Combine(_temp, "char");
        var character = LmTokenizer.Character(["abcdefghijklmnopqrstuvwxyz .,;:!?'\"-()ABCDE"]);
        var ex = Assert.Throws<NotSupportedException>(() => HuggingFaceCheckpoint.Save(model, character, target));
        Assert.Equal("A Character tokenizer cannot be written in the Hugging Face layout; Bpe (GPT-2 pattern), Bytes and SentencePiece tokenizers can. Export the model without its tokenizer (includeTokenizer: false).", ex.Message);
        Assert.False(Directory.Exists(target));

        using var gqa = new GptModel(GptConfig.Tiny(40) with { KeyValueHeadCount = 1 });
        var gqaError = Assert.Throws<NotSupportedException>(() => HuggingFaceCheckpoint.Save(gqa, null, target));
        Assert.StartsWith("GptConfig.KeyValueHeadCount is 1; GPT2LMHeadModel has no grouped-query attention", gqaError.Message);
        Assert.False(Directory.Exists(target));

        Directory.CreateDirectory(target);
        File.WriteAllText(Path.Combine(target, "keep.txt"), "x");
        var io = Assert.Throws<IOException>(() => HuggingFaceCheckpoint.Save(model, null, target));
        Assert.Equal($"The export folder '{target}' exists and is not empty; choose a new folder (nothing was written).", io.Message);
        Assert.Single(Directory.GetFileSystemEntries(_temp));   // no temporary folder left beside it
    }

    [Fact]
    public void BadConfigsAreRejectedNamingTheFileFieldAndAcceptedValues()
    {
        string folder = CopyFixture("gpt2-tiny");
        string config = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json["architectures"] = new JsonArray("MistralForCausalLM");
        json["model_type"] = "mistral";
        File.WriteAllText(config, json.ToJsonString());
        var unknown = Assert.Throws<NotSupportedException>(() => HuggingFaceCheckpoint.LoadModel(folder));
        Assert.Equal($"The config file '{config}' describes architecture 'MistralForCausalLM' (model_type 'mistral'); supported are GPT2LMHeadModel (model_type 'gpt2') and LlamaForCausalLM (model_type 'llama').", unknown.Message);

        json["architectures"] = new JsonArray("GPT2LMHeadModel");
        json["activation_function"] = "relu";
        File.WriteAllText(config, json.ToJsonString());
        var activation = Assert.Throws<NotSupportedException>(() => HuggingFaceCheckpoint.LoadModel(folder));
        Assert.Equal($"The config file '{config}' has \"activation_function\": relu; this library supports \"gelu_new\" (GELU, tanh approximation), as GPT-2, or \"gelu\" (exact GELU).", activation.Message);

        json["activation_function"] = "gelu_new";
        json["n_embd"] = 48;
        File.WriteAllText(config, json.ToJsonString());
        var shape = Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder));
        Assert.Equal($"Tensor 'transformer.wte.weight' in '{Path.Combine(folder, "model.safetensors")}' has shape [297, 32]; config.json implies [297, 48].", shape.Message);
    }

    [Fact]
    public void MissingExtraMisShapedAndWrongDtypeTensorsAreNamed()
    {
        string folder = CopyFixture("gpt2-tiny");
        string file = Path.Combine(folder, "model.safetensors");
        Dictionary<string, Tensor> original;
        using (var scope = NewDisposeScope())
        {
            original = SafetensorsFile.Load(file);
        }

        void Write(Dictionary<string, Tensor> tensors)
        {
            File.Delete(file);
            SafetensorsFile.Save(file, tensors);
        }

        var missing = new Dictionary<string, Tensor>(original);
        missing.Remove("transformer.h.1.mlp.c_fc.bias");
        Write(missing);
        Assert.Equal($"The checkpoint in '{folder}' lacks 1 tensor(s) that its config.json needs: transformer.h.1.mlp.c_fc.bias.",
            Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);

        var extra = new Dictionary<string, Tensor>(original) { ["transformer.h.2.ln_1.weight"] = ones(32) };
        Write(extra);
        Assert.Equal($"The checkpoint in '{folder}' has 1 tensor(s) that a GPT2LMHeadModel with its config.json does not have: transformer.h.2.ln_1.weight.",
            Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);

        var misShaped = new Dictionary<string, Tensor>(original) { ["transformer.h.0.attn.c_attn.weight"] = zeros(96, 32) };
        Write(misShaped);
        Assert.Equal($"Tensor 'transformer.h.0.attn.c_attn.weight' in '{file}' has shape [96, 32]; config.json implies [32, 96].",
            Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);

        var wrongType = new Dictionary<string, Tensor>(original) { ["transformer.wpe.weight"] = zeros([32, 32], dtype: ScalarType.Int64) };
        Write(wrongType);
        Assert.Equal($"Tensor 'transformer.wpe.weight' in '{file}' has dtype I64; accepted dtypes are F32, F16 and BF16 (converted to F32 on load).",
            Assert.Throws<NotSupportedException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);

        // F16 weights load, converted to fp32 (the values are those of the rounded weights).
        var half = original.ToDictionary(kv => kv.Key, kv => kv.Value.to(ScalarType.Float16));
        Write(half);
        using var model = HuggingFaceCheckpoint.LoadModel(folder);
        Assert.True(model.state_dict()["wpe.weight"].allclose(original["transformer.wpe.weight"].to(ScalarType.Float16).to(ScalarType.Float32), 0, 0));
        foreach (var t in original.Values)
            t.Dispose();
    }

    [Fact]
    public void TruncatedAndCorruptedSafetensorsFilesAreRejectedNamingTheFile()
    {
        string folder = CopyFixture("gpt2-tiny");
        string file = Path.Combine(folder, "model.safetensors");
        byte[] good = File.ReadAllBytes(file);
        int headerLength = (int)BitConverter.ToUInt64(good, 0);
        string prefix = $"The safetensors file '{file}' is malformed: ";

        void Expect(byte[] bytes, string detail)
        {
            File.WriteAllBytes(file, bytes);
            var ex = Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder));
            Assert.StartsWith(prefix, ex.Message);
            Assert.Contains(detail, ex.Message);
        }

        Expect(good[..5], "it is 5 bytes long, shorter than the 8-byte header length");
        Expect(good[..(8 + headerLength / 2)], $"its header length is {headerLength} bytes, but the file holds {headerLength / 2} bytes after the length");
        Expect(good[..(good.Length - 100)], "(truncated file?)");
        Expect([.. good, 1, 2, 3], "its tensors cover");
        var huge = (byte[])good.Clone();
        BitConverter.GetBytes(ulong.MaxValue).CopyTo(huge, 0);
        Expect(huge, "its header length is 18446744073709551615 bytes");
        var brokenJson = (byte[])good.Clone();
        brokenJson[8] = (byte)'[';
        Expect(brokenJson, "its header is not");
        // An offset changed inside the JSON: the tensor's byte range no longer matches its shape, or overlaps.
        string header = Encoding.UTF8.GetString(good, 8, headerLength);
        string shifted = header.Replace("\"data_offsets\":[0,", "\"data_offsets\":[4,", StringComparison.Ordinal);
        Assert.NotEqual(header, shifted);
        var offsets = (byte[])good.Clone();
        Encoding.UTF8.GetBytes(shifted).CopyTo(offsets, 8);
        Expect(offsets, "data_offsets [4,");
    }

    [Fact]
    public void ShardIndexAndTokenizerFileErrorsNameTheFile()
    {
        string folder = CopyFixture("llama-tiny");
        string index = Path.Combine(folder, "model.safetensors.index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["weight_map"]!["model.norm.weight"] = "model-00001-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        Assert.Equal($"The shard index '{index}' lists tensor 'model.norm.weight' in 'model-00001-of-00002.safetensors', but it is in 'model-00002-of-00002.safetensors'.",
            Assert.Throws<InvalidDataException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);
        json["weight_map"]!["model.norm.weight"] = "model-00003-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        Assert.Equal($"The shard 'model-00003-of-00002.safetensors' named by '{index}' (for tensor 'model.norm.weight') does not exist.",
            Assert.Throws<FileNotFoundException>(() => HuggingFaceCheckpoint.LoadModel(folder)).Message);

        string tokenizerFile = Path.Combine(folder, "tokenizer.json");
        var tokenizer = JsonNode.Parse(File.ReadAllText(tokenizerFile))!.AsObject();
        tokenizer["model"]!["type"] = "Unigram";
        File.WriteAllText(tokenizerFile, tokenizer.ToJsonString());
        Assert.Equal($"The tokenizer file '{tokenizerFile}' has model type 'Unigram'; this library reads byte-level BPE (\"BPE\") tokenizer.json files only.",
            Assert.Throws<FormatException>(() => LmTokenizer.FromHuggingFace(folder)).Message);
        tokenizer["model"]!["type"] = "BPE";
        tokenizer["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace" };
        File.WriteAllText(tokenizerFile, tokenizer.ToJsonString());
        Assert.Equal($"The tokenizer file '{tokenizerFile}' has the pre-tokenizer 'Metaspace'; this library reads ByteLevel (GPT-2) and Split (cl100k regex) only.",
            Assert.Throws<FormatException>(() => LmTokenizer.FromHuggingFace(folder)).Message);
        File.Delete(tokenizerFile);
        Assert.Equal($"The Hugging Face folder '{folder}' holds no tokenizer: expected tokenizer.json, vocab.json with merges.txt, or tokenizer.model.",
            Assert.Throws<FileNotFoundException>(() => LmTokenizer.FromHuggingFace(folder)).Message);
    }

    [Fact]
    public void AGpt2FolderWithoutTokenizerFilesGetsGpt2sEncoding()
    {
        string folder = Path.Combine(_temp, "gpt2-no-tokenizer");
        using (var model = new GptModel(GptConfig.Tiny(50257) with { EmbeddingSize = 8, HeadCount = 2, LayerCount = 1 }))
            HuggingFaceCheckpoint.Save(model, null, folder);
        using var lm = new MLContext(0).Llm().LoadHuggingFace(folder);
        Assert.Equal(LmTokenizerKind.Tiktoken, lm.Tokenizer!.Kind);
        Assert.Equal(new[] { 15496, 995 }, lm.Tokenizer.Encode("Hello world"));
        Assert.Equal(50256, lm.Tokenizer.EndOfTextId);
    }

    [Fact]
    public void ImportAndExportLeaveNoLiveTensors()
    {
        // Counted after a full collection: a module's parameter getters hand out handles that finalizers release.
        static long Live()
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            return torch.Tensor.TotalCount;
        }

        // Building and disposing a GptModel of the fixture's shape leaves a fixed number of handles behind (TorchSharp's
        // Module.Dispose, outside this feature); loading the checkpoint must leave exactly that many, and export none.
        GptConfig config;
        using (var loaded = HuggingFaceCheckpoint.LoadModel(Fixture("llama-tiny")))
            config = loaded.Config;
        new GptModel(config).Dispose();
        long before = Live();
        new GptModel(config).Dispose();
        long perModel = Live() - before;

        before = Live();
        HuggingFaceCheckpoint.LoadModel(Fixture("llama-tiny")).Dispose();
        Assert.Equal(perModel, Live() - before);

        using var model = HuggingFaceCheckpoint.LoadModel(Fixture("llama-tiny"));
        HuggingFaceCheckpoint.Save(model, null, Path.Combine(_temp, "leak0"));
        before = Live();
        long thread = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 1; i <= 3; i++)
            HuggingFaceCheckpoint.Save(model, null, Path.Combine(_temp, "leak" + i));
        Assert.Equal(before, Live());
        Assert.Equal(thread, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void ATokenizerLargerThanTheEmbeddingIsRejected()
    {
        string folder = CopyFixture("gpt2-tiny");
        string config = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json["vocab_size"] = 200;
        File.WriteAllText(config, json.ToJsonString());
        // Shrink the embedding to 200 rows so that the weights match config.json; the tokenizer still has 297 tokens.
        string file = Path.Combine(folder, "model.safetensors");
        using (var scope = NewDisposeScope())
        {
            var tensors = SafetensorsFile.Load(file);
            tensors["transformer.wte.weight"] = tensors["transformer.wte.weight"][..200].contiguous();
            File.Delete(file);
            SafetensorsFile.Save(file, tensors);
        }

        var ex = Assert.Throws<InvalidDataException>(() => new MLContext(0).Llm().LoadHuggingFace(folder));
        Assert.Equal($"The tokenizer in '{folder}' has 297 tokens, but the model's vocabulary (config.json vocab_size) is 200; a tokenizer must not produce ids past the embedding.", ex.Message);
    }

    [Fact]
    public void FineTuningFromAnImportedGpt2StartsAtItsLoss()
    {
        // The fixture's GPT-2 has dropout 0.1 (GPT-2's default, which fine-tuning keeps); set it to 0 so that the step-0
        // loss is the deterministic loss of the imported weights.
        string folder = CopyFixture("gpt2-tiny");
        string config = Path.Combine(folder, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        json["resid_pdrop"] = 0.0;
        File.WriteAllText(config, json.ToJsonString());

        var ml = new MLContext(0);
        using var imported = ml.Llm().LoadHuggingFace(folder);
        var block = imported.Tokenizer!.Encode("The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!")[..17];
        double importedLoss = -imported.ScoreTokens(block);
        var data = TestData.FromTokens(ml, block);
        // Fp32: the imported model scores in fp32, and the first step's loss must equal that to 5 decimals.
        var options = new CausalLmTrainerOptions { InitialModel = folder, BatchSize = 1, MaxSteps = 4, WarmupSteps = 0, LearningRate = 1e-2, Seed = 1, Precision = TrainingPrecision.Fp32 };
        using var tuned = ml.Llm().Trainers.CausalLm(options).Fit(data);
        Assert.Equal(importedLoss, tuned.History[0].Loss, 5);
        Assert.True(tuned.History[^1].Loss < importedLoss, "fine-tuning lowers the loss on the batch it trains on");
        Assert.Equal(imported.Config, tuned.Config);
        Assert.NotNull(tuned.Tokenizer);

        // The same from the loaded transformer; the transformer's own weights are not changed.
        var before = imported.Model.state_dict()["h.0.attn.c_attn.weight"].clone();
        using var tuned2 = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = imported, BatchSize = 1, MaxSteps = 1, WarmupSteps = 0, Seed = 1, Precision = TrainingPrecision.Fp32 }).Fit(data);
        Assert.Equal(importedLoss, tuned2.History[0].Loss, 5);
        Assert.True(before.allclose(imported.Model.state_dict()["h.0.attn.c_attn.weight"], 0, 0));

        // The same from a model zip holding the imported transformer.
        string zip = Path.Combine(_temp, "imported.zip");
        ml.Model.Save(imported, null, zip);
        using var tuned3 = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = zip, BatchSize = 1, MaxSteps = 1, WarmupSteps = 0, Seed = 1, Precision = TrainingPrecision.Fp32 }).Fit(data);
        Assert.Equal(importedLoss, tuned3.History[0].Loss, 5);
        var missingPath = Path.Combine(_temp, "nothing-here");
        Assert.Equal($"CausalLmTrainerOptions.InitialModel is '{missingPath}', which does not exist; expected a model zip file or a Hugging Face checkpoint folder.",
            Assert.Throws<FileNotFoundException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = missingPath, MaxSteps = 1 }).Fit(data)).Message);

        // Data outside the vocabulary, or Model and InitialModel together, are refused.
        var outside = TestData.FromTokens(ml, [.. block[..16], 300]);
        var vocab = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = folder, MaxSteps = 1 }).Fit(outside));
        Assert.Contains("has token id 300 in column 'Tokens', but the model's vocabulary has 297 tokens", vocab.Message);
        var both = Assert.Throws<ArgumentException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = folder, Model = GptConfig.Tiny(), MaxSteps = 1 }).Fit(data));
        Assert.StartsWith($"Options 'Model' and 'InitialModel' are both set; fine-tuning takes the architecture of InitialModel ('{folder}'), so leave Model null.", both.Message);
        var longBlocks = TestData.FromTokens(ml, Enumerable.Range(0, 40).Select(i => i % 250).ToArray());
        var context = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { InitialModel = folder, MaxSteps = 1 }).Fit(longBlocks));
        Assert.Contains("GptConfig.ContextLength = 32", context.Message);
    }
}
