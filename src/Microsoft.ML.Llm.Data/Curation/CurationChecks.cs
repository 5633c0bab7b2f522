namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>Option checks shared by the curation components (schema checks are in <see cref="Internal.SchemaChecks"/>).</summary>
internal static class CurationChecks
{
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
}
