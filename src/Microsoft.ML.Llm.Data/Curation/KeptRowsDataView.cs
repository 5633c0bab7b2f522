namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>
/// The rows of a source whose 0-based index is set in a bitset. Reads the source with one sequential cursor, so a
/// cursor set has one cursor; every cursor yields the same rows in the same order.
/// </summary>
internal sealed class KeptRowsDataView : IDataView
{
    private readonly IDataView _source;
    private readonly Func<ulong[]> _kept;

    public KeptRowsDataView(IDataView source, Func<ulong[]> kept)
    {
        _source = source;
        _kept = kept;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema => _source.Schema;

    public long? GetRowCount() => null;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(_source.GetRowCursor(columnsNeeded), _kept());

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly DataViewRowCursor _input;
        private readonly ulong[] _kept;
        private long _row = -1, _position = -1;

        public Cursor(DataViewRowCursor input, ulong[] kept)
        {
            _input = input;
            _kept = kept;
        }

        public override long Position => _position;
        public override long Batch => 0;
        public override DataViewSchema Schema => _input.Schema;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool IsColumnActive(DataViewSchema.Column column) => _input.IsColumnActive(column);
        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => _input.GetGetter<TValue>(column);

        public override bool MoveNext()
        {
            while (_input.MoveNext())
            {
                _row++;
                long word = _row >> 6;
                if (word < _kept.Length && (_kept[word] & (1UL << (int)(_row & 63))) != 0)
                {
                    _position++;
                    return true;
                }
            }
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
