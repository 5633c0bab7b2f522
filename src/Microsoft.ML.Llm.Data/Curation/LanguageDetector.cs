namespace Microsoft.ML.Llm.Data;

/// <summary>Options of <see cref="LanguageDetectorEstimator"/>.</summary>
public sealed class LanguageDetectorOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        public const string LanguageColumnName = "Language";
        public const string ScoreColumnName = "LanguageScore";
    }

    /// <summary>Output column with the ISO 639-1 code ("" for text without letters).</summary>
    public string LanguageColumnName { get; set; } = Defaults.LanguageColumnName;

    /// <summary>Output column with the score (posterior probability, 0-1).</summary>
    public string ScoreColumnName { get; set; } = Defaults.ScoreColumnName;
}

/// <summary>Estimator of <see cref="LanguageDetectorTransformer"/> (<c>mlContext.Transforms.Text.DetectLanguage</c>).</summary>
public sealed class LanguageDetectorEstimator : TrivialEstimatorBase<LanguageDetectorTransformer>
{
    private readonly LanguageDetectorOptions _options;

    internal LanguageDetectorEstimator(TransformsCatalog.TextTransforms catalog, string inputColumnName, LanguageDetectorOptions? options)
        : base(CurationChecks.ColumnName(inputColumnName, nameof(inputColumnName)))
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _options = options ?? new LanguageDetectorOptions();
        CurationChecks.ColumnName(_options.LanguageColumnName, nameof(LanguageDetectorOptions.LanguageColumnName));
        CurationChecks.ColumnName(_options.ScoreColumnName, nameof(LanguageDetectorOptions.ScoreColumnName));
    }

    private protected override LanguageDetectorTransformer Create() => new(InputColumnName, _options.LanguageColumnName, _options.ScoreColumnName);

    private protected override IReadOnlyList<(string Name, DataViewType Type)> AddedColumns() =>
        [(_options.LanguageColumnName, TextDataViewType.Instance), (_options.ScoreColumnName, NumberDataViewType.Single)];
}

/// <summary>Adds the language code and score of a text column (bundled model). Row-to-row.</summary>
public sealed class LanguageDetectorTransformer : AppendColumnsTransformerBase, IPersistentComponent<LanguageDetectorTransformer>
{
    internal const string LoaderSignature = "LlmLanguageDetector";

    internal static readonly ComponentVersion Version =
        new("LMLANGDT", 0x00010002, 0x00010001, LoaderSignature, typeof(LanguageDetectorTransformer).Assembly);

    static ComponentVersion IPersistentComponent<LanguageDetectorTransformer>.PersistenceVersion => Version;

    internal LanguageDetectorTransformer(string input, string language, string score)
        : base(Version)
    {
        InputColumnName = input;
        LanguageColumnName = language;
        ScoreColumnName = score;
    }

    /// <summary>The text column read.</summary>
    public string InputColumnName { get; }

    /// <summary>The language code column written.</summary>
    public string LanguageColumnName { get; }

    /// <summary>The score column written.</summary>
    public string ScoreColumnName { get; }

    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        int index = SchemaChecks.TextColumn(inputSchema, InputColumnName).Index;
        var model = LanguageIdentifier.Default;
        AddedColumn[] added = [new(LanguageColumnName, TextDataViewType.Instance), new(ScoreColumnName, NumberDataViewType.Single)];
        return new AppendColumnsMapper(inputSchema, index, added, (row, active) =>
        {
            var source = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[index]);
            ReadOnlyMemory<char> text = default;
            // Rows are not identified reliably in every context (a PredictionEngine reuses its row), so each getter
            // detects from the current text; reading both columns detects twice.
            ValueGetter<ReadOnlyMemory<char>> language = (ref ReadOnlyMemory<char> v) =>
            {
                source(ref text);
                v = model.Detect(text.Span).Language.AsMemory();
            };
            ValueGetter<float> score = (ref float v) =>
            {
                source(ref text);
                v = model.Detect(text.Span).Score;
            };
            return [language, score];
        });
    }

    // Binary format (version 0x00010001): InputColumnName, LanguageColumnName, ScoreColumnName (string each).
    // No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        writer.Writer.Write(InputColumnName);
        writer.Writer.Write(LanguageColumnName);
        writer.Writer.Write(ScoreColumnName);
    }

    // Binary format: see SaveState.
    static LanguageDetectorTransformer IPersistentComponent<LanguageDetectorTransformer>.Load(IHostEnvironment env, ComponentReader reader) =>
        new(reader.Reader.ReadString(), reader.Reader.ReadString(), reader.Reader.ReadString());
}
