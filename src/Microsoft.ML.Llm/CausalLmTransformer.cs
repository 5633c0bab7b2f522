using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Data.Internal;
using Microsoft.ML.Runtime;
using TorchSharp;
using static TorchSharp.torch;

[assembly: LoadableClass(typeof(CausalLmTransformer), typeof(ComponentLoader<CausalLmTransformer>), null, typeof(SignatureLoadModel),
    "Causal LM transformer", CausalLmTransformer.LoaderSignature)]

namespace Microsoft.ML.Llm;

/// <summary>
/// The trained language model: scores rows of tokens (adds <c>LogLikelihood</c>, the mean log-likelihood per predicted
/// token, and <c>Perplexity</c>), exposes the model and tokenizer for generation, and saves into / loads from an ML.NET
/// model zip with its weights, tokenizer and training history.
/// </summary>
public sealed class CausalLmTransformer : ITransformer, IPersistentComponent<CausalLmTransformer>, IDisposable
{
    internal const string LoaderSignature = "CausalLmTransformer";

    /// <summary>Name of the added mean log-likelihood column.</summary>
    public const string LogLikelihoodColumnName = "LogLikelihood";

    /// <summary>Name of the added perplexity column.</summary>
    public const string PerplexityColumnName = "Perplexity";

    private readonly IHostEnvironment _env;
    private readonly List<TrainingMetrics> _history;

    internal CausalLmTransformer(IHostEnvironment env, GptModel model, LmTokenizer? tokenizer, string tokensColumnName, IEnumerable<TrainingMetrics> history)
    {
        _env = env;
        Model = model;
        Tokenizer = tokenizer;
        TokensColumnName = tokensColumnName;
        _history = history.ToList();
    }

    static ComponentVersion IPersistentComponent<CausalLmTransformer>.PersistenceVersion =>
        new("CAUSALLM", 0x00010002, 0x00010001, LoaderSignature, typeof(CausalLmTransformer).Assembly);

    /// <summary>The trained GPT (in eval mode).</summary>
    public GptModel Model { get; }

    /// <summary>The model's architecture.</summary>
    public GptConfig Config => Model.Config;

    /// <summary>The tokenizer the model was trained with (null when training was given bare token ids).</summary>
    public LmTokenizer? Tokenizer { get; }

    /// <summary>The token-block column this transformer scores.</summary>
    public string TokensColumnName { get; }

    /// <summary>Metrics of every training step (validation figures on evaluated steps).</summary>
    public IReadOnlyList<TrainingMetrics> History => _history;

    /// <summary>Scoring changes no row count, but a forward pass per row is costly; rows are scored on demand.</summary>
    public bool IsRowToRowMapper => false;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        CheckInput(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        builder.AddColumn(LogLikelihoodColumnName, NumberDataViewType.Single);
        builder.AddColumn(PerplexityColumnName, NumberDataViewType.Single);
        return builder.ToSchema();
    }

    /// <summary>Not supported: scoring is exposed through <see cref="Transform"/>.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) =>
        throw new NotSupportedException("CausalLmTransformer scores rows through Transform (IsRowToRowMapper is false); use mlContext.Llm().CreateGenerator(model) for generation.");

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new ScoredDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>Mean log-likelihood (nats) per predicted token of one row; NaN for fewer than 2 tokens.</summary>
    public float ScoreTokens(ReadOnlySpan<int> tokens)
    {
        if (tokens.Length < 2) return float.NaN;
        Config.CheckTokenIds(tokens, nameof(tokens), "Token id");
        using var scope = NewDisposeScope();
        using var noGrad = torch.no_grad();
        Model.eval();
        double nats = 0;
        int predicted = 0, window = Config.ContextLength;
        // Score windows of at most ContextLength predictions; each window starts where the last one's targets ended.
        for (int start = 0; start < tokens.Length - 1; start += window)
        {
            int n = Math.Min(window, tokens.Length - 1 - start);
            var ids = new long[n + 1];
            for (int i = 0; i <= n; i++) ids[i] = tokens[start + i];
            var all = torch.tensor(ids, new long[] { 1, n + 1 });
            var logits = Model.forward(all[.., ..n]);                                             // (1, n, Vp)
            var loss = nn.functional.cross_entropy(logits.view(n, -1), all[0, 1..], reduction: nn.Reduction.Sum);
            nats += loss.to(ScalarType.Float64).item<double>();
            predicted += n;
        }
        return (float)(-nats / predicted);
    }

