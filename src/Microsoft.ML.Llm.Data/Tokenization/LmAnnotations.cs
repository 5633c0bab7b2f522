using System.Diagnostics.CodeAnalysis;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// Annotations that travel along token columns so later stages find what belongs to them without being told:
/// the <see cref="LmTokenizer"/> (<c>TokenizeForLm</c> and <c>TokenizeChat</c> put it on their output column,
/// <c>PackTokens</c> copies it onto the packed column), and the names of the token column's companion loss-mask and
/// document-id columns (<c>TokenizeChat</c> names its loss mask, <c>PackTokens</c> names the packed loss mask and
/// document ids), which <c>PackTokens</c>, the causal-LM trainer and <c>Evaluate</c> pick up by themselves.
/// </summary>
public static class LmAnnotations
{
    /// <summary>The annotation name; its type is <see cref="LmTokenizerDataViewType"/>, its value the <see cref="LmTokenizer"/>.</summary>
    public const string TokenizerKind = "LmTokenizer";

    /// <summary>
    /// Annotation on a token column naming its loss-mask column (Text: the column name). The mask is a Boolean vector
    /// of the same length as the tokens, true where the token is trained on and scored (responses; not prompts, padding).
    /// </summary>
    public const string LossMaskColumnKind = "LmLossMaskColumn";

    /// <summary>
    /// Annotation on a token column naming its per-token document-id column (Text: the column name); tokens of the same
    /// document share an id, padding is -1 (<c>PackTokens</c> in BestFit mode).
    /// </summary>
    public const string DocumentIdsColumnKind = "LmDocumentIdsColumn";

    /// <summary>Gets the name of the loss-mask column annotated on <paramref name="column"/>, if any.</summary>
    public static bool TryGetLossMaskColumn(this DataViewSchema.Column column, [NotNullWhen(true)] out string? name)
        => TryGetName(column, LossMaskColumnKind, out name);

    /// <summary>Gets the name of the document-id column annotated on <paramref name="column"/>, if any.</summary>
    public static bool TryGetDocumentIdsColumn(this DataViewSchema.Column column, [NotNullWhen(true)] out string? name)
        => TryGetName(column, DocumentIdsColumnKind, out name);

    private static bool TryGetName(DataViewSchema.Column column, string kind, [NotNullWhen(true)] out string? name)
    {
        name = null;
        if (column.Annotations.Schema.GetColumnOrNull(kind) is not { Type: TextDataViewType })
            return false;
        ReadOnlyMemory<char> value = default;
        column.Annotations.GetValue(kind, ref value);
        name = value.ToString();
        return name.Length > 0;
    }

    /// <summary>Adds the annotation naming <paramref name="columnName"/> under <paramref name="kind"/> to <paramref name="builder"/>.</summary>
    internal static void AddColumnName(DataViewSchema.Annotations.Builder builder, string kind, string columnName)
        => builder.Add(kind, TextDataViewType.Instance, (ref ReadOnlyMemory<char> value) => value = columnName.AsMemory());

    /// <summary>Gets the tokenizer annotation of <paramref name="column"/>, if it has one.</summary>
    public static bool TryGetTokenizer(this DataViewSchema.Column column, [NotNullWhen(true)] out LmTokenizer? tokenizer)
    {
        tokenizer = null;
        var annotation = column.Annotations.Schema.GetColumnOrNull(TokenizerKind);
        if (annotation is not { Type: LmTokenizerDataViewType })
            return false;
        LmTokenizer value = null!;
        column.Annotations.GetValue(TokenizerKind, ref value);
        tokenizer = value;
        return tokenizer is not null;
    }

    /// <summary>Annotations holding <paramref name="tokenizer"/>.</summary>
    internal static DataViewSchema.Annotations Create(LmTokenizer tokenizer)
    {
        var builder = new DataViewSchema.Annotations.Builder();
        Add(builder, tokenizer);
        return builder.ToAnnotations();
    }

    /// <summary>Adds the tokenizer annotation to <paramref name="builder"/>.</summary>
    internal static void Add(DataViewSchema.Annotations.Builder builder, LmTokenizer tokenizer)
        => builder.Add<LmTokenizer>(TokenizerKind, LmTokenizerDataViewType.Instance, (ref LmTokenizer value) => value = tokenizer);

    /// <summary>The schema shape of the tokenizer annotation, for estimators' <c>GetOutputSchema</c>.</summary>
    internal static SchemaShape Shape => ShapeOf(tokenizer: true, lossMask: false, documentIds: false)!;

    /// <summary>The schema shape of the chosen annotations (null when none), for estimators' <c>GetOutputSchema</c>.</summary>
    internal static SchemaShape? ShapeOf(bool tokenizer, bool lossMask, bool documentIds)
    {
        var columns = new List<SchemaShape.Column>();
        if (tokenizer)
            columns.Add(Internal.ModelPersistence.SchemaColumn(TokenizerKind, SchemaShape.Column.VectorKind.Scalar, LmTokenizerDataViewType.Instance, isKey: false));
        if (lossMask)
            columns.Add(Internal.ModelPersistence.SchemaColumn(LossMaskColumnKind, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, isKey: false));
        if (documentIds)
            columns.Add(Internal.ModelPersistence.SchemaColumn(DocumentIdsColumnKind, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, isKey: false));
        return columns.Count == 0 ? null : Internal.ModelPersistence.SchemaShapeOf(columns);
    }
}

/// <summary>The <see cref="DataViewType"/> of the tokenizer annotation (values are <see cref="LmTokenizer"/> instances).</summary>
public sealed class LmTokenizerDataViewType : StructuredDataViewType
{
    /// <summary>The single instance.</summary>
    public static LmTokenizerDataViewType Instance { get; } = new();

    private LmTokenizerDataViewType() : base(typeof(LmTokenizer)) { }

    /// <inheritdoc/>
    public override bool Equals(DataViewType? other) => other is LmTokenizerDataViewType;

    /// <inheritdoc/>
    public override bool Equals(object? other) => other is LmTokenizerDataViewType;

    /// <inheritdoc/>
    public override int GetHashCode() => typeof(LmTokenizerDataViewType).GetHashCode();

    /// <inheritdoc/>
    public override string ToString() => "LmTokenizer";
}
