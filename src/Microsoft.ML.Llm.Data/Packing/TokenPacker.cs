// PackTokens: token documents → fixed blocks of ContextLength + 1 tokens for causal LM training.
// Concatenate (GPT-2/nanoGPT: documents joined with EOS, cut into blocks, optional stride), BestFit (Ding et al. 2024:
// context-sized chunks packed best-fit-decreasing over a window of documents, with per-token document ids) and
// Padded (one document per row with a loss mask). An input loss mask (TokenizeChat's: 1 on response tokens only) is
// carried through every mode, so packed conversations keep their masks. Streaming with bounded memory; deterministic.
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>How <c>PackTokens</c> turns documents into blocks.</summary>
public enum PackingMode
{
    /// <summary>Documents joined with the end-of-text token and cut into blocks of ContextLength + 1 (GPT-2, nanoGPT).</summary>
    Concatenate = 0,
    /// <summary>
    /// Documents longer than a block are split into block-sized chunks; chunks are packed best-fit-decreasing into
    /// blocks (Ding et al. 2024), so no document is truncated; a <c>DocumentIds</c> column marks document boundaries.
    /// </summary>
    BestFit = 1,
    /// <summary>One document per row, truncated or padded to the block, with a <c>LossMask</c> column.</summary>
    Padded = 2,
}

/// <summary>Options of <c>PackTokens</c>.</summary>
public sealed class TokenPackerOptions
{
    internal static class Defaults
    {
        public const int ContextLength = 256;
        public const PackingMode Mode = PackingMode.Concatenate;
        public const bool PadLastBlock = false;
        public const int BestFitWindow = 1000;
        public const string DocumentIdsColumnName = "DocumentIds";
        public const string LossMaskColumnName = "LossMask";
    }

    /// <summary>The model's context length T; each block holds T + 1 tokens (inputs and shifted targets). At least 2.</summary>
    public int ContextLength { get; set; } = Defaults.ContextLength;

    /// <summary>How documents become blocks.</summary>
    public PackingMode Mode { get; set; } = Defaults.Mode;

    /// <summary>
    /// The end-of-text id appended after every document. Null (the default) takes the tokenizer's end-of-text id from
    /// the input column's <see cref="LmAnnotations.TokenizerKind"/> annotation; with none, documents are not separated.
    /// </summary>
    public int? EndOfTextId { get; set; }

    /// <summary>The padding id. Null (the default) takes the tokenizer's padding id, else its end-of-text id, else 0.</summary>
    public int? PadId { get; set; }

    /// <summary>Concatenate mode: pad the last partial block (true) or drop it (false, the default, as nanoGPT).</summary>
    public bool PadLastBlock { get; set; } = Defaults.PadLastBlock;

    /// <summary>
    /// Concatenate mode: tokens between the starts of consecutive blocks, 1 to ContextLength + 1. Null (the default)
    /// means ContextLength + 1 (no overlap); smaller values make blocks overlap.
    /// </summary>
    public int? Stride { get; set; }

    /// <summary>BestFit mode: how many documents are packed together (bounds memory). At least 1.</summary>
    public int BestFitWindow { get; set; } = Defaults.BestFitWindow;

    /// <summary>
    /// Name of the per-token document-id column (BestFit mode): within a block, tokens of the same document (chunk) share
    /// an id 0, 1, 2, … in block order, and padding is -1. Empty documents are skipped in every mode.
    /// </summary>
    public string DocumentIdsColumnName { get; set; } = Defaults.DocumentIdsColumnName;

    /// <summary>
    /// Name of the output loss-mask column (true where the token is trained on: a real token, and true in the input
    /// loss mask when there is one), emitted whenever blocks can hold padding or an input loss mask is carried.
    /// </summary>
    public string LossMaskColumnName { get; set; } = Defaults.LossMaskColumnName;

    /// <summary>
    /// An input Boolean-vector column, one value per input token, true where the token is trained on (the loss mask of
    /// <c>TokenizeChat</c>: responses only). Null (the default) takes the column named by the input token column's
    /// <see cref="LmAnnotations.LossMaskColumnKind"/> annotation, if any. When set or found, the output loss mask is
    /// the input mask on real tokens and false on padding, in every mode (Concatenate included); a document that
    /// already ends with the end-of-text id gets no second one, and an added end-of-text takes the mask value of the
    /// document's last token.
    /// </summary>
    public string? InputLossMaskColumnName { get; set; }

