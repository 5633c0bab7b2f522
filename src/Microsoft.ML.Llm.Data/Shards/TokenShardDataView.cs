namespace Microsoft.ML.Llm.Data;

/// <summary>
/// An <see cref="IDataView"/> over memory-mapped token shards (<c>mlContext.Data.LoadTokenShards</c>): a <c>Tokens</c>
/// column of fixed-length blocks (Vector&lt;Int32&gt;, with the saved tokenizer as its annotation, so the trainer finds
/// it as it does after PackTokens), plus <c>DocumentIds</c> and <c>LossMask</c> when the shards recorded them. Rows are
/// read on demand; nothing is materialised. The trainer recognises this view and reads blocks straight from the shards.
/// </summary>
public sealed class TokenShardDataView : IDataView
{
    /// <summary>The token column's name.</summary>
    public const string TokensColumnName = "Tokens";

    /// <summary>The document-id column's name (PackTokens' name).</summary>
    public const string DocumentIdsColumnName = "DocumentIds";

    /// <summary>The loss-mask column's name (PackTokens' name).</summary>
    public const string LossMaskColumnName = "LossMask";

    internal TokenShardDataView(TokenShardSet shards)
    {
        Shards = shards;
        var builder = new DataViewSchema.Builder();
        // The annotations PackTokens puts on its blocks: the tokenizer, and the names of the document-id and loss-mask
        // columns, so the trainer and Evaluate pick those up from shards as they do after PackTokens.
        var annotations = new DataViewSchema.Annotations.Builder();
        if (shards.Tokenizer is { } tokenizer)
            LmAnnotations.Add(annotations, tokenizer);
        if (shards.HasDocumentIds)
            LmAnnotations.AddColumnName(annotations, LmAnnotations.DocumentIdsColumnKind, DocumentIdsColumnName);
        if (shards.HasLossMask)
            LmAnnotations.AddColumnName(annotations, LmAnnotations.LossMaskColumnKind, LossMaskColumnName);
        builder.AddColumn(TokensColumnName, new VectorDataViewType(NumberDataViewType.Int32, shards.BlockLength), annotations.ToAnnotations());
        if (shards.HasDocumentIds)
            builder.AddColumn(DocumentIdsColumnName, new VectorDataViewType(NumberDataViewType.Int32, shards.BlockLength));
        if (shards.HasLossMask)
            builder.AddColumn(LossMaskColumnName, new VectorDataViewType(BooleanDataViewType.Instance, shards.BlockLength));
        Schema = builder.ToSchema();
    }

    /// <summary>The shards read.</summary>
    public TokenShardSet Shards { get; }

    /// <inheritdoc/>
    public bool CanShuffle => false;

    /// <inheritdoc/>
    public DataViewSchema Schema { get; }

    /// <inheritdoc/>
    public long? GetRowCount() => Shards.BlockCount;

    /// <inheritdoc/>
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        => new Cursor(this, columnsNeeded.Select(c => c.Index).ToHashSet());

    /// <inheritdoc/>
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly TokenShardDataView _view;
        private readonly HashSet<int> _active;
        private readonly int[] _tokens, _documentIds;
        private readonly bool[] _mask;
        private long _position = -1;
        private long _loaded = -1;

        public Cursor(TokenShardDataView view, HashSet<int> active)
        {
            _view = view;
            _active = active;
            int length = view.Shards.BlockLength;
            _tokens = new int[length];
            _documentIds = view.Shards.HasDocumentIds ? new int[length] : [];
            _mask = view.Shards.HasLossMask ? new bool[length] : [];
        }

        public override long Position => _position;

        public override long Batch => 0;

        public override DataViewSchema Schema => _view.Schema;

        public override bool IsColumnActive(DataViewSchema.Column column) => _active.Contains(column.Index);

        public override bool MoveNext()
        {
            if (_position + 1 >= _view.Shards.BlockCount)
            {
                _position = _view.Shards.BlockCount;
                return false;
            }
            _position++;
            return true;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!IsColumnActive(column))
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            ValueGetter<TValue> getter = column.Name switch
            {
                TokensColumnName => (ValueGetter<TValue>)(Delegate)(ValueGetter<VBuffer<int>>)((ref VBuffer<int> value) => Copy(_tokens, ref value)),
                DocumentIdsColumnName => (ValueGetter<TValue>)(Delegate)(ValueGetter<VBuffer<int>>)((ref VBuffer<int> value) => Copy(_documentIds, ref value)),
                _ => (ValueGetter<TValue>)(Delegate)(ValueGetter<VBuffer<bool>>)((ref VBuffer<bool> value) => Copy(_mask, ref value)),
            };
            return getter;
        }

        private void Copy<T>(T[] source, ref VBuffer<T> value)
        {
            Load();
            var editor = VBufferEditor.Create(ref value, source.Length);
            source.AsSpan().CopyTo(editor.Values);
            value = editor.Commit();
        }

        private void Load()
        {
            if (_loaded == _position)
                return;
            if (_position < 0 || _position >= _view.Shards.BlockCount)
                throw new InvalidOperationException("The cursor is not on a row; call MoveNext first.");
            _view.Shards.ReadBlock(_position, _tokens, _documentIds, _mask);
            _loaded = _position;
        }
    }
}
