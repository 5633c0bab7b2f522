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