    internal TokenPackerOptions Clone() => (TokenPackerOptions)MemberwiseClone();

    internal void Validate()
    {
        if (ContextLength < 2)
        {
            throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength,
                $"TokenPackerOptions.ContextLength must be at least 2; got {ContextLength}.");
        }

        if (!Enum.IsDefined(Mode))
        {
            throw new ArgumentOutOfRangeException(nameof(Mode), Mode,
                $"TokenPackerOptions.Mode {(int)Mode} is not a packing mode; accepted: {string.Join(", ", Enum.GetNames<PackingMode>())}.");
        }

        if (Stride is int stride && (stride < 1 || stride > ContextLength + 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Stride), stride,
                $"TokenPackerOptions.Stride must be between 1 and ContextLength + 1 = {ContextLength + 1}; got {stride}.");
        }

        if (BestFitWindow < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(BestFitWindow), BestFitWindow,
                $"TokenPackerOptions.BestFitWindow must be at least 1; got {BestFitWindow}.");
        }

        if (EndOfTextId is < 0)
            throw new ArgumentOutOfRangeException(nameof(EndOfTextId), EndOfTextId, $"TokenPackerOptions.EndOfTextId must be a token id (>= 0); got {EndOfTextId}.");
        if (PadId is < 0)
            throw new ArgumentOutOfRangeException(nameof(PadId), PadId, $"TokenPackerOptions.PadId must be a token id (>= 0); got {PadId}.");
        ArgumentException.ThrowIfNullOrEmpty(DocumentIdsColumnName);
        ArgumentException.ThrowIfNullOrEmpty(LossMaskColumnName);
        if (InputLossMaskColumnName is { Length: 0 })
            throw new ArgumentException("TokenPackerOptions.InputLossMaskColumnName is empty; name a Boolean-vector column, or leave it null to take the token column's annotation.", nameof(InputLossMaskColumnName));
    }

    internal bool EmitsDocumentIds => Mode == PackingMode.BestFit;

    internal bool EmitsLossMask => Mode != PackingMode.Concatenate || PadLastBlock || InputLossMaskColumnName is not null;
}

/// <summary>What one full pass of <c>PackTokens</c> produced.</summary>
/// <param name="Documents">Documents read.</param>
/// <param name="InputTokens">Tokens read, including the end-of-text separators added.</param>
/// <param name="Blocks">Blocks emitted.</param>
/// <param name="PaddingTokens">Padding slots in the emitted blocks.</param>
/// <param name="TruncatedTokens">Input tokens that appear in no block.</param>
/// <param name="BlockLength">Tokens per block (ContextLength + 1).</param>
public sealed record PackingStatistics(long Documents, long InputTokens, long Blocks, long PaddingTokens, long TruncatedTokens, int BlockLength)
{
    /// <summary>Fraction of emitted token slots that are padding.</summary>
    public double PaddingFraction => Blocks == 0 ? 0 : (double)PaddingTokens / (Blocks * (double)BlockLength);

    /// <summary>Fraction of input tokens that appear in no block.</summary>
    public double TruncatedFraction => InputTokens == 0 ? 0 : (double)TruncatedTokens / InputTokens;
}

/// <summary>Estimator of <c>PackTokens</c>: resolves the end-of-text and padding ids from the tokenizer annotation.</summary>
public sealed class TokenPackerEstimator : IEstimator<TokenPackerTransformer>
{
    private readonly string _outputColumnName;
    private readonly string _inputColumnName;
    private readonly TokenPackerOptions _options;

    internal TokenPackerEstimator(string outputColumnName, string? inputColumnName, TokenPackerOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _outputColumnName = outputColumnName;
        _inputColumnName = inputColumnName ?? outputColumnName;
        _options = options.Clone();
    }

