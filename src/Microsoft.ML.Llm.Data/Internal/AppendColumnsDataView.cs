// The one "append computed columns" view of the library: a row-to-row mapper (for prediction engines and
// GetRowToRowMapper) and the data view Transform returns share one getter factory and one row class.

namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>A column a row-to-row transform appends.</summary>
/// <param name="Name">The column name (a same-named input column is hidden, as in ML.NET).</param>
/// <param name="Type">The column type.</param>
/// <param name="Annotations">Annotations of the column, if any.</param>
internal readonly record struct AddedColumn(string Name, DataViewType Type, DataViewSchema.Annotations? Annotations = null);

/// <summary>Creates the getters of the appended columns for one input row.</summary>
/// <param name="input">The input row (its source column is active).</param>
/// <param name="active">Which appended columns (0-based among the appended ones) are requested.</param>
/// <returns>One getter per appended column (null where not active).</returns>
internal delegate Delegate?[] AddedGettersFactory(DataViewRow input, Func<int, bool> active);

/// <summary>A row-to-row mapper that appends computed columns to its input, computed from one or a few input columns.</summary>
internal sealed class AppendColumnsMapper : IRowToRowMapper
{
    private readonly int[] _sourceIndices;
    private readonly AddedGettersFactory _factory;

    public AppendColumnsMapper(DataViewSchema inputSchema, int sourceIndex, IReadOnlyList<AddedColumn> added, AddedGettersFactory factory)
        : this(inputSchema, [sourceIndex], added, factory)
    {
    }

    /// <summary>A mapper whose appended columns are computed from the input columns <paramref name="sourceIndices"/>.</summary>
    public AppendColumnsMapper(DataViewSchema inputSchema, IReadOnlyList<int> sourceIndices, IReadOnlyList<AddedColumn> added, AddedGettersFactory factory)
    {
        InputSchema = inputSchema;
        _sourceIndices = [.. sourceIndices];
        _factory = factory;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var column in added)
            builder.AddColumn(column.Name, column.Type, column.Annotations);
        OutputSchema = builder.ToSchema();
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    /// <summary>Serve a cursor set as one cursor (for transforms whose getters must not run in parallel).</summary>
    public bool SingleCursor { get; init; }

    /// <summary>
    /// Optional faster cursor for a request: given the input cursor and the requested output columns, returns a cursor
    /// that replaces the generic one, or null to use the generic one.
    /// </summary>
    public Func<DataViewRowCursor, IReadOnlyList<DataViewSchema.Column>, DataViewRowCursor?>? FastCursor { get; init; }

    internal int AddedCount => OutputSchema.Count - InputSchema.Count;

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var needed = new SortedSet<int>();
        foreach (var c in dependingColumns)
        {
            if (c.Index < InputSchema.Count)
                needed.Add(c.Index);
            else
                needed.UnionWith(_sourceIndices);
        }
        return needed.Select(i => InputSchema[i]).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new AppendedRow(this, input, activeColumns);
    }

    /// <summary>The input row plus the appended columns; <see cref="AppendColumnsDataView"/>'s cursor wraps one.</summary>
    internal sealed class AppendedRow : DataViewRow
    {
        private readonly AppendColumnsMapper _mapper;
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly Delegate?[] _getters;

        public AppendedRow(AppendColumnsMapper mapper, DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _mapper = mapper;
            _input = input;
            _active = new bool[mapper.AddedCount];
            int n = mapper.InputSchema.Count;
            foreach (var c in activeColumns)
            {
                if (c.Index >= n)
                    _active[c.Index - n] = true;
            }
            _getters = _active.Any(a => a) ? mapper._factory(input, i => _active[i]) : new Delegate?[_active.Length];
        }

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override DataViewSchema Schema => _mapper.OutputSchema;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column)
        {
            int n = _mapper.InputSchema.Count;
            return column.Index < n ? _input.IsColumnActive(_input.Schema[column.Index]) : _active[column.Index - n];
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            int n = _mapper.InputSchema.Count;
            if (column.Index < n)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            var getter = _getters[column.Index - n]
                ?? throw new InvalidOperationException($"Column '{column.Name}' is not active; request it in GetRowCursor's columnsNeeded.");
            return getter as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Invalid TValue in GetGetter for column '{column.Name}': expected {column.Type.RawType.Name}, got {typeof(TValue).Name}.");
        }
    }
}

/// <summary>
/// A view computed from the rows of another (<see cref="Source"/>): appended columns, or packed blocks. A consumer that
/// needs columns such a view does not pass on (<c>GenerateText</c> after <c>PackTokens</c> and the language model, over
/// prompts) finds the rows they were computed from by following <see cref="Source"/>.
/// </summary>
internal interface IDerivedDataView
{
    /// <summary>The view whose rows this one is computed from.</summary>
    IDataView Source { get; }
}

/// <summary>The output of a row-to-row transform built on <see cref="AppendColumnsMapper"/>.</summary>
internal sealed class AppendColumnsDataView : IDataView, IDerivedDataView
{
    private readonly IDataView _source;
    private readonly AppendColumnsMapper _mapper;

    IDataView IDerivedDataView.Source => _source;

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
        var columns = columnsNeeded.ToArray();
        var input = _source.GetRowCursor(_mapper.GetDependencies(columns), rand);
        return _mapper.FastCursor?.Invoke(input, columns) ?? new Cursor(_mapper, input, columns);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
    {
        var columns = columnsNeeded.ToArray();
        if (_mapper.SingleCursor)
            return [GetRowCursor(columns, rand)];
        return _source.GetRowCursorSet(_mapper.GetDependencies(columns), n, rand)
            .Select(c => (DataViewRowCursor)new Cursor(_mapper, c, columns))
            .ToArray();
    }

    /// <summary>A cursor is the input cursor's movement plus an <see cref="AppendColumnsMapper.AppendedRow"/> over it.</summary>
    private sealed class Cursor : DataViewRowCursor
    {
        private readonly DataViewRowCursor _input;
        private readonly AppendColumnsMapper.AppendedRow _row;

        public Cursor(AppendColumnsMapper mapper, DataViewRowCursor input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            _input = input;
            _row = new AppendColumnsMapper.AppendedRow(mapper, input, activeColumns);
        }

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override DataViewSchema Schema => _row.Schema;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool MoveNext() => _input.MoveNext();

        public override bool IsColumnActive(DataViewSchema.Column column) => _row.IsColumnActive(column);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) => _row.GetGetter<TValue>(column);

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
