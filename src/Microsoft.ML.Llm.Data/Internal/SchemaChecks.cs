namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>
/// Schema checks and errors in ML.NET's wording, for every component of both assemblies:
/// <c>Could not find input column 'X'</c> and <c>Schema mismatch for input column 'X': expected String, got Vector&lt;Int32&gt;</c>
/// (the role word is "input", "training", "validation"... as fits; types as ML.NET names them).
/// </summary>
internal static class SchemaChecks
{
    /// <summary>The error for a column that is not in the schema.</summary>
    public static ArgumentOutOfRangeException MissingColumn(string paramName, string columnName, string role = "input")
        => new(paramName, $"Could not find {role} column '{columnName}'");

    /// <summary>The error for a column of the wrong type.</summary>
    public static ArgumentOutOfRangeException Mismatch(string paramName, string columnName, string expected, string actual, string role = "input")
        => new(paramName, $"Schema mismatch for {role} column '{columnName}': expected {expected}, got {actual}");

    /// <summary>How ML.NET names a <see cref="SchemaShape.Column"/>'s type in schema-mismatch messages.</summary>
    public static string Describe(SchemaShape.Column column) => column.Kind switch
    {
        SchemaShape.Column.VectorKind.Scalar => column.ItemType.ToString() ?? "",
        SchemaShape.Column.VectorKind.Vector => $"Vector<{column.ItemType}>",
        _ => $"VarVector<{column.ItemType}>",
    };

    /// <summary>Finds a text column of <paramref name="schema"/>.</summary>
    public static DataViewSchema.Column TextColumn(DataViewSchema schema, string columnName, string role = "input")
    {
        ArgumentNullException.ThrowIfNull(schema);
        var column = schema.GetColumnOrNull(columnName) ?? throw MissingColumn("inputSchema", columnName, role);
        if (column.Type is not TextDataViewType)
            throw Mismatch("inputSchema", columnName, "String", column.Type.ToString() ?? "", role);
        return column;
    }

    /// <summary>Checks that an estimator's input shape has the text column.</summary>
    public static void TextColumn(SchemaShape schema, string columnName, string role = "input")
    {
        ArgumentNullException.ThrowIfNull(schema);
        if (!schema.TryFindColumn(columnName, out var column))
            throw MissingColumn("inputSchema", columnName, role);
        if (column.Kind != SchemaShape.Column.VectorKind.Scalar || column.ItemType is not TextDataViewType)
            throw Mismatch("inputSchema", columnName, "String", Describe(column), role);
    }

    /// <summary>Finds a vector-of-Int32 (token) column of <paramref name="schema"/>.</summary>
    public static DataViewSchema.Column Int32VectorColumn(DataViewSchema schema, string columnName, string role = "input")
    {
        ArgumentNullException.ThrowIfNull(schema);
        var column = schema.GetColumnOrNull(columnName) ?? throw MissingColumn("inputSchema", columnName, role);
        if (column.Type is not VectorDataViewType { ItemType: var item } || item != NumberDataViewType.Int32)
            throw Mismatch("inputSchema", columnName, "Vector<Int32>", column.Type.ToString() ?? "", role);
        return column;
    }

    /// <summary>Checks that an estimator's input shape has the vector-of-Int32 (token) column.</summary>
    public static SchemaShape.Column Int32VectorColumn(SchemaShape schema, string columnName, string role = "input")
    {
        ArgumentNullException.ThrowIfNull(schema);
        if (!schema.TryFindColumn(columnName, out var column))
            throw MissingColumn("inputSchema", columnName, role);
        if (column.Kind == SchemaShape.Column.VectorKind.Scalar || column.ItemType != NumberDataViewType.Int32)
            throw Mismatch("inputSchema", columnName, "Vector<Int32>", Describe(column), role);
        return column;
    }

    /// <summary>The error of a getter asked for the wrong value type.</summary>
    public static InvalidOperationException WrongGetterType<TActual, TExpected>()
        => new($"Invalid TValue in GetGetter: '{typeof(TActual)}', expected type: '{typeof(TExpected)}'.");
}