    /// <summary>Creates the transformer; the end-of-text and padding ids default from the input column's tokenizer.</summary>
    public TokenPackerTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var column = SchemaChecks.Int32VectorColumn(input.Schema, _inputColumnName);
        var options = _options.Clone();
        column.TryGetTokenizer(out var tokenizer);
        if (options.InputLossMaskColumnName is null && column.TryGetLossMaskColumn(out var annotatedMask))
            options.InputLossMaskColumnName = annotatedMask;
        if (options.InputLossMaskColumnName is { } maskName)
            CheckLossMaskColumn(input.Schema, maskName);
        options.EndOfTextId ??= tokenizer?.EndOfTextId;
        options.PadId ??= tokenizer?.PadId ?? options.EndOfTextId ?? 0;
        if (tokenizer is not null)
        {
            if (options.EndOfTextId >= tokenizer.VocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(TokenPackerOptions.EndOfTextId), options.EndOfTextId,
                    $"TokenPackerOptions.EndOfTextId {options.EndOfTextId} is outside the vocabulary of the tokenizer of column '{_inputColumnName}'; valid ids are 0 to {tokenizer.VocabularySize - 1}.");
            }

            if (options.PadId >= tokenizer.VocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(TokenPackerOptions.PadId), options.PadId,
                    $"TokenPackerOptions.PadId {options.PadId} is outside the vocabulary of the tokenizer of column '{_inputColumnName}'; valid ids are 0 to {tokenizer.VocabularySize - 1}.");
            }
        }
        return new TokenPackerTransformer(_outputColumnName, _inputColumnName, options);
    }

    /// <summary>The output holds only the packed columns (the row count changes).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        var column = SchemaChecks.Int32VectorColumn(inputSchema, _inputColumnName);
        bool carriesMask = _options.InputLossMaskColumnName is not null || column.Annotations.TryFindColumn(LmAnnotations.LossMaskColumnKind, out _);
        if (_options.InputLossMaskColumnName is { } maskName)
        {
            if (!inputSchema.TryFindColumn(maskName, out var mask))
                throw SchemaChecks.MissingColumn(nameof(inputSchema), maskName);
            if (mask.Kind == SchemaShape.Column.VectorKind.Scalar || mask.ItemType != BooleanDataViewType.Instance)
                throw SchemaChecks.Mismatch(nameof(inputSchema), maskName, "Vector<Boolean>", SchemaChecks.Describe(mask));
        }
        bool emitsMask = _options.EmitsLossMask || carriesMask;
        var columns = new List<SchemaShape.Column>
        {
            ModelPersistence.SchemaColumn(_outputColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Int32, isKey: false,
                LmAnnotations.ShapeOf(column.Annotations.TryFindColumn(LmAnnotations.TokenizerKind, out _), emitsMask, _options.EmitsDocumentIds)),
        };
        if (_options.EmitsDocumentIds)
            columns.Add(ModelPersistence.SchemaColumn(_options.DocumentIdsColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Int32, isKey: false));
        if (emitsMask)
            columns.Add(ModelPersistence.SchemaColumn(_options.LossMaskColumnName, SchemaShape.Column.VectorKind.Vector, BooleanDataViewType.Instance, isKey: false));
        return ModelPersistence.SchemaShapeOf(columns);
    }

    /// <summary>The input loss-mask column must exist and be a Boolean vector.</summary>
    internal static DataViewSchema.Column CheckLossMaskColumn(DataViewSchema schema, string name)
    {
        var column = schema.GetColumnOrNull(name) ?? throw SchemaChecks.MissingColumn(nameof(schema), name);
        if (column.Type is not VectorDataViewType { ItemType: BooleanDataViewType })
            throw SchemaChecks.Mismatch(nameof(schema), name, "Vector<Boolean>", column.Type.ToString() ?? "");
        return column;
    }
}

