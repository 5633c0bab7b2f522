using System.Text.Json.Nodes;
using Microsoft.ML.Llm.Interchange;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.FineTuning;

/// <summary>
/// LoRA: adapters leave the base model unchanged at step 0, only adapters train, merging is exact to float rounding,
/// adapter zips and PEFT folders round-trip, and bad options are named.
/// </summary>
[Collection("Torch")]
public sealed class LoraTests : IDisposable
{
    private const int Vocab = 50;
    private readonly string _temp = Path.Combine(Path.GetTempPath(), "llm-lora-tests-" + Guid.NewGuid().ToString("N"));
    private readonly MLContext _ml = new(0);

    public LoraTests() => Directory.CreateDirectory(_temp);

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private static GptConfig Gpt2Config => GptConfig.Tiny(Vocab);

    private static GptConfig ModernConfig => GptConfig.Tiny(Vocab) with { Style = GptStyle.Modern, HeadCount = 4, KeyValueHeadCount = 2 };

    private static GptModel NewModel(GptConfig config, int seed = 1)
    {
        torch.manual_seed(seed);
        var model = new GptModel(config);
        model.eval();
        return model;
    }

    private CausalLmTransformer Transformer(GptModel model) => new(_ml, model, null, "Tokens", []);

    private static readonly long[,] Ids = { { 1, 5, 9, 2, 7, 3, 11, 4 }, { 8, 8, 0, 13, 21, 34, 5, 6 } };

