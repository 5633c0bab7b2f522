// PackTokens: token documents → fixed blocks of ContextLength + 1 tokens for causal LM training.
// Concatenate (GPT-2/nanoGPT: documents joined with EOS, cut into blocks, optional stride), BestFit (Ding et al. 2024:
// context-sized chunks packed best-fit-decreasing over a window of documents, with per-token document ids) and
// Padded (one document per row with a loss mask). Streaming with bounded memory; deterministic.
using System.Buffers;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Data.Internal;
using Microsoft.ML.Runtime;

[assembly: LoadableClass(typeof(TokenPackingTransformer), typeof(ComponentLoader<TokenPackingTransformer>), null, typeof(SignatureLoadModel),
    "Token packing transformer", TokenPackingTransformer.LoaderSignature)]

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
public sealed class PackingOptions
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

    /// <summary>Name of the loss-mask column (true where the token is real), emitted whenever blocks can hold padding.</summary>
    public string LossMaskColumnName { get; set; } = Defaults.LossMaskColumnName;

    internal PackingOptions Clone() => (PackingOptions)MemberwiseClone();

    internal void Validate()
    {
        if (ContextLength < 2)
            throw new ArgumentOutOfRangeException(nameof(ContextLength), ContextLength,
                $"PackingOptions.ContextLength must be at least 2; got {ContextLength}.");
        if (!Enum.IsDefined(Mode))
            throw new ArgumentOutOfRangeException(nameof(Mode), Mode,
                $"PackingOptions.Mode {(int)Mode} is not a packing mode; accepted: {string.Join(", ", Enum.GetNames<PackingMode>())}.");
        if (Stride is int stride && (stride < 1 || stride > ContextLength + 1))
            throw new ArgumentOutOfRangeException(nameof(Stride), stride,
                $"PackingOptions.Stride must be between 1 and ContextLength + 1 = {ContextLength + 1}; got {stride}.");
        if (BestFitWindow < 1)
            throw new ArgumentOutOfRangeException(nameof(BestFitWindow), BestFitWindow,
                $"PackingOptions.BestFitWindow must be at least 1; got {BestFitWindow}.");
        if (EndOfTextId is < 0)
            throw new ArgumentOutOfRangeException(nameof(EndOfTextId), EndOfTextId, $"PackingOptions.EndOfTextId must be a token id (>= 0); got {EndOfTextId}.");
        if (PadId is < 0)
            throw new ArgumentOutOfRangeException(nameof(PadId), PadId, $"PackingOptions.PadId must be a token id (>= 0); got {PadId}.");
        ArgumentException.ThrowIfNullOrEmpty(DocumentIdsColumnName);
        ArgumentException.ThrowIfNullOrEmpty(LossMaskColumnName);
    }

    internal bool EmitsDocumentIds => Mode == PackingMode.BestFit;

    internal bool EmitsLossMask => Mode != PackingMode.Concatenate || PadLastBlock;
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
public sealed class TokenPackingEstimator : IEstimator<TokenPackingTransformer>
{
    private readonly string _outputColumnName;
    private readonly string _inputColumnName;
    private readonly PackingOptions _options;

    internal TokenPackingEstimator(string outputColumnName, string? inputColumnName, PackingOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _outputColumnName = outputColumnName;
        _inputColumnName = inputColumnName ?? outputColumnName;
        _options = options.Clone();
    }

