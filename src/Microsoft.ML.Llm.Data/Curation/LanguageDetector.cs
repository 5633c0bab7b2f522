using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data.Curation;
using Microsoft.ML.Llm.Data.Internal;
using Microsoft.ML.Runtime;

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
public sealed class LanguageDetectorEstimator : IEstimator<LanguageDetectorTransformer>
{
    private readonly string _input;
    private readonly LanguageDetectorOptions _options;

    internal LanguageDetectorEstimator(TransformsCatalog.TextTransforms catalog, string inputColumnName, LanguageDetectorOptions? options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _input = CurationChecks.ColumnName(inputColumnName, nameof(inputColumnName));
        _options = options ?? new LanguageDetectorOptions();
        CurationChecks.ColumnName(_options.LanguageColumnName, nameof(LanguageDetectorOptions.LanguageColumnName));
        CurationChecks.ColumnName(_options.ScoreColumnName, nameof(LanguageDetectorOptions.ScoreColumnName));
    }

    /// <inheritdoc/>
    public LanguageDetectorTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        CurationChecks.TextColumnIndex(input.Schema, _input);
        return new LanguageDetectorTransformer(_input, _options.LanguageColumnName, _options.ScoreColumnName);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        CurationChecks.CheckTextColumn(inputSchema, _input);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_options.LanguageColumnName] = ModelPersistence.SchemaColumn(_options.LanguageColumnName, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance, false);
        columns[_options.ScoreColumnName] = ModelPersistence.SchemaColumn(_options.ScoreColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }
}

/// <summary>Adds the language code and score of a text column (bundled model). Row-to-row.</summary>
public sealed class LanguageDetectorTransformer : ITransformer, IPersistentComponent<LanguageDetectorTransformer>
{
    internal const string LoaderSignature = "LlmLanguageDetector";

    static ComponentVersion IPersistentComponent<LanguageDetectorTransformer>.PersistenceVersion =>
        new("LMLANGDT", 0x00010001, 0x00010001, LoaderSignature, typeof(LanguageDetectorTransformer).Assembly);

    internal LanguageDetectorTransformer(string input, string language, string score)
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

    /// <inheritdoc/>
    public bool IsRowToRowMapper => true;

    /// <inheritdoc/>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema) => CreateMapper(inputSchema).OutputSchema;

    /// <inheritdoc/>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => CreateMapper(inputSchema);

    /// <inheritdoc/>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new AppendColumnsDataView(input, CreateMapper(input.Schema));
    }

    private AppendColumnsMapper CreateMapper(DataViewSchema schema)
    {
        int index = CurationChecks.TextColumnIndex(schema, InputColumnName);
        var model = LanguageIdentifier.Default;
        return new AppendColumnsMapper(schema, index, [(LanguageColumnName, TextDataViewType.Instance), (ScoreColumnName, NumberDataViewType.Single)], (row, active) =>
        {
            var source = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[index]);
            ReadOnlyMemory<char> text = default;
            // Rows are not identified reliably in every context (a PredictionEngine reuses its row), so each getter
            // detects from the current text; reading both columns detects twice.
            ValueGetter<ReadOnlyMemory<char>> language = (ref ReadOnlyMemory<char> v) => { source(ref text); v = model.Detect(text.Span).Language.AsMemory(); };
            ValueGetter<float> score = (ref float v) => { source(ref text); v = model.Detect(text.Span).Score; };
            return [language, score];
        });
    }

    void ICanSaveModel.Save(ModelSaveContext ctx) => ModelPersistence.Save(ctx, this);

    void IPersistentComponent<LanguageDetectorTransformer>.Save(ComponentWriter writer)
    {
        writer.Writer.Write(InputColumnName);
        writer.Writer.Write(LanguageColumnName);
        writer.Writer.Write(ScoreColumnName);
    }

    static LanguageDetectorTransformer IPersistentComponent<LanguageDetectorTransformer>.Load(IHostEnvironment env, ComponentReader reader) =>
        new(reader.Reader.ReadString(), reader.Reader.ReadString(), reader.Reader.ReadString());
}
