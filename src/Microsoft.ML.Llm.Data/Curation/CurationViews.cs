// Data views shared by the curation transforms (public ML.NET APIs only):
//   AppendColumnsMapper / AppendColumnsDataView — row-to-row transforms that add columns (normalizer, language ID);
//   FilterDataView — row-count-changing filters that evaluate one text column per row (quality, language);
//   KeptRowsDataView — a fixed set of kept row indices over a source (near-duplicate removal).
using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>Validation helpers shared by the curation components (ML.NET's schema wording).</summary>
internal static class CurationChecks
{
    /// <summary>Finds <paramref name="column"/> in <paramref name="schema"/> and checks that it is text.</summary>
    public static int TextColumnIndex(DataViewSchema schema, string column)
    {
        ArgumentNullException.ThrowIfNull(schema);
        var col = schema.GetColumnOrNull(column)
            ?? throw new ArgumentOutOfRangeException(nameof(column), $"Schema mismatch for input column '{column}': column not found in the input schema.");
        if (col.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(column), $"Schema mismatch for input column '{column}': expected String, got {col.Type}.");
        return col.Index;
    }

    /// <summary>The same check for an estimator's <see cref="SchemaShape"/>.</summary>
    public static void CheckTextColumn(SchemaShape schema, string column)
    {
        ArgumentNullException.ThrowIfNull(schema);
        if (!schema.TryFindColumn(column, out var col))
            throw new ArgumentOutOfRangeException(nameof(column), $"Schema mismatch for input column '{column}': column not found in the input schema.");
        if (col.Kind != SchemaShape.Column.VectorKind.Scalar || col.ItemType is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(column), $"Schema mismatch for input column '{column}': expected String, got {(col.Kind == SchemaShape.Column.VectorKind.Scalar ? "" : "vector of ")}{col.ItemType}.");
    }

    /// <summary>Checks that a column name option is set.</summary>
    public static string ColumnName(string? name, string option)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException($"Option '{option}' must name a column; got '{name}'.", option);
        return name;
    }

    /// <summary>Checks that a fraction-like option is a number in [min, max].</summary>
    public static void InRange(double value, double min, double max, string option)
    {
        if (double.IsNaN(value) || value < min || value > max)
            throw new ArgumentOutOfRangeException(option, value, $"Option '{option}' must be between {min} and {max}; got {value}.");
    }

    /// <summary>Checks that an integer option is at least <paramref name="min"/>.</summary>
    public static void AtLeast(int value, int min, string option)
    {
        if (value < min)
            throw new ArgumentOutOfRangeException(option, value, $"Option '{option}' must be at least {min}; got {value}.");
    }

    /// <summary>Checks that a min/max pair is ordered.</summary>
    public static void Ordered(double min, double max, string minOption, string maxOption)
    {
        if (min > max)
            throw new ArgumentOutOfRangeException(minOption, min, $"Option '{minOption}' ({min}) must not exceed option '{maxOption}' ({max}).");
    }

    public static IEnumerable<DataViewSchema.Column> WithColumn(IEnumerable<DataViewSchema.Column> columns, DataViewSchema schema, int index)
    {
        var list = new List<DataViewSchema.Column>();
        bool has = false;
        foreach (var c in columns)
        {
            if (c.Index < schema.Count) list.Add(schema[c.Index]);
            has |= c.Index == index;
        }
        if (!has) list.Add(schema[index]);
        return list;
    }
}

/// <summary>Creates the getters of the columns a row-to-row transform adds, for one input row.</summary>
/// <param name="input">The input row (its text column is active).</param>
/// <param name="active">Which added columns (0-based among the added ones) are requested.</param>
internal delegate Delegate?[] AddedGettersFactory(DataViewRow input, Func<int, bool> active);

/// <summary>A row-to-row mapper that appends computed columns to its input, all computed from one input column.</summary>
internal sealed class AppendColumnsMapper : IRowToRowMapper
{
    private readonly int _sourceIndex;
    private readonly AddedGettersFactory _factory;

    public AppendColumnsMapper(DataViewSchema inputSchema, int sourceIndex, IReadOnlyList<(string Name, DataViewType Type)> added, AddedGettersFactory factory)
    {
        InputSchema = inputSchema;
        _sourceIndex = sourceIndex;
        _factory = factory;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var (name, type) in added)
            builder.AddColumn(name, type);
        OutputSchema = builder.ToSchema();
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    internal int AddedCount => OutputSchema.Count - InputSchema.Count;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var needed = new SortedSet<int>();
        foreach (var c in dependingColumns)
        {
            if (c.Index < InputSchema.Count) needed.Add(c.Index);
            else needed.Add(_sourceIndex);
        }
        return needed.Select(i => InputSchema[i]).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new MappedRow(this, input, activeColumns);
    }

    internal (bool[] Active, Delegate?[] Getters) CreateGetters(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        var active = new bool[AddedCount];
        foreach (var c in activeColumns)
            if (c.Index >= InputSchema.Count) active[c.Index - InputSchema.Count] = true;
        var getters = active.Any(a => a) ? _factory(input, i => active[i]) : new Delegate?[AddedCount];
        return (active, getters);
    }

    private sealed class MappedRow : DataViewRow
    {
        private readonly AppendColumnsMapper _parent;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly Delegate?[] _getters;

        public MappedRow(AppendColumnsMapper parent, DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _parent = parent;
            _input = input;
            (_active, _getters) = parent.CreateGetters(input, activeColumns);
        }

        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override DataViewSchema Schema => _parent.OutputSchema;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            int n = _parent.InputSchema.Count;
            return column.Index < n ? _input.IsColumnActive(_input.Schema[column.Index]) : _active[column.Index - n];
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) =>
            AppendColumnsDataView.Getter<TValue>(_parent, _input, _getters, column);
    }
}

