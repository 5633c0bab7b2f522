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

    internal static readonly ComponentVersion Version =
        new("CAUSALLM", PrecisionVersion, 0x00010001, LoaderSignature, typeof(CausalLmTransformer).Assembly);

    static ComponentVersion IPersistentComponent<CausalLmTransformer>.PersistenceVersion => Version;

    /// <summary>The trained GPT (in eval mode).</summary>
    public GptModel Model { get; }

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

    /// <summary>Scoring changes no row count, but a forward pass per row is costly; rows are scored on demand.</summary>
    public override bool IsRowToRowMapper => false;

    /// <summary>Not supported: scoring is exposed through <see cref="AppendColumnsTransformerBase.Transform"/>.</summary>
    public override IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) =>
        throw new NotSupportedException("CausalLmTransformer scores rows through Transform (IsRowToRowMapper is false); use mlContext.Llm().CreateGenerator(model) for generation.");

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
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(TokensColumnName);
        Config.Save(w);
        w.Write(Tokenizer is not null);
        w.Write((int)Model.Precision);
        if (Tokenizer is not null)
            writer.WriteStream("Tokenizer", Tokenizer.Save);
        writer.WriteStream("Weights", bw => Model.save(bw));
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

        if (hasTokenizer)
            reader.ReadStream("Tokenizer", br => tokenizer = LmTokenizer.Load(br));
        var model = new GptModel(config) { Precision = precision };
        reader.ReadStream("Weights", br => model.load(br));
        model.eval();
        List<TrainingMetrics> history = [];
        reader.ReadStream("History", br => history = TrainingHistory.Read(br));
        return new CausalLmTransformer(env, model, tokenizer, column, history);
    }

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
