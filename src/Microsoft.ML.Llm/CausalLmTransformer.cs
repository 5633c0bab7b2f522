using Microsoft.ML.Llm;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The trained language model: scores rows of tokens (adds <c>LogLikelihood</c>, the mean log-likelihood per predicted
/// token, and <c>Perplexity</c>), exposes the model and tokenizer for generation, and saves into / loads from an ML.NET
/// model zip with its weights, tokenizer and training history.
/// </summary>
public sealed class CausalLmTransformer : AppendColumnsTransformerBase, IPersistentComponent<CausalLmTransformer>, IDisposable
{
    internal const string LoaderSignature = "CausalLmTransformer";

    /// <summary>Name of the added mean log-likelihood column.</summary>
    public const string LogLikelihoodColumnName = "LogLikelihood";

    /// <summary>Name of the added perplexity column.</summary>
    public const string PerplexityColumnName = "Perplexity";

    private readonly IHostEnvironment _env;
    private readonly List<TrainingMetrics> _history;

    internal CausalLmTransformer(IHostEnvironment env, GptModel model, LmTokenizer? tokenizer, string tokensColumnName, IEnumerable<TrainingMetrics> history)
        : base(Version)
    {
        _env = env;
        Model = model;
        Tokenizer = tokenizer;
        TokensColumnName = tokensColumnName;
        _history = history.ToList();
    }

    // 0x00010003 adds the model's precision; 0x00010002 (checksums) and 0x00010001 zips load as Fp32 models.
    private const uint PrecisionVersion = 0x00010003;

    // 0x00010004 adds the LoRA layout (plain weights, or adapters that name their base model).
    private const uint LoraVersion = 0x00010004;

    internal static readonly ComponentVersion Version =
        new("CAUSALLM", LoraVersion, 0x00010001, LoaderSignature, typeof(CausalLmTransformer).Assembly);

    static ComponentVersion IPersistentComponent<CausalLmTransformer>.PersistenceVersion => Version;

    /// <summary>The trained GPT (in eval mode).</summary>
    public GptModel Model { get; }

    /// <summary>
    /// What saving writes when <see cref="Model"/> has LoRA adapters: the adapters merged into the base weights (an
    /// ordinary model zip; the default) or the adapters alone, naming their base model's path and weight hash (a small zip;
    /// loading reads the base from that path). Starts as <see cref="LoraOptions.SaveMode"/>; ignored without adapters.
    /// </summary>
    public LoraSaveMode LoraSaveMode { get; set; }

    /// <summary>The device the model's weights live on; scoring and generation run there.</summary>
    public Device Device => Model.Device;

    /// <summary>The model's architecture.</summary>
    public GptConfig Config => Model.Config;

    /// <summary>The tokenizer the model was trained with (null when training was given bare token ids).</summary>
    public LmTokenizer? Tokenizer { get; }

    /// <summary>The token-block column this transformer scores.</summary>
    public string TokensColumnName { get; }

    /// <summary>Metrics of every training step (validation figures on evaluated steps).</summary>
    public IReadOnlyList<TrainingMetrics> History => _history;

    /// <summary>
    /// True: scoring changes no row count, and a row is scored (one forward pass) only when its score columns are read,
    /// so a <c>PredictionEngine</c> over a pipeline that ends in generation (<c>prep.Append(lm).Append(generate)</c>, where
    /// <c>PackTokens</c> gives each row its own tokens at inference time) runs none for them unless asked.
    /// </summary>
    public override bool IsRowToRowMapper => true;

    /// <summary>Appends the two score columns, computed lazily per row (once per row for both); one cursor at a time.</summary>
    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        var tokens = SchemaChecks.Int32VectorColumn(inputSchema, TokensColumnName);
        AddedColumn[] added = [new(LogLikelihoodColumnName, NumberDataViewType.Single), new(PerplexityColumnName, NumberDataViewType.Single)];
        return new AppendColumnsMapper(inputSchema, tokens.Index, added, (row, active) =>
        {
            var getTokens = row.GetGetter<VBuffer<int>>(tokens);
            VBuffer<int> buffer = default;
            long scoredPosition = -1;
            float logLikelihood = 0;
            void Score()
            {
                if (scoredPosition == row.Position)
                    return;
                getTokens(ref buffer);
                logLikelihood = ScoreTokens(buffer.DenseValues().ToArray());
                scoredPosition = row.Position;
            }
            ValueGetter<float> logLikelihoodGetter = (ref float value) =>
            {
                Score();
                value = logLikelihood;
            };
            ValueGetter<float> perplexityGetter = (ref float value) =>
            {
                Score();
                value = MathF.Exp(-logLikelihood);
            };
            return [logLikelihoodGetter, perplexityGetter];
        })
        {
            SingleCursor = true,
        };
    }

    /// <summary>Mean log-likelihood (nats) per predicted token of one row, computed in the model's
    /// <see cref="GptModel.Precision"/>; NaN for fewer than 2 tokens.</summary>
    public float ScoreTokens(ReadOnlySpan<int> tokens)
    {
        if (tokens.Length < 2)
            return float.NaN;
        Config.CheckTokenIds(tokens, nameof(tokens), "Token id");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        using var autocast = Autocast.Enable(Model.Precision);   // the model's precision; logits come back in fp32
        Model.eval();
        double nats = 0;
        int predicted = 0, window = Config.ContextLength;
        // Score windows of at most ContextLength predictions; each window starts where the last one's targets ended.
        for (int start = 0; start < tokens.Length - 1; start += window)
        {
            int n = Math.Min(window, tokens.Length - 1 - start);
            var ids = new long[n + 1];
            for (int i = 0; i <= n; i++)
                ids[i] = tokens[start + i];
            var all = ModelInputs.Int64(ids, 1, n + 1, Device);
            var logits = Model.forward(all[.., ..n]);                                             // (1, n, Vp)
            var loss = nn.functional.cross_entropy(logits.view(n, -1), all[0, 1..], reduction: nn.Reduction.Sum);
            nats += loss.to(ScalarType.Float64).item<double>();
            predicted += n;
        }
        return (float)(-nats / predicted);
    }

    // Binary format (version 0x00010003): TokensColumnName (string), the GptConfig as GptConfig.Save writes it, has-tokenizer
    // (bool), int32 Precision (TrainingPrecision, since 0x00010003; the weights are fp32 whatever it is). Side entries: "Tokenizer" (LmTokenizer.Save; only when has-tokenizer), "Weights" (the model's state dict as
    // TorchSharp's Module.save writes it), "History" (TrainingHistory.Write).
    //
    // Since 0x00010004, after Precision: int32 LoRA layout (0 = plain weights, 1 = LoRA adapters alone); for 1: int32 Rank,
    // float64 Alpha, float64 Dropout, bool UseRsLora, int32 Initialization, int32 target count + strings (as given; 0 =
    // the architecture's default), string base path, uint64 base weights hash (GptModel.BaseWeightsHash). "Weights" then
    // holds the adapter tensors only. A model with adapters saved Merged is written as plain weights (layout 0).
    private protected override void SaveState(ComponentWriter writer)
    {
        var lora = Model.Lora;
        bool adaptersOnly = lora is not null && LoraSaveMode == LoraSaveMode.Adapters;
        if (adaptersOnly && Model.LoraBase is null)
        {
            throw new InvalidOperationException(
                "CausalLmTransformer.LoraSaveMode is Adapters, but the model's base was not loaded from a file (InitialModel was a loaded model, or none), " +
                "so the adapters could not name it. Set LoraSaveMode = LoraSaveMode.Merged to save the full model.");
        }

        var w = writer.Writer;
        w.Write(TokensColumnName);
        Config.Save(w);
        w.Write(Tokenizer is not null);
        w.Write((int)Model.Precision);
        w.Write(adaptersOnly ? 1 : 0);
        if (adaptersOnly)
        {
            w.Write(lora!.Rank);
            w.Write(lora.Alpha);
            w.Write(lora.Dropout);
            w.Write(lora.UseRsLora);
            w.Write((int)lora.Initialization);
            var targets = lora.TargetModules ?? [];
            w.Write(targets.Count);
            foreach (var t in targets)
                w.Write(t);
            w.Write(Model.LoraBase!.Path);
            w.Write(Model.LoraBase.WeightsHash);
        }

        if (Tokenizer is not null)
            writer.WriteStream("Tokenizer", Tokenizer.Save);
        writer.WriteStream("Weights", bw => Model.SaveWeights(bw, lora is null ? null : LoraSaveMode));
        writer.WriteStream("History", bw => TrainingHistory.Write(bw, _history));
    }

    // Binary format: see SaveState.
    static CausalLmTransformer IPersistentComponent<CausalLmTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string column = r.ReadString();
        var config = GptConfig.Load(r);
        LmTokenizer? tokenizer = null;
        bool hasTokenizer = r.ReadBoolean();
        var precision = TrainingPrecision.Fp32;
        if (reader.Version >= PrecisionVersion)
        {
            int p = r.ReadInt32();
            precision = Enum.IsDefined((TrainingPrecision)p) ? (TrainingPrecision)p
                : throw new FormatException($"CausalLmTransformer: the model zip records precision {p}; this build knows {GptModel.PrecisionNames}. Update the Microsoft.ML.Llm package.");
        }

        int layout = reader.Version >= LoraVersion ? r.ReadInt32() : 0;
        LoraOptions? lora = null;
        LoraBaseModel? loraBase = null;
        if (layout == 1)
        {
            lora = new LoraOptions
            {
                Rank = r.ReadInt32(),
                Alpha = r.ReadDouble(),
                Dropout = r.ReadDouble(),
                UseRsLora = r.ReadBoolean(),
                Initialization = (LoraInitialization)r.ReadInt32(),
                SaveMode = LoraSaveMode.Adapters,
            };
            var targets = new string[r.ReadInt32()];
            for (int i = 0; i < targets.Length; i++)
                targets[i] = r.ReadString();
            lora.TargetModules = targets.Length == 0 ? null : targets;
            loraBase = new LoraBaseModel(r.ReadString(), r.ReadUInt64());
        }
        else if (layout != 0)
        {
            throw new FormatException($"CausalLmTransformer: the model zip records LoRA layout {layout}; this build knows 0 (plain weights) and 1 (adapters). Update the Microsoft.ML.Llm package.");
        }

        if (hasTokenizer)
            reader.ReadStream("Tokenizer", br => tokenizer = LmTokenizer.Load(br));
        GptModel model;
        if (lora is null)
        {
            model = new GptModel(config) { Precision = precision };
            reader.ReadStream("Weights", br => model.load(br));
        }
        else
        {
            model = LoadLoraBase(loraBase!, config);
            model.Precision = precision;
            AddLoraKeepingGenerator(model, lora);
            model.LoraBase = loraBase;
            reader.ReadStream("Weights", br => model.LoadAdapterWeights(br));
        }

        model.eval();
        List<TrainingMetrics> history = [];
        reader.ReadStream("History", br => history = TrainingHistory.Read(br));
        return new CausalLmTransformer(env, model, tokenizer, column, history) { LoraSaveMode = lora is null ? LoraSaveMode.Merged : LoraSaveMode.Adapters };
    }

    /// <summary>Loads the base model an adapters-only zip names, and checks it is the one the adapters were trained on.</summary>
    private static GptModel LoadLoraBase(LoraBaseModel loraBase, GptConfig config)
    {
        if (!File.Exists(loraBase.Path) && !Directory.Exists(loraBase.Path))
        {
            throw new FileNotFoundException(
                $"The model zip holds LoRA adapters whose base model is '{loraBase.Path}', which does not exist; put the base model (model zip or Hugging Face folder) back at that path, or save the adapters merged (LoraSaveMode.Merged).",
                loraBase.Path);
        }

        var (model, _, owned) = InitialModel.FromPath(loraBase.Path).Load();
        if (!owned)
            throw new InvalidOperationException("A base model loaded from a path is owned.");
        try
        {
            if (model.Lora is not null)
                throw new InvalidDataException($"The LoRA base model '{loraBase.Path}' has LoRA adapters itself; a base must be a plain model.");
            if (model.Config != config)
            {
                throw new InvalidDataException(
                    $"The LoRA base model '{loraBase.Path}' has configuration {model.Config}, but the adapters were trained on {config}; it is not the base model the adapters were made for.");
            }

            ulong hash = model.BaseWeightsHash();
            if (hash != loraBase.WeightsHash)
            {
                throw new InvalidDataException(FormattableString.Invariant(
                    $"The LoRA base model '{loraBase.Path}' has weights hash 0x{hash:X16}, but the adapters were trained on a base with hash 0x{loraBase.WeightsHash:X16}; the file there is not the base model the adapters were made for. Restore that base model at this path."));
            }

            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Adds adapters whose weights are about to be overwritten, without moving torch's global generator
    /// (loading a model must not change the random numbers a program draws next).</summary>
    internal static void AddLoraKeepingGenerator(GptModel model, LoraOptions lora)
    {
        using var state = torch.random.get_rng_state();
        model.AddLora(lora);
        torch.random.set_rng_state(state);
    }

    /// <summary>The PEFT adapters of <paramref name="adapterFolder"/> on a copy of <paramref name="baseModel"/> (see <see cref="LlmCatalog.LoadLoraAdapter"/>).</summary>
    internal static CausalLmTransformer LoadPeftAdapter(IHostEnvironment env, InitialModel baseModel, string adapterFolder, string tokensColumnName)
    {
        ArgumentException.ThrowIfNullOrEmpty(adapterFolder);
        var (loaded, tokenizer, owned) = baseModel.Load();
        var model = loaded;
        bool baseIsPlain = loaded.Lora is null;
        if (!owned || !baseIsPlain)
        {
            // Never change the caller's model; a LoRA model passes on its merged weights as the base.
            model = new GptModel(loaded.Config) { Precision = loaded.Precision };
            using (var scope = NewDisposeScope())
            using (torch.no_grad())
            {
                var source = loaded.BaseStateDict(merged: true);
                foreach (var (name, tensor) in model.state_dict())
                    tensor.copy_(source[name]);
            }

            model.to(loaded.Device);
            if (owned)
                loaded.Dispose();
        }

        try
        {
            Interchange.PeftAdapter.Load(model, adapterFolder);
            if (baseModel.Path is { } path && baseIsPlain)
            {
                model.LoraBase = new LoraBaseModel(Path.GetFullPath(path), model.BaseWeightsHash());
            }

            model.eval();
            return new CausalLmTransformer(env, model, tokenizer, tokensColumnName, []) { LoraSaveMode = model.LoraBase is null ? LoraSaveMode.Merged : LoraSaveMode.Adapters };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes the model's LoRA adapters in Hugging Face PEFT's layout — <c>adapter_config.json</c> and
    /// <c>adapter_model.safetensors</c> — which Python's <c>PeftModel.from_pretrained(base, folder)</c> loads onto the
    /// base model (exported with <see cref="SaveHuggingFace"/>); atomic: written under a temporary name, then renamed.
    /// </summary>
    /// <param name="folder">A folder that does not exist yet (or is empty).</param>
    /// <exception cref="InvalidOperationException">The model has no adapters, or they are merged.</exception>
    public void SaveLoraAdapters(string folder) => Interchange.PeftAdapter.Save(Model, folder);

    /// <summary>
    /// Writes the model and its tokenizer as a Hugging Face checkpoint folder that Python's
    /// <c>AutoModelForCausalLM.from_pretrained</c> and <c>AutoTokenizer.from_pretrained</c> load (see
    /// <see cref="HuggingFaceCheckpoint.Save"/>); atomic: written under a temporary name, then renamed.
    /// </summary>
    /// <param name="folder">A folder that does not exist yet (or is empty).</param>
    /// <param name="includeTokenizer">Whether to write the tokenizer files (when the model has a tokenizer).</param>
    public void SaveHuggingFace(string folder, bool includeTokenizer = true) =>
        HuggingFaceCheckpoint.Save(Model, includeTokenizer ? Tokenizer : null, folder);

    /// <summary>
    /// Exports the model as an ONNX model that ONNX Runtime, ONNX Runtime GenAI and ML.NET's <c>ApplyOnnxModel</c> run
    /// (see <see cref="OnnxExporter"/>): <c>model.onnx</c>, the tokenizer's Hugging Face files and <c>genai_config.json</c>,
    /// written under a temporary name, then renamed.
    /// </summary>
    /// <param name="folder">A folder that does not exist yet (or is empty).</param>
    /// <param name="options">Opset, past key/value inputs, int8 weights; null for the defaults.</param>
    public void ExportToOnnx(string folder, OnnxExportOptions? options = null) =>
        OnnxExporter.Export(Model, Tokenizer, folder, options);

    /// <summary>Releases the model's native tensors.</summary>
    public void Dispose() => Model.Dispose();
}
