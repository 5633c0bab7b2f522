using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Data.Internal;

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
