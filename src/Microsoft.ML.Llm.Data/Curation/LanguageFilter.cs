namespace Microsoft.ML.Llm.Data;

/// <summary>Options of <see cref="LanguageFilterEstimator"/>.</summary>
public sealed class LanguageFilterOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        /// <summary>datatrove's LanguageFilter threshold.</summary>
        public const double MinScore = 0.65;
    }

    /// <summary>Languages to keep (ISO 639-1 codes known to <see cref="LanguageIdentifier.Default"/>).</summary>
    public IReadOnlyList<string> Languages { get; set; } = ["en"];

    /// <summary>A row is kept when its score is above this.</summary>
    public double MinScore { get; set; } = Defaults.MinScore;

    internal void Validate()
    {
        if (Languages is null || Languages.Count == 0)
            throw new ArgumentException($"Option 'Languages' must list at least one language; accepted: {string.Join(", ", LanguageIdentifier.Default.Languages)}.", nameof(Languages));
        foreach (var code in Languages)
        {
            if (LanguageIdentifier.Default.IndexOf(code) < 0)
                throw new ArgumentOutOfRangeException(nameof(Languages), code, $"Option 'Languages' has '{code}', which the bundled model does not know; accepted: {string.Join(", ", LanguageIdentifier.Default.Languages)}.");
        }

        CurationChecks.InRange(MinScore, 0, 1, nameof(MinScore));
    }
}

/// <summary>Estimator of <see cref="LanguageFilterTransformer"/> (<c>mlContext.Transforms.Text.FilterByLanguage</c>).</summary>
public sealed class LanguageFilterEstimator : TrivialEstimatorBase<LanguageFilterTransformer>
{
    private readonly LanguageFilterOptions _options;

    internal LanguageFilterEstimator(TransformsCatalog.TextTransforms catalog, string inputColumnName, LanguageFilterOptions options)
        : base(CurationChecks.ColumnName(inputColumnName, nameof(inputColumnName)))
    {
        ArgumentNullException.ThrowIfNull(catalog);
        options.Validate();
        _options = new LanguageFilterOptions { Languages = options.Languages.ToArray(), MinScore = options.MinScore };
    }

    private protected override LanguageFilterTransformer Create() => new(InputColumnName, _options);
}

/// <summary>
/// Keeps rows whose detected language is in a set and whose score is above a threshold (rejections are reported as
/// <c>language_not_kept</c> or <c>language_score_below_threshold</c>; text without letters is <c>language_not_kept</c>).
/// Not a row-to-row mapper; cursor sets run in parallel; <see cref="LastReport"/> after a pass.
/// </summary>
public sealed class LanguageFilterTransformer : RowCountChangingTransformerBase, IPersistentComponent<LanguageFilterTransformer>
{
    internal const string LoaderSignature = "LlmLanguageFilter";

    internal static readonly ComponentVersion Version =
        new("LMLANGFL", 0x00010002, 0x00010001, LoaderSignature, typeof(LanguageFilterTransformer).Assembly);

    static ComponentVersion IPersistentComponent<LanguageFilterTransformer>.PersistenceVersion => Version;

    private readonly LanguageFilterOptions _options;
    private volatile FilterReport? _lastReport;

    internal LanguageFilterTransformer(string input, LanguageFilterOptions options)
        : base(Version)
    {
        InputColumnName = input;
        _options = options;
    }

    /// <summary>The text column read.</summary>
    public string InputColumnName { get; }

    /// <summary>Counts of the last completed pass; null before the first.</summary>
    public FilterReport? LastReport => _lastReport;

    private protected override IDataView MakeDataView(IDataView input)
    {
        int index = SchemaChecks.TextColumn(input.Schema, InputColumnName).Index;
        var keep = new HashSet<string>(_options.Languages, StringComparer.Ordinal);
        double min = _options.MinScore;
        return new FilterDataView(input, index, () => new State(keep, min), null, r => _lastReport = r);
    }

    private sealed class State(HashSet<string> keep, double min) : RowFilterState
    {
        public override string? Evaluate(ReadOnlyMemory<char> text)
        {
            var (language, score) = LanguageIdentifier.Default.Detect(text.Span);
            if (!keep.Contains(language))
                return "language_not_kept";
            return score > min ? null : "language_score_below_threshold";
        }
    }

    // Binary format (version 0x00010001): InputColumnName (string), MinScore (double), language count (int32),
    // then each language code (string). No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(InputColumnName);
        w.Write(_options.MinScore);
        w.Write(_options.Languages.Count);
        foreach (var l in _options.Languages)
            w.Write(l);
    }

    // Binary format: see SaveState.
    static LanguageFilterTransformer IPersistentComponent<LanguageFilterTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string input = r.ReadString();
        double min = r.ReadDouble();
        var langs = new string[r.ReadInt32()];
        for (int i = 0; i < langs.Length; i++)
            langs[i] = r.ReadString();
        var o = new LanguageFilterOptions { Languages = langs, MinScore = min };
        o.Validate();
        return new LanguageFilterTransformer(input, o);
    }
}
