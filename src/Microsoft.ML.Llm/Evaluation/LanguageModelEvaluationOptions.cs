namespace Microsoft.ML.Llm;

/// <summary>Options of <c>mlContext.Llm().Evaluate</c>.</summary>
public sealed class LanguageModelEvaluationOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        public const int BatchSize = 32;
    }

    /// <summary>Blocks per forward pass. At least 1.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>Boolean-vector column whose false values are not scored (padding, prompts). Null (the default): the
    /// column named by the tokens column's loss-mask annotation (PackTokens), unless <see cref="UseAnnotatedColumns"/> is false.</summary>
    public string? LossMaskColumnName { get; set; }

    /// <summary>Int32-vector column of per-token document ids. Null (the default): the column named by the tokens
    /// column's document-ids annotation (PackTokens in BestFit mode), unless <see cref="UseAnnotatedColumns"/> is false.</summary>
    public string? DocumentIdsColumnName { get; set; }

    /// <summary>Attend and score within documents only (as the trainer's document masking). Null (the default): on
    /// whenever a document-id column is used; true requires one.</summary>
    public bool? UseDocumentMasking { get; set; }

    /// <summary>Take null column names from the tokens column's annotations (true, the default). False scores every
    /// token unless the columns are named explicitly.</summary>
    public bool UseAnnotatedColumns { get; set; } = true;
}
