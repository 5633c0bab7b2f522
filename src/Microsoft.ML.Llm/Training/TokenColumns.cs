namespace Microsoft.ML.Llm;

/// <summary>
/// Which loss-mask and document-id columns go with a token column, for the trainer and <c>Evaluate</c> alike: the
/// names given explicitly win; otherwise (unless the caller opts out) the columns the token column's annotations name
/// (<c>PackTokens</c> adds them, as <c>TokenizeForLm</c> adds the tokenizer), so padding and prompts are never trained
/// on or scored by accident.
/// </summary>
/// <param name="LossMask">The loss-mask column, or null for none.</param>
/// <param name="DocumentIds">The document-id column, or null for none.</param>
/// <param name="DocumentMasking">Whether attention and targets stay within documents.</param>
internal sealed record TokenColumns(string? LossMask, string? DocumentIds, bool DocumentMasking)
{
    /// <summary>
    /// Resolves the columns of <paramref name="tokensColumn"/> in <paramref name="schema"/>.
    /// <paramref name="documentMasking"/>: null = on whenever a document-id column is used; true requires one.
    /// </summary>
    public static TokenColumns Resolve(DataViewSchema schema, string tokensColumn, string? lossMask, string? documentIds,
        bool useAnnotations, bool? documentMasking)
    {
        if (useAnnotations && schema.GetColumnOrNull(tokensColumn) is { } tokens)
        {
            // An annotation naming a column the data no longer has (dropped by a later transform) is ignored.
            if (lossMask is null && tokens.TryGetLossMaskColumn(out var annotatedMask) && schema.GetColumnOrNull(annotatedMask) is not null)
                lossMask = annotatedMask;
            if (documentIds is null && tokens.TryGetDocumentIdsColumn(out var annotatedIds) && schema.GetColumnOrNull(annotatedIds) is not null)
                documentIds = annotatedIds;
        }

        if (documentMasking == true && documentIds is null)
        {
            throw new ArgumentException(
                $"Option 'UseDocumentMasking' is true but there is no document-id column: 'DocumentIdsColumnName' is not set and column '{tokensColumn}' " +
                (useAnnotations ? "has no document-ids annotation" : "is not read for annotations (UseAnnotatedColumns is false)") +
                ". Pack with PackTokens in BestFit mode, or name the document-id column.", "UseDocumentMasking");
        }

        return new TokenColumns(lossMask, documentIds, documentMasking ?? documentIds is not null);
    }
}
