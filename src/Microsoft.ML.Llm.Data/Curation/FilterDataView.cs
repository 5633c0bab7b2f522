// The view of the row-count-changing filters that evaluate one text column per row (quality, language), over
// public ML.NET APIs only.

namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>Per-cursor state of a row filter: evaluates one text value, and reports why it failed.</summary>
internal abstract class RowFilterState
{
    /// <summary>Evaluates <paramref name="text"/>; returns <c>null</c> when the row passes, else the rejecting rule.</summary>
    public abstract string? Evaluate(ReadOnlyMemory<char> text);

    /// <summary>Text to expose instead of the input text for the last evaluated (passing) row, if any.</summary>
    public virtual bool TryGetReplacement(out ReadOnlyMemory<char> text)
    {
        text = default;
        return false;
    }
}

/// <summary>
/// A filter over one text column. In drop mode the rows that fail are skipped; in annotate mode every row is kept
/// and a text column names the first failing rule (empty when the row passes). Every cursor (and every cursor of a
/// cursor set, together) yields the rows of the source in the source's order, so the result is deterministic.
/// </summary>
internal sealed class FilterDataView : IDataView
{
    private readonly IDataView _source;
    private readonly int _textIndex;
    private readonly Func<RowFilterState> _createState;
    private readonly bool _annotate;
    private readonly Action<FilterReport> _publish;

    public FilterDataView(IDataView source, int textIndex, Func<RowFilterState> createState, string? annotationColumn, Action<FilterReport> publish)
    {
        _source = source;
        _textIndex = textIndex;
        _createState = createState;
        _annotate = annotationColumn != null;
        _publish = publish;
        if (annotationColumn != null)
        {
            var builder = new DataViewSchema.Builder();
            builder.AddColumns(source.Schema);
            builder.AddColumn(annotationColumn, TextDataViewType.Instance);
            Schema = builder.ToSchema();
        }
        else
        {
            Schema = source.Schema;
        }
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _annotate ? _source.GetRowCount() : null;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var counter = new PassCounter(1, _publish);
        return new Cursor(this, _source.GetRowCursor(WithColumn(columnsNeeded, _source.Schema, _textIndex)), counter);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var inputs = _source.GetRowCursorSet(WithColumn(columnsNeeded, _source.Schema, _textIndex), n);
        var counter = new PassCounter(inputs.Length, _publish);
        return inputs.Select(c => (DataViewRowCursor)new Cursor(this, c, counter)).ToArray();
    }

    /// <summary>The requested columns of the source plus the text column.</summary>
    private static IEnumerable<DataViewSchema.Column> WithColumn(IEnumerable<DataViewSchema.Column> columns, DataViewSchema schema, int index)
    {
        var list = new List<DataViewSchema.Column>();
        bool has = false;
        foreach (var c in columns)
        {
            if (c.Index < schema.Count)
                list.Add(schema[c.Index]);
            has |= c.Index == index;
        }
        if (!has)
            list.Add(schema[index]);
        return list;
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly FilterDataView _parent;
        private readonly DataViewRowCursor _input;
        private readonly PassCounter _counter;
        private readonly RowFilterState _state;
        private readonly ValueGetter<ReadOnlyMemory<char>> _text;
        private readonly Dictionary<string, long> _rejected = new(StringComparer.Ordinal);
        private ReadOnlyMemory<char> _value;
        private ReadOnlyMemory<char> _replacement;
        private bool _replaced;
        private ReadOnlyMemory<char> _reason;
        private long _position = -1, _in, _out;
        private bool _done;

        public Cursor(FilterDataView parent, DataViewRowCursor input, PassCounter counter)
        {
            _parent = parent;
            _input = input;
            _counter = counter;
            _state = parent._createState();
            _text = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[parent._textIndex]);
        }

        public override long Position => _position;
        public override long Batch => _input.Batch;
        public override DataViewSchema Schema => _parent.Schema;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool MoveNext()
        {
            if (_done)
                return false;
            while (_input.MoveNext())
            {
                _in++;
                _text(ref _value);
                string? reason = _state.Evaluate(_value);
                if (reason != null)
                    _rejected[reason] = _rejected.GetValueOrDefault(reason) + 1;
                if (reason == null || _parent._annotate)
                {
                    if (reason == null)
                        _out++;
                    _reason = reason == null ? ReadOnlyMemory<char>.Empty : reason.AsMemory();
                    _replaced = !_parent._annotate && _state.TryGetReplacement(out _replacement);
                    _position++;
                    return true;
                }
            }
            _done = true;
            _counter.Complete(_in, _out, _rejected);
            return false;
        }

        public override bool IsColumnActive(DataViewSchema.Column column) =>
            column.Index >= _input.Schema.Count || _input.IsColumnActive(_input.Schema[column.Index]);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index >= _input.Schema.Count)
            {
                ValueGetter<ReadOnlyMemory<char>> reason = (ref ReadOnlyMemory<char> v) => v = _reason;
                return reason as ValueGetter<TValue> ?? throw new InvalidOperationException($"Invalid TValue in GetGetter for column '{column.Name}': expected ReadOnlyMemory<Char>, got {typeof(TValue).Name}.");
            }
            if (column.Index == _parent._textIndex)
            {
                ValueGetter<ReadOnlyMemory<char>> text = (ref ReadOnlyMemory<char> v) => v = _replaced ? _replacement : _value;
                return text as ValueGetter<TValue> ?? throw new InvalidOperationException($"Invalid TValue in GetGetter for column '{column.Name}': expected ReadOnlyMemory<Char>, got {typeof(TValue).Name}.");
            }
            return _input.GetGetter<TValue>(_input.Schema[column.Index]);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