/// <summary>
/// Transformer of <c>PackTokens</c>. <see cref="ITransformer.Transform"/> packs: its output holds fixed-size blocks of
/// ContextLength + 1 tokens (and, depending on the mode, document ids and a loss mask) and changes the row count;
/// every cursor yields the same rows in the same order. Training and evaluation read this.
/// </summary>
/// <remarks>
/// Packing is a training-time operation over many documents, as ML.NET's label transforms are training-time operations
/// a scoring pipeline leaves out. At inference time a row (a prompt) needs only its own tokens, so the row-to-row mapper
/// (<see cref="GetRowToRowMapper"/>, which a <c>PredictionEngine</c> uses) does not pack: it passes the row through and
/// adds the output column holding that row's tokens, unpadded, with no end-of-text id. A fitted pipeline
/// <c>normalize → tokenize → PackTokens → language model → GenerateText</c> thus works in a <c>PredictionEngine</c>; its
/// <see cref="ITransformer.Transform"/> packs, and <c>GenerateText</c> then generates over the rows packing read.
/// </remarks>
public sealed class TokenPackerTransformer : RowCountChangingTransformerBase, IPersistentComponent<TokenPackerTransformer>
{
    internal const string LoaderSignature = "TokenPackingTransformer";

    internal static readonly ComponentVersion Version =
        new("LMPACKER", InputLossMaskVersion, 0x00010001, LoaderSignature, typeof(TokenPackerTransformer).Assembly);

    /// <summary>The first version that stores <see cref="TokenPackerOptions.InputLossMaskColumnName"/>.</summary>
    private const uint InputLossMaskVersion = 0x00010003;

    static ComponentVersion IPersistentComponent<TokenPackerTransformer>.PersistenceVersion => Version;

    private readonly TokenPackerOptions _options;
    private PackingStatistics? _lastPass;

    internal TokenPackerTransformer(string outputColumnName, string inputColumnName, TokenPackerOptions options)
        : base(Version)
    {
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        _options = options;
    }

    /// <summary>Name of the packed token column.</summary>
    public string OutputColumnName { get; }

    /// <summary>Name of the token column read.</summary>
    public string InputColumnName { get; }

    /// <summary>The model's context length T (blocks hold T + 1 tokens).</summary>
    public int ContextLength => _options.ContextLength;

    /// <summary>The packing mode.</summary>
    public PackingMode Mode => _options.Mode;

    /// <summary>The end-of-text id placed after every document (null: documents are not separated).</summary>
    public int? EndOfTextId => _options.EndOfTextId;

    /// <summary>The padding id.</summary>
    public int PadId => _options.PadId ?? 0;

    /// <summary>The input loss-mask column carried through packing (null: none).</summary>
    public string? InputLossMaskColumnName => _options.InputLossMaskColumnName;

    /// <summary>The output loss-mask column (null when the blocks have none).</summary>
    public string? LossMaskColumnName => _options.EmitsLossMask ? _options.LossMaskColumnName : null;

    /// <summary>The output document-id column (null when the blocks have none).</summary>
    public string? DocumentIdsColumnName => _options.EmitsDocumentIds ? _options.DocumentIdsColumnName : null;

    /// <summary>Statistics of the latest complete pass of a cursor over the output (null before any).</summary>
    public PackingStatistics? LastPassStatistics => Volatile.Read(ref _lastPass);

    private int BlockLength => _options.ContextLength + 1;

    /// <summary>True: as a row-to-row mapper (inference time: a <c>PredictionEngine</c>) each row keeps its own tokens.</summary>
    public override bool IsRowToRowMapper => true;

    /// <summary>
    /// The inference-time mapper: the input row, plus <see cref="OutputColumnName"/> holding the row's own tokens (a copy
    /// of <see cref="InputColumnName"/>, with its tokenizer annotation), not packed, padded or given an end-of-text id.
    /// <see cref="ITransformer.Transform"/> packs (training, evaluation).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The input has no <see cref="InputColumnName"/> column of Int32 vectors.</exception>
    public override IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var tokens = SchemaChecks.Int32VectorColumn(inputSchema, InputColumnName);
        DataViewSchema.Annotations? annotations = null;
        if (tokens.TryGetTokenizer(out var tokenizer))
        {
            var builder = new DataViewSchema.Annotations.Builder();
            LmAnnotations.Add(builder, tokenizer);
            annotations = builder.ToAnnotations();
        }

