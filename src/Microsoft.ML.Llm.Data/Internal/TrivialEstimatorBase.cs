namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>
/// An estimator that needs no training and reads one text column: <see cref="Fit"/> checks the column and creates the
/// transformer; <see cref="GetOutputSchema"/> checks it and adds the transformer's scalar columns.
/// </summary>
/// <typeparam name="TTransformer">The transformer created.</typeparam>
public abstract class TrivialEstimatorBase<TTransformer> : IEstimator<TTransformer>
    where TTransformer : ITransformer
{
    private protected TrivialEstimatorBase(string inputColumnName) => InputColumnName = inputColumnName;

    private protected string InputColumnName { get; }

    /// <summary>Checks the input column and creates the transformer (no data is read).</summary>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.TextColumn(input.Schema, InputColumnName);
        return Create();
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.TextColumn(inputSchema, InputColumnName);
        var added = AddedColumns();
        if (added.Count == 0)
            return inputSchema;
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var (name, type) in added)
            columns[name] = ModelPersistence.SchemaColumn(name, SchemaShape.Column.VectorKind.Scalar, type, false);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }

    /// <summary>Creates the transformer.</summary>
    private protected abstract TTransformer Create();

    /// <summary>The scalar columns the transformer appends (none by default).</summary>
    private protected virtual IReadOnlyList<(string Name, DataViewType Type)> AddedColumns() => [];
}