    /// <summary>Creates the transformer; the end-of-text and padding ids default from the input column's tokenizer.</summary>
    public TokenPackingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var column = TokenPackingTransformer.CheckInput(input.Schema, _inputColumnName);
        var options = _options.Clone();
        column.TryGetTokenizer(out var tokenizer);
        options.EndOfTextId ??= tokenizer?.EndOfTextId;
        options.PadId ??= tokenizer?.PadId ?? options.EndOfTextId ?? 0;
        if (tokenizer is not null)
        {
            if (options.EndOfTextId >= tokenizer.VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(PackingOptions.EndOfTextId), options.EndOfTextId,
                    $"PackingOptions.EndOfTextId {options.EndOfTextId} is outside the vocabulary of the tokenizer of column '{_inputColumnName}'; valid ids are 0 to {tokenizer.VocabularySize - 1}.");
            if (options.PadId >= tokenizer.VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(PackingOptions.PadId), options.PadId,
                    $"PackingOptions.PadId {options.PadId} is outside the vocabulary of the tokenizer of column '{_inputColumnName}'; valid ids are 0 to {tokenizer.VocabularySize - 1}.");
        }
        return new TokenPackingTransformer(_outputColumnName, _inputColumnName, options);
    }

    /// <summary>The output holds only the packed columns (the row count changes).</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (!inputSchema.TryFindColumn(_inputColumnName, out var column))
            throw SchemaErrors.MissingColumn(nameof(inputSchema), _inputColumnName);
        if (column.Kind == SchemaShape.Column.VectorKind.Scalar || column.ItemType != NumberDataViewType.Int32)
            throw SchemaErrors.Mismatch(nameof(inputSchema), _inputColumnName, "Vector<Int32>", SchemaErrors.Describe(column));
        var columns = new List<SchemaShape.Column>
        {
            ModelPersistence.SchemaColumn(_outputColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Int32, isKey: false,
                column.Annotations.TryFindColumn(LmAnnotations.TokenizerKind, out _) ? LmAnnotations.Shape : null),
        };
        if (_options.EmitsDocumentIds)
            columns.Add(ModelPersistence.SchemaColumn(_options.DocumentIdsColumnName, SchemaShape.Column.VectorKind.Vector, NumberDataViewType.Int32, isKey: false));
        if (_options.EmitsLossMask)
            columns.Add(ModelPersistence.SchemaColumn(_options.LossMaskColumnName, SchemaShape.Column.VectorKind.Vector, BooleanDataViewType.Instance, isKey: false));
        return ModelPersistence.SchemaShapeOf(columns);
    }
}

/// <summary>
/// Transformer of <c>PackTokens</c>. Its output holds fixed-size blocks of ContextLength + 1 tokens (and, depending
/// on the mode, document ids and a loss mask); it changes the row count, so it is not a row-to-row mapper. Every
/// cursor yields the same rows in the same order.
/// </summary>
public sealed class TokenPackingTransformer : ITransformer, IPersistentComponent<TokenPackingTransformer>
{
    internal const string LoaderSignature = "TokenPackingTransformer";

    static ComponentVersion IPersistentComponent<TokenPackingTransformer>.PersistenceVersion =>
        new("LMPACKER", 0x00010002, 0x00010001, LoaderSignature, typeof(TokenPackingTransformer).Assembly);

    private readonly PackingOptions _options;
    private PackingStatistics? _lastPass;

    internal TokenPackingTransformer(string outputColumnName, string inputColumnName, PackingOptions options)
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

    /// <summary>Statistics of the latest complete pass of a cursor over the output (null before any).</summary>
    public PackingStatistics? LastPassStatistics => Volatile.Read(ref _lastPass);

    /// <summary>False: packing changes the number of rows.</summary>
    public bool IsRowToRowMapper => false;

    private int BlockLength => _options.ContextLength + 1;