        AddedColumn[] added = [new(OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32), annotations)];
        return new AppendColumnsMapper(inputSchema, tokens.Index, added, (row, active) =>
        {
            var getTokens = row.GetGetter<VBuffer<int>>(tokens);
            VBuffer<int> source = default;
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> value) =>
            {
                getTokens(ref source);
                source.CopyTo(ref value);
            };
            return [getter];
        });
    }

    private protected override IDataView MakeDataView(IDataView input) => new PackedDataView(this, input);

    /// <summary>
    /// The packed columns only: blocks (with the input's tokenizer annotation and annotations naming the document-id and
    /// loss-mask columns, which the trainer and Evaluate pick up), document ids, loss mask.
    /// </summary>
    private DataViewSchema OutputSchema(DataViewSchema.Column tokenColumn)
    {
        var builder = new DataViewSchema.Builder();
        var annotations = new DataViewSchema.Annotations.Builder();
        if (tokenColumn.TryGetTokenizer(out var tokenizer))
            LmAnnotations.Add(annotations, tokenizer);
        if (_options.EmitsLossMask)
            LmAnnotations.AddColumnName(annotations, LmAnnotations.LossMaskColumnKind, _options.LossMaskColumnName);
        if (_options.EmitsDocumentIds)
            LmAnnotations.AddColumnName(annotations, LmAnnotations.DocumentIdsColumnKind, _options.DocumentIdsColumnName);
        builder.AddColumn(OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32, BlockLength), annotations.ToAnnotations());
        if (_options.EmitsDocumentIds)
            builder.AddColumn(_options.DocumentIdsColumnName, new VectorDataViewType(NumberDataViewType.Int32, BlockLength));
        if (_options.EmitsLossMask)
            builder.AddColumn(_options.LossMaskColumnName, new VectorDataViewType(BooleanDataViewType.Instance, BlockLength));
        return builder.ToSchema();
    }

    // Binary format (version 0x00010001): OutputColumnName, InputColumnName (string each), ContextLength, Mode,
    // EndOfTextId, PadId (int32 each, -1 for null), PadLastBlock (bool), Stride (int32, -1 for null), BestFitWindow
    // (int32), DocumentIdsColumnName, LossMaskColumnName (string each). Since 0x00010003: InputLossMaskColumnName
    // (string, "" for null). No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(OutputColumnName);
        w.Write(InputColumnName);
        w.Write(_options.ContextLength);
        w.Write((int)_options.Mode);
        w.Write(_options.EndOfTextId ?? -1);
        w.Write(_options.PadId ?? -1);
        w.Write(_options.PadLastBlock);
        w.Write(_options.Stride ?? -1);
        w.Write(_options.BestFitWindow);
        w.Write(_options.DocumentIdsColumnName);
        w.Write(_options.LossMaskColumnName);
        w.Write(_options.InputLossMaskColumnName ?? "");
    }

    // Binary format: see SaveState.
    static TokenPackerTransformer IPersistentComponent<TokenPackerTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string output = r.ReadString();
        string input = r.ReadString();
        var options = new TokenPackerOptions
        {
            ContextLength = r.ReadInt32(),
            Mode = (PackingMode)r.ReadInt32(),
        };
        int eos = r.ReadInt32();
        int pad = r.ReadInt32();
        options.EndOfTextId = eos >= 0 ? eos : null;
        options.PadId = pad >= 0 ? pad : null;
        options.PadLastBlock = r.ReadBoolean();
        int stride = r.ReadInt32();
        options.Stride = stride >= 0 ? stride : null;
        options.BestFitWindow = r.ReadInt32();
        options.DocumentIdsColumnName = r.ReadString();
        options.LossMaskColumnName = r.ReadString();
        if (reader.Version >= InputLossMaskVersion)
        {
            string inputMask = r.ReadString();
            options.InputLossMaskColumnName = inputMask.Length == 0 ? null : inputMask;
        }
        options.Validate();
        return new TokenPackerTransformer(output, input, options);
    }

    /// <summary>The packed data; each cursor re-reads the input from the start and packs it the same way.</summary>
    private sealed class PackedDataView : IDataView, IDerivedDataView
    {
        private readonly TokenPackerTransformer _parent;
        private readonly IDataView _input;
        private readonly DataViewSchema.Column _tokenColumn;
        private readonly DataViewSchema.Column? _maskColumn;

        public PackedDataView(TokenPackerTransformer parent, IDataView input)
        {
            _parent = parent;
            _input = input;
            _tokenColumn = SchemaChecks.Int32VectorColumn(input.Schema, parent.InputColumnName);
            _maskColumn = parent.InputLossMaskColumnName is { } mask ? TokenPackerEstimator.CheckLossMaskColumn(input.Schema, mask) : null;
            Schema = parent.OutputSchema(_tokenColumn);
        }

        public DataViewSchema Schema { get; }

        IDataView IDerivedDataView.Source => _input;

        public bool CanShuffle => false;

        public long? GetRowCount() => null;

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            var active = new bool[Schema.Count];
            foreach (var column in columnsNeeded)
                active[column.Index] = true;
            var input = _input.GetRowCursor(_maskColumn is { } m ? [_tokenColumn, m] : [_tokenColumn]);
            var documents = new DocumentReader(input, _tokenColumn, _maskColumn);
            BlockPacker packer = _parent._options.Mode switch
            {
                PackingMode.Concatenate => new ConcatenatePacker(documents, _parent._options),
                PackingMode.BestFit => new BestFitPacker(documents, _parent._options),
                _ => new PaddedPacker(documents, _parent._options),
            };
            return new Cursor(this, packer, active);
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => [GetRowCursor(columnsNeeded, rand)];

        private sealed class Cursor : DataViewRowCursor
        {
            private readonly PackedDataView _view;
            private readonly BlockPacker _packer;
            private readonly bool[] _active;
            private readonly int[] _tokens;
            private readonly int[] _documentIds;
            private readonly bool[] _mask;
            private long _position = -1;
            private bool _done;

            public Cursor(PackedDataView view, BlockPacker packer, bool[] active)
            {
                _view = view;
                _packer = packer;
                _active = active;
                int length = view._parent.BlockLength;
                _tokens = new int[length];
                _documentIds = new int[length];
                _mask = new bool[length];
            }

            public override DataViewSchema Schema => _view.Schema;
            public override long Position => _position;
            public override long Batch => 0;

            public override ValueGetter<DataViewRowId> GetIdGetter()
                => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

            public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

            public override bool MoveNext()
            {
                if (_done)
                    return false;
                if (_packer.TryNextBlock(_tokens, _documentIds, _mask))
                {
                    _position++;
                    return true;
                }
                _done = true;
                _position = -1;
                Volatile.Write(ref _view._parent._lastPass, _packer.Statistics());
                return false;
            }

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                if (!_active[column.Index])
                    throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it in GetRowCursor's columnsNeeded.");
                var options = _view._parent._options;
                Delegate getter;
                if (column.Name == _view._parent.OutputColumnName && column.Index == 0)
                    getter = (ValueGetter<VBuffer<int>>)((ref VBuffer<int> value) => Copy(_tokens, ref value));
                else if (options.EmitsDocumentIds && column.Name == options.DocumentIdsColumnName)
                    getter = (ValueGetter<VBuffer<int>>)((ref VBuffer<int> value) => Copy(_documentIds, ref value));
                else
                    getter = (ValueGetter<VBuffer<bool>>)((ref VBuffer<bool> value) => Copy(_mask, ref value));
                return getter as ValueGetter<TValue> ?? throw new InvalidOperationException(
                    $"Invalid TValue in GetGetter: '{typeof(TValue)}', expected type: '{getter.GetType().GetGenericArguments()[0]}'.");
            }

            private void Copy<T>(T[] source, ref VBuffer<T> value)
            {
                if (_position < 0)
                    throw new InvalidOperationException("The cursor is not positioned on a row; call MoveNext first.");
                var editor = VBufferEditor.Create(ref value, source.Length);
                source.CopyTo(editor.Values);
                value = editor.Commit();
            }

            protected override void Dispose(bool disposing)
            {
                if (disposing)
                    _packer.Dispose();
                base.Dispose(disposing);
            }
        }
    }
}
