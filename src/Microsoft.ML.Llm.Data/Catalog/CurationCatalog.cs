using Microsoft.ML.Llm.Data;

namespace Microsoft.ML;

/// <summary>Catalog entries of the data curation transforms on <c>mlContext.Transforms.Text</c>.</summary>
public static partial class LlmTextCatalog
{
    // The curation components need nothing from the ML.NET environment (no training, no logging channel).
    private static TransformsCatalog.TextTransforms Checked(TransformsCatalog.TextTransforms catalog)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return catalog;
    }

    /// <summary>
    /// Normalizes text for language-model training (NFC/NFKC, whitespace with line and paragraph structure kept,
    /// quote and dash folding, control and zero-width characters removed, lone surrogates repaired).
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">The column to write.</param>
    /// <param name="inputColumnName">The text column to read; defaults to <paramref name="outputColumnName"/>.</param>
    /// <param name="form">Unicode normalization form.</param>
    /// <param name="lowercase">Lowercase the text.</param>
    public static TextNormalizerEstimator NormalizeForLm(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName = null,
        LmNormalizationForm form = TextNormalizerOptions.Defaults.Form, bool lowercase = TextNormalizerOptions.Defaults.Lowercase)
        => new(Checked(catalog), outputColumnName, inputColumnName, new TextNormalizerOptions { Form = form, Lowercase = lowercase });

    /// <summary>Normalizes text for language-model training with the given options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">The column to write.</param>
    /// <param name="inputColumnName">The text column to read; null: <paramref name="outputColumnName"/>.</param>
    /// <param name="options">The options.</param>
    public static TextNormalizerEstimator NormalizeForLm(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName, TextNormalizerOptions options)
        => new(Checked(catalog), outputColumnName, inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>
    /// Replaces personal data in text: e-mail addresses and public IP addresses (IPv4 and IPv6) by fake ones, as
    /// datatrove's <c>PIIFormatter</c> does, and phone numbers by fictional ones. After a pass,
    /// <see cref="PiiRedactorTransformer.Report"/> counts what was replaced.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">The column to write.</param>
    /// <param name="inputColumnName">The text column to read; defaults to <paramref name="outputColumnName"/>.</param>
    /// <param name="redactEmails">Replace e-mail addresses.</param>
    /// <param name="redactIPAddresses">Replace IP addresses (public ones only, unless the options say otherwise).</param>
    /// <param name="redactPhoneNumbers">Replace phone numbers.</param>
    public static PiiRedactorEstimator RedactPii(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName = null,
        bool redactEmails = PiiRedactorOptions.Defaults.RedactEmails, bool redactIPAddresses = PiiRedactorOptions.Defaults.RedactIPAddresses,
        bool redactPhoneNumbers = PiiRedactorOptions.Defaults.RedactPhoneNumbers)
        => new(Checked(catalog), outputColumnName, inputColumnName,
            new PiiRedactorOptions { RedactEmails = redactEmails, RedactIPAddresses = redactIPAddresses, RedactPhoneNumbers = redactPhoneNumbers });

    /// <summary>Replaces personal data in text with the given options (replacement texts, public addresses only…).</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">The column to write.</param>
    /// <param name="inputColumnName">The text column to read; null: <paramref name="outputColumnName"/>.</param>
    /// <param name="options">The options.</param>
    public static PiiRedactorEstimator RedactPii(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName, PiiRedactorOptions options)
        => new(Checked(catalog), outputColumnName, inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>
    /// Filters rows by the Gopher quality and repetition, C4 and FineWeb rules with datatrove's defaults. After a pass
    /// over the output, <see cref="TextQualityFilterTransformer.LastReport"/> holds rows in/out and rows per rule.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="mode">Drop failing rows, or annotate them.</param>
    /// <param name="gopherQuality">Apply the Gopher quality rules.</param>
    /// <param name="gopherRepetition">Apply the Gopher repetition rules.</param>
    /// <param name="c4">Apply the C4 rules.</param>
    /// <param name="fineWeb">Apply the FineWeb rules.</param>
    public static TextQualityFilterEstimator FilterByQuality(this TransformsCatalog.TextTransforms catalog, string inputColumnName,
        QualityFilterMode mode = TextQualityFilterOptions.Defaults.Mode, bool gopherQuality = true, bool gopherRepetition = true, bool c4 = true, bool fineWeb = true)
        => new(Checked(catalog), inputColumnName, new TextQualityFilterOptions { Mode = mode, GopherQuality = gopherQuality, GopherRepetition = gopherRepetition, C4 = c4, FineWeb = fineWeb });

    /// <summary>Filters rows by the quality rules with the given options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="options">The options.</param>
    public static TextQualityFilterEstimator FilterByQuality(this TransformsCatalog.TextTransforms catalog, string inputColumnName, TextQualityFilterOptions options)
        => new(Checked(catalog), inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>
    /// Removes exact or near-duplicate rows (MinHash LSH, 14 bands × 8 rows of word 5-gram shingles by default),
    /// keeping the first row of each cluster. The first cursor over the output makes one pass over the input; then
    /// <see cref="NearDuplicateRemoverTransformer.LastReport"/> holds the clusters found.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="mode">Exact or MinHash.</param>
    /// <param name="verify">Verify candidate pairs by exact Jaccard similarity of their shingles.</param>
    /// <param name="seed">Seed of the MinHash permutations.</param>
    public static NearDuplicateRemoverEstimator RemoveNearDuplicates(this TransformsCatalog.TextTransforms catalog, string inputColumnName,
        DeduplicationMode mode = NearDuplicateRemoverOptions.Defaults.Mode, bool verify = NearDuplicateRemoverOptions.Defaults.Verify, int seed = NearDuplicateRemoverOptions.Defaults.Seed)
        => new(Checked(catalog), inputColumnName, new NearDuplicateRemoverOptions { Mode = mode, Verify = verify, Seed = seed });

    /// <summary>Removes exact or near-duplicate rows with the given options (reference data, bands, rows, n-gram size...).</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="options">The options.</param>
    public static NearDuplicateRemoverEstimator RemoveNearDuplicates(this TransformsCatalog.TextTransforms catalog, string inputColumnName, NearDuplicateRemoverOptions options)
        => new(Checked(catalog), inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>Adds the detected language (ISO 639-1 code) and its score, with the bundled 26-language model.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="languageColumnName">The language column to write.</param>
    /// <param name="scoreColumnName">The score column to write.</param>
    public static LanguageDetectorEstimator DetectLanguage(this TransformsCatalog.TextTransforms catalog, string inputColumnName,
        string languageColumnName = LanguageDetectorOptions.Defaults.LanguageColumnName, string scoreColumnName = LanguageDetectorOptions.Defaults.ScoreColumnName)
        => new(Checked(catalog), inputColumnName, new LanguageDetectorOptions { LanguageColumnName = languageColumnName, ScoreColumnName = scoreColumnName });

    /// <summary>Adds the detected language and its score with the given options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="options">The options.</param>
    public static LanguageDetectorEstimator DetectLanguage(this TransformsCatalog.TextTransforms catalog, string inputColumnName, LanguageDetectorOptions options)
        => new(Checked(catalog), inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));

    /// <summary>Keeps rows in one of <paramref name="languages"/> with a score above <paramref name="minScore"/> (default 0.65).</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="languages">ISO 639-1 codes to keep.</param>
    /// <param name="minScore">Score threshold.</param>
    public static LanguageFilterEstimator FilterByLanguage(this TransformsCatalog.TextTransforms catalog, string inputColumnName, string[] languages, double minScore = LanguageFilterOptions.Defaults.MinScore)
        => new(Checked(catalog), inputColumnName, new LanguageFilterOptions { Languages = languages, MinScore = minScore });

    /// <summary>Keeps rows by language with the given options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="inputColumnName">The text column.</param>
    /// <param name="options">The options.</param>
    public static LanguageFilterEstimator FilterByLanguage(this TransformsCatalog.TextTransforms catalog, string inputColumnName, LanguageFilterOptions options)
        => new(Checked(catalog), inputColumnName, options ?? throw new ArgumentNullException(nameof(options)));
}