    internal static DataViewSchema.Column CheckInput(DataViewSchema schema, string inputColumnName)
    {
        var column = schema.GetColumnOrNull(inputColumnName) ?? throw SchemaErrors.MissingColumn("inputSchema", inputColumnName);
        if (column.Type is not VectorDataViewType { ItemType: var item } || item != NumberDataViewType.Int32)
            throw SchemaErrors.Mismatch("inputSchema", inputColumnName, "Vector<Int32>", column.Type.ToString() ?? "");
        return column;
    }

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        var column = CheckInput(inputSchema, InputColumnName);
        var builder = new DataViewSchema.Builder();
        var annotations = new DataViewSchema.Annotations.Builder();
        if (column.TryGetTokenizer(out var tokenizer))
            LmAnnotations.Add(annotations, tokenizer);
        builder.AddColumn(OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32, BlockLength), annotations.ToAnnotations());
        if (_options.EmitsDocumentIds)
            builder.AddColumn(_options.DocumentIdsColumnName, new VectorDataViewType(NumberDataViewType.Int32, BlockLength));
        if (_options.EmitsLossMask)
            builder.AddColumn(_options.LossMaskColumnName, new VectorDataViewType(BooleanDataViewType.Instance, BlockLength));
        return builder.ToSchema();
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new PackedDataView(this, input);
    }

    /// <summary>Not supported: packing changes the number of rows.</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
        => throw new InvalidOperationException("PackTokens changes the number of rows; it is not a row-to-row mapper (IsRowToRowMapper is false).");

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelPersistence.Save(ctx, this);

    void IPersistentComponent<TokenPackingTransformer>.Save(ComponentWriter writer)
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
    }

    static TokenPackingTransformer IPersistentComponent<TokenPackingTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string output = r.ReadString();
        string input = r.ReadString();
        var options = new PackingOptions
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
        options.Validate();
        return new TokenPackingTransformer(output, input, options);
    }

    /// <summary>The packed data; each cursor re-reads the input from the start and packs it the same way.</summary>
    private sealed class PackedDataView : IDataView
    {
        private readonly TokenPackingTransformer _parent;
        private readonly IDataView _input;
        private readonly DataViewSchema.Column _tokenColumn;

        public PackedDataView(TokenPackingTransformer parent, IDataView input)
        {
            _parent = parent;
            _input = input;
            _tokenColumn = CheckInput(input.Schema, parent.InputColumnName);
            Schema = parent.GetOutputSchema(input.Schema);
        }

        public DataViewSchema Schema { get; }

        public bool CanShuffle => false;

        public long? GetRowCount() => null;

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            var active = new bool[Schema.Count];
            foreach (var column in columnsNeeded)
                active[column.Index] = true;
            var input = _input.GetRowCursor([_tokenColumn]);
            var documents = new DocumentReader(input, _tokenColumn);
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

/// <summary>Reads token documents from an input cursor, one reusable buffer at a time.</summary>
internal sealed class DocumentReader : IDisposable
{
    private readonly DataViewRowCursor _cursor;
    private readonly ValueGetter<VBuffer<int>> _getter;
    private VBuffer<int> _buffer;
    private int[] _dense = [];

    public DocumentReader(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        _cursor = cursor;
        _getter = cursor.GetGetter<VBuffer<int>>(column);
    }

    /// <summary>Moves to the next document; its tokens stay valid until the next call.</summary>
    public bool TryRead(out ReadOnlySpan<int> tokens)
    {
        if (!_cursor.MoveNext())
        {
            tokens = default;
            return false;
        }
        _getter(ref _buffer);
        if (_buffer.IsDense)
        {
            tokens = _buffer.GetValues();
            return true;
        }
        if (_dense.Length < _buffer.Length)
            _dense = new int[_buffer.Length];
        _buffer.CopyTo(_dense);
        tokens = _dense.AsSpan(0, _buffer.Length);
        return true;
    }

    public void Dispose() => _cursor.Dispose();
}

/// <summary>Produces blocks from documents, counting what a pass does.</summary>
internal abstract class BlockPacker : IDisposable
{
    protected readonly DocumentReader Documents;
    protected readonly int BlockLength;
    protected readonly int? EndOfText;
    protected readonly int Pad;
    protected long DocumentCount, InputTokens, Blocks, PaddingTokens, TruncatedTokens;

    protected BlockPacker(DocumentReader documents, PackingOptions options)
    {
        Documents = documents;
        BlockLength = options.ContextLength + 1;
        EndOfText = options.EndOfTextId;
        Pad = options.PadId ?? options.EndOfTextId ?? 0;
    }

    /// <summary>Fills the next block: tokens, per-token document ids (-1 on padding) and the loss mask (false on padding).</summary>
    public abstract bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask);

    public PackingStatistics Statistics() => new(DocumentCount, InputTokens, Blocks, PaddingTokens, TruncatedTokens, BlockLength);

    /// <summary>Pads positions from <paramref name="filled"/> to the end of the block.</summary>
    protected void PadFrom(int filled, Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        tokens[filled..].Fill(Pad);
        documentIds[filled..].Fill(-1);
        mask[filled..].Clear();
        PaddingTokens += tokens.Length - filled;
    }

    public virtual void Dispose() => Documents.Dispose();
}

