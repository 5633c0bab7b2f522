using System.Diagnostics.CodeAnalysis;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// Annotations that carry an <see cref="LmTokenizer"/> along token columns: <c>TokenizeForLm</c> puts it on its output
/// column, <c>PackTokens</c> copies it onto the packed column, so a trainer finds the tokenizer from its input column.
/// </summary>
public static class LmAnnotations
{
    /// <summary>The annotation name; its type is <see cref="LmTokenizerDataViewType"/>, its value the <see cref="LmTokenizer"/>.</summary>
    public const string TokenizerKind = "LmTokenizer";

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
    internal static SchemaShape Shape => Internal.ModelPersistence.SchemaShapeOf(
        [Internal.ModelPersistence.SchemaColumn(TokenizerKind, SchemaShape.Column.VectorKind.Scalar, LmTokenizerDataViewType.Instance, isKey: false)]);
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