    private void CheckInput(DataViewSchema schema)
    {
        var col = schema.GetColumnOrNull(TokensColumnName)
            ?? throw new ArgumentOutOfRangeException(nameof(schema), TokensColumnName, $"Input column '{TokensColumnName}' not found in the data.");
        if (col.Type is not VectorDataViewType { ItemType: var item } || item != NumberDataViewType.Int32)
            throw new ArgumentOutOfRangeException(nameof(schema), TokensColumnName,
                $"Schema mismatch for input column '{TokensColumnName}': expected a vector of Int32 token ids, got {col.Type}.");
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelPersistence.Save(ctx, this);

    void IPersistentComponent<CausalLmTransformer>.Save(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(TokensColumnName);
        Config.Save(w);
        w.Write(Tokenizer is not null);
        if (Tokenizer is not null)
            writer.WriteStream("Tokenizer", Tokenizer.Save);
        writer.WriteStream("Weights", bw => Model.save(bw));
        writer.WriteStream("History", bw => Checkpoint.WriteHistory(bw, _history));
    }

    static CausalLmTransformer IPersistentComponent<CausalLmTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string column = r.ReadString();
        var config = GptConfig.Load(r);
        LmTokenizer? tokenizer = null;
        if (r.ReadBoolean())
            reader.ReadStream("Tokenizer", br => tokenizer = LmTokenizer.Load(br));
        var model = new GptModel(config);
        reader.ReadStream("Weights", br => model.load(br));
        model.eval();
        List<TrainingMetrics> history = [];
        reader.ReadStream("History", br => history = Checkpoint.ReadHistory(br));
        return new CausalLmTransformer(env, model, tokenizer, column, history);
    }

    /// <summary>Releases the model's native tensors.</summary>
    public void Dispose() => Model.Dispose();

    /// <summary>The input plus the two score columns, computed lazily per row.</summary>
    private sealed class ScoredDataView(CausalLmTransformer parent, IDataView input, DataViewSchema schema) : IDataView
    {
        public bool CanShuffle => input.CanShuffle;

        public DataViewSchema Schema => schema;

        public long? GetRowCount() => input.GetRowCount();

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            var needed = columnsNeeded.ToList();
            bool scores = needed.Any(c => c.Index >= input.Schema.Count);
            var inputCols = needed.Where(c => c.Index < input.Schema.Count).Select(c => input.Schema[c.Index]).ToList();
            if (scores) inputCols.Add(input.Schema[parent.TokensColumnName]);
            return new Cursor(parent, input.GetRowCursor(inputCols.Distinct(), rand), schema, needed.Select(c => c.Index).ToHashSet());
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
            [GetRowCursor(columnsNeeded, rand)];
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly CausalLmTransformer _parent;
        private readonly DataViewRowCursor _input;
        private readonly DataViewSchema _schema;
        private readonly HashSet<int> _active;
        private readonly ValueGetter<VBuffer<int>>? _tokens;
        private VBuffer<int> _buffer;
        private long _scoredPosition = -1;
        private float _logLikelihood;

        public Cursor(CausalLmTransformer parent, DataViewRowCursor input, DataViewSchema schema, HashSet<int> active)
        {
            _parent = parent;
            _input = input;
            _schema = schema;
            _active = active;
            var col = input.Schema[parent.TokensColumnName];
            if (input.IsColumnActive(col))
                _tokens = input.GetGetter<VBuffer<int>>(col);
        }

        public override DataViewSchema Schema => _schema;
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override bool MoveNext() => _input.MoveNext();
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int inputCount = _input.Schema.Count;
            if (column.Index < inputCount)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (typeof(TValue) != typeof(float))
                throw new InvalidOperationException($"Column '{column.Name}' is of type Single; requested {typeof(TValue).Name}.");
            bool perplexity = column.Index == inputCount + 1;
            ValueGetter<float> getter = (ref float value) =>
            {
                Score();
                value = perplexity ? MathF.Exp(-_logLikelihood) : _logLikelihood;
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        private void Score()
        {
            if (_scoredPosition == _input.Position) return;
            _tokens!(ref _buffer);
            _logLikelihood = _parent.ScoreTokens(_buffer.DenseValues().ToArray());
            _scoredPosition = _input.Position;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