/// <summary>GPT-2/nanoGPT: one token stream (documents joined by end-of-text), cut into blocks every Stride tokens.</summary>
internal sealed class ConcatenatePacker : BlockPacker
{
    private readonly int _stride;
    private readonly bool _padLast;
    private int[] _buffer;
    private int[] _docIds;
    private int _start, _end;           // live window of the stream in _buffer
    private long _streamStart;          // stream index of _buffer[_start]
    private long _emittedUntil;         // stream index of the first token no block has held
    private bool _exhausted;

    public ConcatenatePacker(DocumentReader documents, PackingOptions options) : base(documents, options)
    {
        _stride = options.Stride ?? BlockLength;
        _padLast = options.PadLastBlock;
        _buffer = ArrayPool<int>.Shared.Rent(BlockLength * 2);
        _docIds = ArrayPool<int>.Shared.Rent(BlockLength * 2);
    }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        while (_end - _start < BlockLength && !_exhausted)
        {
            if (!Documents.TryRead(out var document))
            {
                _exhausted = true;
                break;
            }
            Append(document);
        }
        int available = _end - _start;
        if (available >= BlockLength)
        {
            _buffer.AsSpan(_start, BlockLength).CopyTo(tokens);
            RelativeDocumentIds(_docIds.AsSpan(_start, BlockLength), documentIds);
            mask.Fill(true);
            _emittedUntil = _streamStart + BlockLength;
            Advance(_stride);
            Blocks++;
            return true;
        }
        // The input is exhausted: the partial tail holds `available` tokens, of which those before _emittedUntil were in a block.
        long fresh = _streamStart + available - Math.Max(_emittedUntil, _streamStart);
        if (available > 0 && fresh > 0)
        {
            if (_padLast)
            {
                _buffer.AsSpan(_start, available).CopyTo(tokens);
                RelativeDocumentIds(_docIds.AsSpan(_start, available), documentIds);
                mask[..available].Fill(true);
                PadFrom(available, tokens, documentIds, mask);
                Blocks++;
            }
            else
            {
                TruncatedTokens += fresh;
            }
        }
        _start = _end;
        _streamStart += available;
        _emittedUntil = _streamStart;
        return _padLast && available > 0 && fresh > 0;
    }

    private static void RelativeDocumentIds(ReadOnlySpan<int> source, Span<int> destination)
    {
        int first = source[0];
        for (int i = 0; i < source.Length; i++)
            destination[i] = source[i] - first;
    }

    private void Append(ReadOnlySpan<int> document)
    {
        if (document.Length == 0)
            return;   // an empty document adds nothing, not even a separator
        int count = document.Length + (EndOfText is null ? 0 : 1);
        Reserve(count);
        int id = (int)DocumentCount;
        document.CopyTo(_buffer.AsSpan(_end));
        if (EndOfText is int eos)
            _buffer[_end + document.Length] = eos;
        _docIds.AsSpan(_end, count).Fill(id);
        _end += count;
        DocumentCount++;
        InputTokens += count;
    }

    private void Reserve(int count)
    {
        if (_end + count <= _buffer.Length)
            return;
        int live = _end - _start;
        if (live + count <= _buffer.Length && _start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, live);
            Array.Copy(_docIds, _start, _docIds, 0, live);
        }
        else
        {
            int size = Math.Max(_buffer.Length * 2, live + count);
            var buffer = ArrayPool<int>.Shared.Rent(size);
            var docIds = ArrayPool<int>.Shared.Rent(size);
            Array.Copy(_buffer, _start, buffer, 0, live);
            Array.Copy(_docIds, _start, docIds, 0, live);
            ArrayPool<int>.Shared.Return(_buffer);
            ArrayPool<int>.Shared.Return(_docIds);
            _buffer = buffer;
            _docIds = docIds;
        }
        _start = 0;
        _end = live;
    }

    private void Advance(int count)
    {
        _start += count;
        _streamStart += count;
    }

    public override void Dispose()
    {
        base.Dispose();
        ArrayPool<int>.Shared.Return(_buffer);
        ArrayPool<int>.Shared.Return(_docIds);
        _buffer = [];
        _docIds = [];
    }
}