    private static Tensor Logits(GptModel model)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        return model.forward(tensor(Ids)).MoveToOuterDisposeScope();
    }

    /// <summary>Rows of 17 tokens (context 16) drawn from a fixed pattern, so a few steps lower the loss.</summary>
    private IDataView Data(int rows = 8) =>
        TestData.FromTokens(_ml, Enumerable.Range(0, rows).Select(r => Enumerable.Range(0, 17).Select(i => (i * 3 + r) % Vocab).ToArray()).ToArray());

    private static CausalLmTrainerOptions Options(InitialModel initial, LoraOptions? lora, long steps = 3) => new()
    {
        InitialModel = initial,
        Lora = lora,
        BatchSize = 4,
        MaxSteps = steps,
        WarmupSteps = 0,
        LearningRate = 1e-2,
        EvaluationInterval = 1000,
        LogInterval = 1,
        Seed = 3,
        NumberOfThreads = 1,
    };

    /// <summary>Fills every adapter's B with random values (a trained-looking adapter, so merging has something to add).</summary>
    private static void RandomizeAdapters(GptModel model, int seed = 5)
    {
        torch.manual_seed(seed);
        using var noGrad = no_grad();
        foreach (var (_, _, layer) in model.LoraLayers)
        {
            foreach (var adapter in layer.Adapters)
                adapter.B.copy_(randn(adapter.B.shape) * 0.1);
        }
    }

    [Theory]
    [InlineData(false, "all-linear")]
    [InlineData(true, "all-linear")]
    [InlineData(true, "q_proj,v_proj")]
    [InlineData(false, "c_attn")]
    public void AddingAdaptersLeavesTheLogitsExactlyUnchanged(bool modern, string targets)
    {
        using var model = NewModel(modern ? ModernConfig : Gpt2Config);
        var before = Logits(model);
        model.AddLora(new LoraOptions { TargetModules = targets.Split(','), Dropout = 0.1 });
        var after = Logits(model);
        Assert.True(Same(before, after), "B = 0, so every adapter adds exactly zero");
        Assert.All(model.BaseStateDict(merged: false).Values, t => Assert.False(t.requires_grad));   // the base is frozen
        Assert.All(model.AdapterStateDict().Values, t => Assert.True(t.requires_grad));
    }

    [Fact]
    public void TrainingStartsAtTheBaseLossAndChangesOnlyAdapters()
    {
        using var baseModel = Transformer(NewModel(ModernConfig));
        double baseLoss;
        var data = Data();
        using (var full = _ml.Llm().Trainers.CausalLm(Options(baseModel, null, 1)).Fit(data))
            baseLoss = full.History[0].Loss;
        var baseWeights = baseModel.Model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        var lora = new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0, TargetModules = ["q_proj", "v_proj", "down_proj"] };
        using var tuned = _ml.Llm().Trainers.CausalLm(Options(baseModel, lora, 5)).Fit(data);
        Assert.Equal(baseLoss, tuned.History[0].Loss, 12);          // step 0 is the base model exactly
        Assert.True(tuned.History[^1].Loss < baseLoss - 0.01, $"LoRA lowers the loss: {baseLoss} → {tuned.History[^1].Loss}");

        // Every base tensor bit for bit as before; every adapter B moved away from zero.
        foreach (var (name, tensorValue) in tuned.Model.BaseStateDict(merged: false))
            Assert.True(Same(baseWeights[name], tensorValue), $"base tensor {name} changed");
        var adapters = tuned.Model.LoraLayers.SelectMany(l => l.Layer.Adapters).ToList();
        Assert.Equal(2 * 3, adapters.Count);                           // 2 blocks × (q, v, down)
        Assert.All(adapters, a => Assert.True(a.B.abs().sum().item<float>() > 0, $"adapter {a.Name} trained"));

        // Trainable parameters: r·(in + rows) per adapter. C = 32, kv = 2 heads × 8 = 16, MLP hidden = 4C = 128? (the config's).
        long expected = adapters.Sum(a => 4 * (a.A.shape[1] + a.Size));
        Assert.Equal(expected, tuned.Model.TrainableParameterCount);
        long c = 32, kv = 16, h = ModernConfig.IntermediateSize;
        Assert.Equal(2 * 4 * ((c + c) + (c + kv) + (h + c)), expected);
    }

    [Fact]
    public void AStartsAsPeftInitialisesItAndBAtZero()
    {
        using var kaiming = NewModel(Gpt2Config with { EmbeddingSize = 128 });
        kaiming.AddLora(new LoraOptions { Rank = 16, TargetModules = ["c_attn"] });
        var a = kaiming.LoraLayers.First().Layer.Adapters[0];
        // Kaiming-uniform with a = √5 (nn.Linear's init): U(−1/√in, 1/√in), in = 128.
        double bound = 1 / Math.Sqrt(128);
        Assert.True(a.A.abs().max().item<float>() <= bound);
        Assert.True(a.A.abs().max().item<float>() > 0.95 * bound);
        Assert.Equal(0f, a.B.abs().max().item<float>());

        using var gaussian = NewModel(Gpt2Config with { EmbeddingSize = 128 });
        gaussian.AddLora(new LoraOptions { Rank = 16, TargetModules = ["c_attn"], Initialization = LoraInitialization.Gaussian });
        var g = gaussian.LoraLayers.First().Layer.Adapters[0];
        Assert.InRange(g.A.std().item<float>(), 0.0575, 0.0675);       // N(0, 1/r = 0.0625): 2048 draws, std within 8% (5 σ)
        Assert.Equal(0f, g.B.abs().max().item<float>());
    }

    [Fact]
    public void ALoraRunResumesFromItsCheckpointExactly()
    {
        using var baseModel = Transformer(NewModel(Gpt2Config));
        var lora = new LoraOptions { Rank = 4, Dropout = 0.1, TargetModules = ["c_attn", "mlp.c_fc"] };
        var data = Data();
        var whole = Options(baseModel, lora, 4);
        using var uninterrupted = _ml.Llm().Trainers.CausalLm(whole).Fit(data);

        string dir = Path.Combine(_temp, "ckpt");
        var first = Options(baseModel, lora, 2);
        first.CheckpointDirectory = dir;
        first.CheckpointInterval = 2;
        first.DecaySteps = 4;                      // the same schedule as the 4-step run
        using (_ml.Llm().Trainers.CausalLm(first).Fit(data))
        {
        }

        var second = Options(baseModel, lora, 4);
        second.ResumeFrom = dir;
        using var resumed = _ml.Llm().Trainers.CausalLm(second).Fit(data);
        Assert.Equal(uninterrupted.History.Select(h => h.Loss), resumed.History.Select(h => h.Loss));
        var expected = uninterrupted.Model.AdapterStateDict();
        foreach (var (name, value) in resumed.Model.AdapterStateDict())
            Assert.True(Same(expected[name], value), $"adapter {name} after resuming");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void MergedAndUnmergedLogitsAgree(bool modern, bool rsLora)
    {
        using var model = NewModel(modern ? ModernConfig : Gpt2Config);
        var baseLogits = Logits(model);
        model.AddLora(new LoraOptions { Rank = 4, Alpha = 32, UseRsLora = rsLora, TargetModules = ["all-linear"] });
        Assert.Equal(rsLora ? 32 / 2.0 : 32 / 4.0, model.LoraLayers.First().Layer.Adapters[0].Scaling);
        RandomizeAdapters(model);
        var unmerged = Logits(model);
        Assert.True((unmerged - baseLogits).abs().max().item<float>() > 1e-3, "the adapters change the output");
        model.MergeLora();
        Assert.True(model.IsLoraMerged);
        var merged = Logits(model);
        Assert.True(unmerged.allclose(merged, rtol: 0, atol: 1e-5), $"max difference {(unmerged - merged).abs().max().item<float>()}");
        model.UnmergeLora();
        Assert.False(model.IsLoraMerged);
        Assert.True(unmerged.allclose(Logits(model), rtol: 0, atol: 1e-5));

        // The adapter's forward is B·A·x · scaling on its rows: check one layer against the formula directly.
        var (_, site, layer) = model.LoraLayers.First();
        var x = randn(3, layer.Base.weight!.shape[1]);
        using var noGrad = no_grad();
        var expected = nn.functional.linear(x, layer.Base.weight!, layer.Base.bias);
        foreach (var a in layer.Adapters)
            expected.narrow(1, a.Offset, a.Size).add_(x.matmul(a.A.t()).matmul(a.B.t()) * a.Scaling);
        Assert.True(expected.allclose(layer.call(x), rtol: 0, atol: 1e-5), $"{site}");
    }

    [Fact]
    public void AnAdapterZipNamesItsBaseAndReloadsToTheSameOutputs()
    {
        string baseZip = Path.Combine(_temp, "base.zip");
        using (var baseModel = Transformer(NewModel(Gpt2Config)))
            _ml.Model.Save(baseModel, null, baseZip);
        var lora = new LoraOptions { Rank = 2, Dropout = 0, TargetModules = ["c_attn", "c_proj"], SaveMode = LoraSaveMode.Adapters };
        using var tuned = _ml.Llm().Trainers.CausalLm(Options(baseZip, lora)).Fit(Data());
        Assert.Equal(LoraSaveMode.Adapters, tuned.LoraSaveMode);
        var tunedLogits = Logits(tuned.Model);

        string adapterZip = Path.Combine(_temp, "adapters.zip");
        _ml.Model.Save(tuned, null, adapterZip);
        Assert.True(new FileInfo(adapterZip).Length < new FileInfo(baseZip).Length / 2,
            $"the adapter zip ({new FileInfo(adapterZip).Length} bytes) is much smaller than the base ({new FileInfo(baseZip).Length} bytes)");
        using (var reloaded = (CausalLmTransformer)_ml.Model.Load(adapterZip, out _))
        {
            Assert.NotNull(reloaded.Model.Lora);
            Assert.False(reloaded.Model.IsLoraMerged);
            Assert.True(Same(tunedLogits, Logits(reloaded.Model)), "same base + same adapters = same logits");
            Assert.Equal(tuned.History.Count, reloaded.History.Count);
        }

        // Merged: an ordinary zip of the full model, no adapters, the same outputs within rounding.
        tuned.LoraSaveMode = LoraSaveMode.Merged;
        string mergedZip = Path.Combine(_temp, "merged.zip");
        _ml.Model.Save(tuned, null, mergedZip);
        Assert.False(tuned.Model.IsLoraMerged);                          // saving merged leaves the model as it was
        using (var merged = (CausalLmTransformer)_ml.Model.Load(mergedZip, out _))
        {
            Assert.Null(merged.Model.Lora);
            Assert.True(tunedLogits.allclose(Logits(merged.Model), rtol: 0, atol: 1e-5));
        }

        // A different model at the base's path is refused, naming both hashes.
        using (var other = Transformer(NewModel(Gpt2Config, seed: 2)))
            _ml.Model.Save(other, null, baseZip);
        var ex = Assert.ThrowsAny<Exception>(() => _ml.Model.Load(adapterZip, out _));
        var inner = Innermost(ex);
        Assert.IsType<InvalidDataException>(inner);
        Assert.Matches($"^The LoRA base model '{System.Text.RegularExpressions.Regex.Escape(Path.GetFullPath(baseZip))}' has weights hash 0x[0-9A-F]{{16}}, but the adapters were trained on a base with hash 0x[0-9A-F]{{16}}; the file there is not the base model the adapters were made for. Restore that base model at this path.$", inner.Message);

        // A missing base is named.
        File.Delete(baseZip);
        var missing = Innermost(Assert.ThrowsAny<Exception>(() => _ml.Model.Load(adapterZip, out _)));
        Assert.IsType<FileNotFoundException>(missing);
        Assert.StartsWith($"The model zip holds LoRA adapters whose base model is '{Path.GetFullPath(baseZip)}', which does not exist;", missing.Message);
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is not null)
            e = e.InnerException;
        return e;
    }

    [Theory]
    [InlineData(false, "c_attn,c_proj")]
    [InlineData(true, "q_proj,v_proj")]
    [InlineData(true, "all-linear")]
    public void PeftExportImportRoundTripIsExact(bool modern, string targets)
    {
        string baseFolder = Path.Combine(_temp, "base-hf");
        using var baseModel = Transformer(NewModel(modern ? ModernConfig : Gpt2Config));
        baseModel.SaveHuggingFace(baseFolder);

        using var adapted = Transformer(NewModel(modern ? ModernConfig : Gpt2Config));
        adapted.Model.AddLora(new LoraOptions { Rank = 4, Alpha = 8, Dropout = 0.05, TargetModules = targets.Split(',') });
        RandomizeAdapters(adapted.Model);
        string peft = Path.Combine(_temp, "peft");
        adapted.SaveLoraAdapters(peft);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(peft, "adapter_config.json")))!.AsObject();
        Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
        Assert.Equal(4, config["r"]!.GetValue<int>());
        Assert.Equal(8.0, config["lora_alpha"]!.GetValue<double>());
        Assert.Equal(0.05, config["lora_dropout"]!.GetValue<double>());
        Assert.Equal(!modern, config["fan_in_fan_out"]!.GetValue<bool>());
        var names = SafetensorsFile.ReadHeader(Path.Combine(peft, "adapter_model.safetensors")).Select(e => e.Name).ToHashSet();
        if (modern)
        {
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", names);
            Assert.Contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight", names);
        }
        else
        {
            Assert.Contains("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", names);
            Assert.Contains("base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight", names);
        }

        using var imported = _ml.Llm().LoadLoraAdapter(baseFolder, peft);
        Assert.Equal(LoraSaveMode.Adapters, imported.LoraSaveMode);
        var exported = adapted.Model.AdapterStateDict();
        var read = imported.Model.AdapterStateDict();
        Assert.Equal(exported.Keys.Order(), read.Keys.Order());
        foreach (var (name, value) in exported)
            Assert.True(Same(value, read[name]), $"adapter tensor {name} round-trips exactly");
        // The Hugging Face base has exactly Vocab embedding rows (ours pads to 64): compare the real tokens' logits.
        Assert.True(Same(Logits(adapted.Model).narrow(-1, 0, Vocab), Logits(imported.Model).narrow(-1, 0, Vocab)));
        Assert.Equal(adapted.Model.Lora!.Scaling, imported.Model.Lora!.Scaling);

        // Imported onto a Hugging Face folder, the adapters save alone, naming the folder, and reload onto it.
        string zip = Path.Combine(_temp, "peft-adapters.zip");
        _ml.Model.Save(imported, null, zip);
        using var reloaded = (CausalLmTransformer)_ml.Model.Load(zip, out _);
        Assert.True(Same(Logits(imported.Model), Logits(reloaded.Model)));
    }

    [Fact]
    public void AFusedModernAdapterExportsAsItsHuggingFaceProjections()
    {
        using var adapted = Transformer(NewModel(ModernConfig));
        adapted.Model.AddLora(new LoraOptions { Rank = 2, TargetModules = ["c_attn", "c_fc"] });
        RandomizeAdapters(adapted.Model);
        string peft = Path.Combine(_temp, "peft-fused");
        adapted.SaveLoraAdapters(peft);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(peft, "adapter_config.json")))!.AsObject();
        Assert.Equal(["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"], config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));

        using var imported = _ml.Llm().LoadLoraAdapter(Transformer(NewModel(ModernConfig)), peft);
        Assert.Equal(LoraSaveMode.Merged, imported.LoraSaveMode);                 // a loaded base has no path to name
        Assert.Equal(10, imported.Model.LoraLayers.Sum(l => l.Layer.Adapters.Count));   // 2 blocks × 5 projections
        var expected = Logits(adapted.Model);
        var actual = Logits(imported.Model);
        Assert.True(expected.allclose(actual, rtol: 0, atol: 1e-5), $"max difference {(expected - actual).abs().max().item<float>()}");
    }

    [Fact]
    public void BadOptionsAreNamed()
    {
        using var model = NewModel(Gpt2Config);
        var rank = Assert.Throws<ArgumentOutOfRangeException>(() => model.AddLora(new LoraOptions { Rank = 0 }));
        Assert.StartsWith("LoraOptions.Rank is 0; expected a positive integer (PEFT's r, typically 8 to 64).", rank.Message);
        var alpha = Assert.Throws<ArgumentOutOfRangeException>(() => model.AddLora(new LoraOptions { Alpha = -1 }));
        Assert.StartsWith("LoraOptions.Alpha is -1; expected a positive finite number (PEFT's lora_alpha, typically 1 to 2 × Rank).", alpha.Message);
        var dropout = Assert.Throws<ArgumentOutOfRangeException>(() => model.AddLora(new LoraOptions { Dropout = 1 }));
        Assert.StartsWith("LoraOptions.Dropout is 1; expected a probability in [0, 1).", dropout.Message);
        var target = Assert.Throws<ArgumentException>(() => model.AddLora(new LoraOptions { TargetModules = ["gate_proj"] }));
        Assert.StartsWith("LoraOptions.TargetModules names 'gate_proj', which matches no layer of this GPT-2-style model; accepted names: q_proj, k_proj, v_proj, o_proj, c_attn, attn.c_attn, c_proj, attn.c_proj, c_fc, mlp.c_fc, mlp.c_proj, down_proj, up_proj, all-linear.", target.Message);
        var overlap = Assert.Throws<ArgumentException>(() => model.AddLora(new LoraOptions { TargetModules = ["c_attn", "q_proj"] }));
        Assert.StartsWith("LoraOptions.TargetModules names 'c_attn' and 'q_proj', which adapt overlapping rows of the same layer (c_attn and q_proj); name only one of them.", overlap.Message);
        Assert.Null(model.Lora);                                           // nothing was added by the failed calls
        Assert.Equal(model.ParameterCount, model.TrainableParameterCount);
        var merge = Assert.Throws<InvalidOperationException>(model.MergeLora);
        Assert.Equal("GptModel.MergeLora: this model has no LoRA adapters (train with CausalLmTrainerOptions.Lora, or call AddLora).", merge.Message);

        // The trainer reports them before training: a bad rank at construction, an unknown target and an adapters-only
        // save without a base path at Fit.
        Assert.Throws<ArgumentOutOfRangeException>(() => _ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { Lora = new LoraOptions { Rank = -2 } }));
        using var baseModel = Transformer(NewModel(Gpt2Config));
        var fitTarget = Assert.Throws<ArgumentException>(() => _ml.Llm().Trainers.CausalLm(Options(baseModel, new LoraOptions { TargetModules = ["query"] })).Fit(Data()));
        Assert.StartsWith("LoraOptions.TargetModules names 'query', which matches no layer", fitTarget.Message);
        var save = Assert.Throws<ArgumentException>(() => _ml.Llm().Trainers.CausalLm(Options(baseModel, new LoraOptions { SaveMode = LoraSaveMode.Adapters })).Fit(Data()));
        Assert.StartsWith("LoraOptions.SaveMode is Adapters, which saves the adapters with the path of their base model, but InitialModel is a loaded model; set InitialModel to a model zip or Hugging Face folder path, or use SaveMode Merged.", save.Message);

        // PEFT: a GPT-2 slice adapter cannot be exported; a non-LoRA config and a missing tensor are named.
        using var sliced = Transformer(NewModel(Gpt2Config));
        sliced.Model.AddLora(new LoraOptions { TargetModules = ["q_proj"] });
        var export = Assert.Throws<NotSupportedException>(() => sliced.SaveLoraAdapters(Path.Combine(_temp, "nope")));
        Assert.StartsWith("The adapter 'q_proj' updates part of GPT-2's fused attn.c_attn; PEFT's GPT2LMHeadModel has no such module", export.Message);
        Assert.False(Directory.Exists(Path.Combine(_temp, "nope")));

        using var adapted = Transformer(NewModel(Gpt2Config));
        adapted.Model.AddLora(new LoraOptions { TargetModules = ["c_attn"] });
        string peft = Path.Combine(_temp, "peft-bad");
        adapted.SaveLoraAdapters(peft);
        string configPath = Path.Combine(peft, "adapter_config.json");
        var json = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        json["target_modules"] = new JsonArray("c_attn", "c_fc");
        File.WriteAllText(configPath, json.ToJsonString());
        var lacking = Assert.Throws<InvalidDataException>(() => _ml.Llm().LoadLoraAdapter(baseModel, peft));
        Assert.Equal($"The PEFT adapter file '{Path.Combine(peft, "adapter_model.safetensors")}' lacks tensor 'base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight', which its adapter_config.json implies for this base model.", lacking.Message);
        json["peft_type"] = "IA3";
        File.WriteAllText(configPath, json.ToJsonString());
        var type = Assert.Throws<NotSupportedException>(() => _ml.Llm().LoadLoraAdapter(baseModel, peft));
        Assert.Equal($"The PEFT config '{configPath}' has peft_type 'IA3'; only \"LORA\" adapters are read.", type.Message);
        Assert.Null(baseModel.Model.Lora);                                 // the base given to LoadLoraAdapter is never changed
    }
}