/// <summary>The output of a row-to-row transform built on <see cref="AppendColumnsMapper"/>.</summary>
internal sealed class AppendColumnsDataView : IDataView
{
    private readonly IDataView _source;
    private readonly AppendColumnsMapper _mapper;

    public AppendColumnsDataView(IDataView source, AppendColumnsMapper mapper)
    {
        _source = source;
        _mapper = mapper;
    }

    public bool CanShuffle => _source.CanShuffle;

    public DataViewSchema Schema => _mapper.OutputSchema;

    public long? GetRowCount() => _source.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        var cols = columnsNeeded.ToArray();
        return new Cursor(_mapper, _source.GetRowCursor(_mapper.GetDependencies(cols), rand), cols);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var cols = columnsNeeded.ToArray();
        return _source.GetRowCursorSet(_mapper.GetDependencies(cols), n, rand).Select(c => (DataViewRowCursor)new Cursor(_mapper, c, cols)).ToArray();
    }

    internal static ValueGetter<TValue> Getter<TValue>(AppendColumnsMapper mapper, DataViewRow input, Delegate?[] getters, DataViewSchema.Column column)
    {
        int n = mapper.InputSchema.Count;
        if (column.Index < n)
            return input.GetGetter<TValue>(input.Schema[column.Index]);
        var getter = getters[column.Index - n]
            ?? throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
        return getter as ValueGetter<TValue>
            ?? throw new InvalidOperationException($"Invalid TValue in GetGetter for column '{column.Name}': expected {column.Type.RawType.Name}, got {typeof(TValue).Name}.");
    }

    private sealed class Cursor : DataViewRowCursor
    {
        private readonly AppendColumnsMapper _mapper;
        private readonly DataViewRowCursor _input;
        private readonly bool[] _active;
        private readonly Delegate?[] _getters;

        public Cursor(AppendColumnsMapper mapper, DataViewRowCursor input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _mapper = mapper;
            _input = input;
            (_active, _getters) = mapper.CreateGetters(input, activeColumns);
        }

        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override DataViewSchema Schema => _mapper.OutputSchema;
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();
        public override bool MoveNext() => _input.MoveNext();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            int n = _mapper.InputSchema.Count;
            return column.Index < n ? _input.IsColumnActive(_input.Schema[column.Index]) : _active[column.Index - n];
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => Getter<TValue>(_mapper, _input, _getters, column);

        protected override void Dispose(bool disposing)
        {
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}

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

/// <summary>Counts of one pass over a filter's output: rows in, rows out, rows rejected per rule.</summary>
public sealed class FilterReport
{
    internal FilterReport(long rowsIn, long rowsOut, IReadOnlyDictionary<string, long> rejectedByRule)
    {
        RowsIn = rowsIn;
        RowsOut = rowsOut;
        RejectedByRule = rejectedByRule;
    }

    /// <summary>Rows read from the input.</summary>
    public long RowsIn { get; }

    /// <summary>Rows that passed every enabled rule.</summary>
    public long RowsOut { get; }

    /// <summary>Number of rows rejected by each rule (the first failing rule of each row).</summary>
    public IReadOnlyDictionary<string, long> RejectedByRule { get; }

    /// <inheritdoc/>
    public override string ToString() =>
        $"rows in {RowsIn}, rows out {RowsOut}" + string.Concat(RejectedByRule.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $", {kv.Key} {kv.Value}"));
}

/// <summary>Gathers the counts of the cursors of one pass and publishes a report when all of them reach the end.</summary>
internal sealed class PassCounter
{
    private readonly Action<FilterReport> _publish;
    private readonly object _gate = new();
    private readonly Dictionary<string, long> _rejected = new(StringComparer.Ordinal);
    private int _pending;
    private long _in, _out;

    public PassCounter(int cursors, Action<FilterReport> publish)
    {
        _pending = cursors;
        _publish = publish;
    }

    public void Complete(long rowsIn, long rowsOut, Dictionary<string, long> rejected)
    {
        FilterReport? report = null;
        lock (_gate)
        {
            _in += rowsIn;
            _out += rowsOut;
            foreach (var kv in rejected)
                _rejected[kv.Key] = _rejected.GetValueOrDefault(kv.Key) + kv.Value;
            if (--_pending == 0)
                report = new FilterReport(_in, _out, new Dictionary<string, long>(_rejected, StringComparer.Ordinal));
        }
        if (report != null) _publish(report);
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
        return new Cursor(this, _source.GetRowCursor(CurationChecks.WithColumn(columnsNeeded, _source.Schema, _textIndex)), counter);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var inputs = _source.GetRowCursorSet(CurationChecks.WithColumn(columnsNeeded, _source.Schema, _textIndex), n);
        var counter = new PassCounter(inputs.Length, _publish);
        return inputs.Select(c => (DataViewRowCursor)new Cursor(this, c, counter)).ToArray();
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
            if (_done) return false;
            while (_input.MoveNext())
            {
                _in++;
                _text(ref _value);
                string? reason = _state.Evaluate(_value);
                if (reason != null)
                    _rejected[reason] = _rejected.GetValueOrDefault(reason) + 1;
                if (reason == null || _parent._annotate)
                {
                    if (reason == null) _out++;
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
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}

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
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
