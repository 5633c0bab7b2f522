// The transform kit: the ITransformer skeleton every transformer of the library shares. Public because public
// sealed transformers derive from them (C# requires it); their constructors and extension points are private
// protected, so only this library and its friend assembly Microsoft.ML.Llm can derive from them.
//   PersistentTransformerBase         ICanSaveModel through ModelPersistence (version header + SaveState).
//   AppendColumnsTransformerBase      row-to-row transforms that append columns: MakeMapper is all they write.
//   RowCountChangingTransformerBase   filters, dedup, packing: MakeDataView is all they write (packing also
//                                     overrides GetRowToRowMapper: each row's own tokens at inference time).

namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>Saves a transformer into an ML.NET model zip through <see cref="ModelPersistence"/>.</summary>
public abstract class PersistentTransformerBase : ICanSaveModel
{
    private readonly ComponentVersion _version;

    private protected PersistentTransformerBase(ComponentVersion version) => _version = version;

    void ICanSaveModel.Save(ModelSaveContext ctx)
    {
        ModelPersistence.Save(ctx, _version, SaveState);
        SharedComponents.RecordWritten(ctx, this);
    }

    /// <summary>Writes the transformer's state (a <c>// Binary format</c> comment above each override lists it).</summary>
    private protected abstract void SaveState(ComponentWriter writer);
}

/// <summary>
/// A row-to-row transformer that appends columns computed from one input column. <see cref="Transform"/>,
/// <see cref="GetOutputSchema"/> and <see cref="GetRowToRowMapper"/> all come from one <see cref="AppendColumnsMapper"/>.
/// </summary>
public abstract class AppendColumnsTransformerBase : PersistentTransformerBase, ITransformer
{
    private protected AppendColumnsTransformerBase(ComponentVersion version)
        : base(version)
    {
    }

    /// <inheritdoc/>
    public virtual bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return MakeMapper(inputSchema).OutputSchema;
    }

    /// <inheritdoc/>
    public virtual IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return MakeMapper(inputSchema);
    }

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new AppendColumnsDataView(input, MakeMapper(input.Schema));
    }

    /// <summary>Checks the input schema and builds the mapper (appended columns and their getters).</summary>
    private protected abstract AppendColumnsMapper MakeMapper(DataViewSchema inputSchema);
}

/// <summary>
/// A transformer that changes the number of rows (filters, deduplication, packing): not a row-to-row mapper, its
/// output schema is that of its output over an empty input.
/// </summary>
public abstract class RowCountChangingTransformerBase : PersistentTransformerBase, ITransformer
{
    private protected RowCountChangingTransformerBase(ComponentVersion version)
        : base(version)
    {
    }

    /// <summary>False: the transform changes the number of rows (packing, which has a meaning row by row at inference
    /// time, overrides it and <see cref="GetRowToRowMapper"/>).</summary>
    public virtual bool IsRowToRowMapper => false;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return MakeDataView(new EmptyView(inputSchema)).Schema;
    }

    /// <summary>Not supported: the transform changes the number of rows.</summary>
    public virtual IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) =>
        throw new InvalidOperationException($"{GetType().Name} changes the number of rows and is not a row-to-row mapper (IsRowToRowMapper is false); use Transform.");

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return MakeDataView(input);
    }

    /// <summary>Checks the input schema and builds the output view (lazily: no rows are read here).</summary>
    private protected abstract IDataView MakeDataView(IDataView input);
}
