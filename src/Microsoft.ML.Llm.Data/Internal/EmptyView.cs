namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>A data view with a schema and no rows (used to compute output schemas).</summary>
internal sealed class EmptyView(DataViewSchema schema) : IDataView
{
    public bool CanShuffle => false;
    public DataViewSchema Schema => schema;
    public long? GetRowCount() => 0;
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => throw new NotSupportedException("An EmptyView only describes a schema.");
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => throw new NotSupportedException("An EmptyView only describes a schema.");
}