/// <summary>One document per block: truncated or padded, end-of-text after the document when it fits.</summary>
internal sealed class PaddedPacker : BlockPacker
{
    public PaddedPacker(DocumentReader documents, PackingOptions options) : base(documents, options) { }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        while (Documents.TryRead(out var document))
        {
            if (document.Length == 0)
                continue;   // an empty document makes no row
            int count = document.Length + (EndOfText is null ? 0 : 1);
            DocumentCount++;
            InputTokens += count;
            int kept = Math.Min(document.Length, BlockLength);
            document[..kept].CopyTo(tokens);
            int filled = kept;
            if (EndOfText is int eos && filled < BlockLength)
                tokens[filled++] = eos;
            TruncatedTokens += count - filled;
            documentIds[..filled].Clear();
            mask[..filled].Fill(true);
            PadFrom(filled, tokens, documentIds, mask);
            Blocks++;
            return true;
        }
        return false;
    }
}

/// <summary>
/// Best-fit-decreasing packing (Ding et al. 2024, "Fewer Truncations Improve Language Modeling"): each document
/// (+ end-of-text) is split into chunks of at most one block; the chunks of a window of documents are sorted by length
/// (longest first, ties in input order) and each goes into the open block with the least room that still fits it.
/// </summary>
internal sealed class BestFitPacker : BlockPacker
{
    private readonly int _window;
    private readonly Queue<Bin> _ready = new();
    private bool _exhausted;

    public BestFitPacker(DocumentReader documents, PackingOptions options) : base(documents, options)
        => _window = options.BestFitWindow;

    private sealed class Bin(int capacity)
    {
        public readonly List<(int Start, int Length, int[] Tokens)> Chunks = [];
        public int Free = capacity;
    }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        if (_ready.Count == 0 && !_exhausted)
            PackWindow();
        if (!_ready.TryDequeue(out var bin))
            return false;
        int filled = 0;
        for (int i = 0; i < bin.Chunks.Count; i++)
        {
            var (start, length, source) = bin.Chunks[i];
            source.AsSpan(start, length).CopyTo(tokens[filled..]);
            documentIds.Slice(filled, length).Fill(i);
            mask.Slice(filled, length).Fill(true);
            filled += length;
        }
        PadFrom(filled, tokens, documentIds, mask);
        Blocks++;
        return true;
    }

    private void PackWindow()
    {
        var chunks = new List<(int Start, int Length, int[] Tokens)>();
        int read = 0;
        while (read < _window)
        {
            if (!Documents.TryRead(out var document))
            {
                _exhausted = true;
                break;
            }
            if (document.Length == 0)
                continue;
            int count = document.Length + (EndOfText is null ? 0 : 1);
            read++;
            DocumentCount++;
            InputTokens += count;
            var owned = new int[count];
            document.CopyTo(owned);
            if (EndOfText is int eos)
                owned[^1] = eos;
            for (int start = 0; start < count; start += BlockLength)
                chunks.Add((start, Math.Min(BlockLength, count - start), owned));
        }
        if (chunks.Count == 0)
            return;
        // Longest first; the stable sort keeps input order among equal lengths (determinism).
        var order = Enumerable.Range(0, chunks.Count).OrderByDescending(i => chunks[i].Length).ToArray();
        // binsByFree[f] = open bins with exactly f free slots, oldest first.
        var binsByFree = new Queue<Bin>?[BlockLength + 1];
        var bins = new List<Bin>();
        foreach (int index in order)
        {
            var chunk = chunks[index];
            Bin? target = null;
            for (int free = chunk.Length; free < BlockLength; free++)
            {
                if (binsByFree[free] is { Count: > 0 } queue)
                {
                    target = queue.Dequeue();
                    break;
                }
            }
            if (target is null)
            {
                target = new Bin(BlockLength);
                bins.Add(target);
            }
            target.Chunks.Add(chunk);
            target.Free -= chunk.Length;
            if (target.Free > 0)
                (binsByFree[target.Free] ??= new Queue<Bin>()).Enqueue(target);
        }
        foreach (var bin in bins)
            _ready.Enqueue(bin);
    }
}
