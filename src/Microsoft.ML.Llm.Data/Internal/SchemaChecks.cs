using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>Schema errors in ML.NET's wording.</summary>
internal static class SchemaErrors
{
    public static ArgumentOutOfRangeException MissingColumn(string paramName, string columnName)
        => new(paramName, $"Could not find input column '{columnName}'.");

    public static ArgumentOutOfRangeException Mismatch(string paramName, string columnName, string expected, string actual)
        => new(paramName, $"Schema mismatch for input column '{columnName}': expected {expected}, got {actual}.");

    /// <summary>How ML.NET names a <see cref="SchemaShape.Column"/>'s type in schema-mismatch messages.</summary>
    public static string Describe(SchemaShape.Column column) => column.Kind switch
    {
        SchemaShape.Column.VectorKind.Scalar => column.ItemType.ToString() ?? "",
        SchemaShape.Column.VectorKind.Vector => $"Vector<{column.ItemType}>",
        _ => $"VarVector<{column.ItemType}>",
    };

    public static InvalidOperationException WrongGetterType<TActual, TExpected>()
        => new($"Invalid TValue in GetGetter: '{typeof(TActual)}', expected type: '{typeof(TExpected)}'.");
}
