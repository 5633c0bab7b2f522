using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Data.Internal;
using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>Options of <c>mlContext.Llm().GenerateText</c>: the columns, the decoding and the batch size.</summary>
public sealed class TextGenerationOptions
{
    /// <summary>The default value of every option, written once.</summary>
    internal static class Defaults
    {
        public const string OutputColumnName = "Completion";
        public const string InputColumnName = "Prompt";
        public const int BatchSize = 8;
    }

    /// <summary>The completion column added: Text, or a vector of Text when <see cref="GenerationOptions.NumReturnSequences"/> is above 1.</summary>
    public string OutputColumnName { get; set; } = Defaults.OutputColumnName;

    /// <summary>The prompt column read (Text).</summary>
    public string InputColumnName { get; set; } = Defaults.InputColumnName;

    /// <summary>How completions are generated (length, sampling, beams, stops).</summary>
    public GenerationOptions Generation { get; set; } = new();

    /// <summary>
    /// How many rows are generated together in one batch when a cursor reads the completion column (a row-to-row mapper,
    /// such as a <c>PredictionEngine</c>, generates one row at a time). With sampling, batch k of a cursor draws from a
    /// generator seeded with <see cref="GenerationOptions.Seed"/> + k.
    /// </summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    internal TextGenerationOptions Clone() => new()
    {
        OutputColumnName = OutputColumnName,
        InputColumnName = InputColumnName,
        Generation = Generation?.Clone()!,
        BatchSize = BatchSize,
    };

    private static void CheckColumnName(string? name, string option)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException($"TextGenerationOptions.{option} is '{name}'; expected a column name.", option);
        }
    }

    internal void Validate()
    {
        CheckColumnName(OutputColumnName, nameof(OutputColumnName));
        CheckColumnName(InputColumnName, nameof(InputColumnName));
        if (Generation is null)
        {
            throw new ArgumentNullException(nameof(Generation), "TextGenerationOptions.Generation is null; expected generation options.");
        }

        Generation.Validate();
        if (BatchSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(BatchSize), Invariant($"TextGenerationOptions.BatchSize is {BatchSize}; expected an integer of at least 1."));
        }
    }
}

/// <summary>
/// Estimator of <see cref="TextGenerationTransformer"/>: <c>mlContext.Llm().GenerateText(model, output, input, options)</c>.
/// Needs no training; <see cref="Fit"/> checks the prompt column.
/// </summary>
public sealed class TextGenerationEstimator : IEstimator<TextGenerationTransformer>
{
    private readonly CausalLmTransformer _languageModel;
    private readonly IReadOnlyList<AppendColumnsTransformerBase> _promptTransforms;
    private readonly TextGenerationOptions _options;

    internal TextGenerationEstimator(CausalLmTransformer languageModel, IReadOnlyList<AppendColumnsTransformerBase> promptTransforms, TextGenerationOptions options)
    {
        _languageModel = languageModel;
        _promptTransforms = promptTransforms;
        _options = options.Clone();
        _options.Validate();
        if (languageModel.Tokenizer is null)
        {
            throw new ArgumentException("The model was trained without a tokenizer (bare token ids), so it cannot turn prompts into tokens. Train it after TokenizeForLm or set CausalLmTrainerOptions.Tokenizer.", "model");
        }
    }

    /// <summary>Checks the prompt column and creates the transformer (no data is read).</summary>
    public TextGenerationTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.TextColumn(input.Schema, _options.InputColumnName);
        return new TextGenerationTransformer(_languageModel, _promptTransforms, _options);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.TextColumn(inputSchema, _options.InputColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        var kind = _options.Generation.NumReturnSequences > 1 ? SchemaShape.Column.VectorKind.Vector : SchemaShape.Column.VectorKind.Scalar;
        columns[_options.OutputColumnName] = ModelPersistence.SchemaColumn(_options.OutputColumnName, kind, TextDataViewType.Instance, false);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }
}

/// <summary>
/// Adds a completion column to an <see cref="IDataView"/> of prompts: the text a language model generates after each
/// prompt (<see cref="TextGenerator"/>), a vector of <see cref="GenerationOptions.NumReturnSequences"/> completions when
/// above 1. Cursors are lazy: completions are generated when the column is read, <see cref="TextGenerationOptions.BatchSize"/>
/// rows at a time in one batch. Row-to-row: works in a <c>PredictionEngine</c> (one row at a time). Saves into and loads
/// from an ML.NET model zip with its options, the language model and the prompt's text transforms.
/// </summary>
/// <remarks>
/// <para>
/// Prompts pass through the text transforms that the model's pipeline applied to its training text before the
/// tokenizer (<c>NormalizeForLm</c>, <c>RedactPii</c>), when the estimator was given the whole pipeline. The transformer holds one model:
/// do not read two cursors of its output from different threads at the same time.
/// </para>
/// <para>
/// Appended to the fitted pipeline it was made from (<c>prep.Append(lm).Append(generate)</c>: normalize → tokenize →
/// <c>PackTokens</c> → language model → this), it saves into one zip with it, and that chain runs over prompts given in
/// the pipeline's text column (ML.NET's prediction inputs share the training schema). One row at a time (a
/// <c>PredictionEngine</c>, the chain's row-to-row mapper): <c>PackTokens</c> gives each row its own tokens at inference
/// time and the language model scores a row only when asked, so the prompt row reaches this transformer unchanged. Over
/// an <see cref="IDataView"/> (the chain's <c>Transform</c>), <c>PackTokens</c> still packs, as training and evaluation
/// need; this transformer then receives the language model's token blocks instead of prompts, and generates over the
/// rows packing read (found through the views the blocks were computed from): one row per prompt, with two columns,
/// the prompt and the completion. Either way the completions are the generator's alone: it holds the language model
/// and applies the pipeline's text transforms itself.
/// </para>
/// </remarks>
public sealed class TextGenerationTransformer : PersistentTransformerBase, ITransformer, IPersistentComponent<TextGenerationTransformer>
{
    internal const string LoaderSignature = "LlmTextGeneration";

    /// <summary>The first format: GenerationOptions.EarlyStopping was a bool.</summary>
    internal const uint FirstVersion = 0x00010002;

    /// <summary>Since this format GenerationOptions.EarlyStopping is a <see cref="BeamEarlyStopping"/> (int32).</summary>
    internal const uint EarlyStoppingModeVersion = 0x00010003;

    /// <summary>Since this format the language model and the prompt transforms are written as shared components: a zip
    /// that also holds them elsewhere (the fitted pipeline this generator was appended to) stores them once.</summary>
    internal const uint SharedModelVersion = 0x00010004;

    internal static readonly ComponentVersion Version =
        new("LMTXTGEN", SharedModelVersion, FirstVersion, LoaderSignature, typeof(TextGenerationTransformer).Assembly);

    static ComponentVersion IPersistentComponent<TextGenerationTransformer>.PersistenceVersion => Version;

    private readonly TextGenerationOptions _options;
    private readonly TextGenerator _generator;
    private readonly object _lock = new();

    internal TextGenerationTransformer(CausalLmTransformer languageModel, IReadOnlyList<AppendColumnsTransformerBase> promptTransforms, TextGenerationOptions options)
        : base(Version)
    {
        LanguageModel = languageModel;
        _options = options;
        _generator = new TextGenerator(languageModel.Model, languageModel.Tokenizer!, promptTransforms);
    }

    /// <summary>The language model that generates.</summary>
    public CausalLmTransformer LanguageModel { get; }

    /// <summary>A generator over the same model, tokenizer and prompt transforms, for direct, batched or streaming calls.</summary>
    public TextGenerator Generator => _generator;

    /// <summary>The completion column added.</summary>
    public string OutputColumnName => _options.OutputColumnName;

    /// <summary>The prompt column read.</summary>
    public string InputColumnName => _options.InputColumnName;

    /// <summary>A copy of the generation options.</summary>
    public GenerationOptions GenerationOptions => _options.Generation.Clone();

    /// <summary>The number of rows generated together by a cursor.</summary>
    public int BatchSize => _options.BatchSize;

    /// <summary>True: one output row per input row.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>
    /// The input's columns and the completion column; for the language model's token blocks (a whole training chain's
    /// <c>Transform</c>: the input lacks the prompt column and holds the model's token column), the prompt and the completion.
    /// </summary>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return IsTokenBlocks(inputSchema) ? PromptCompletionView.MakeSchema(_options.InputColumnName, _options.OutputColumnName, CompletionType)
            : MakeMapper(inputSchema, source: null).OutputSchema;
    }

    /// <summary>A mapper that generates each row's completion on its own (a <c>PredictionEngine</c> uses it).</summary>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return MakeMapper(inputSchema, source: null);
    }

    /// <summary>
    /// Adds the completion column; completions are generated lazily, a batch of rows at a time. Given the language model's
    /// token blocks (see <see cref="GetOutputSchema"/>), generates over the rows they were packed from: the prompt and
    /// completion columns, one row per prompt.
    /// </summary>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (IsTokenBlocks(input.Schema))
        {
            var prompts = PromptRows(input);
            var generated = new AppendColumnsDataView(prompts, MakeMapper(prompts.Schema, prompts));
            return new PromptCompletionView(generated, _options.InputColumnName, _options.OutputColumnName, CompletionType);
        }

        return new AppendColumnsDataView(input, MakeMapper(input.Schema, input));
    }

    private DataViewType CompletionType => _options.Generation.NumReturnSequences > 1
        ? new VectorDataViewType(TextDataViewType.Instance, _options.Generation.NumReturnSequences)
        : TextDataViewType.Instance;

    /// <summary>
    /// True when <paramref name="schema"/> is the language model's token blocks rather than prompts: no prompt column, and
    /// the model's token column with its tokenizer (what <c>PackTokens</c> and the model's scoring output).
    /// </summary>
    private bool IsTokenBlocks(DataViewSchema schema) =>
        schema.GetColumnOrNull(_options.InputColumnName) is null
        && schema.GetColumnOrNull(LanguageModel.TokensColumnName) is { } tokens && tokens.TryGetTokenizer(out _);

    /// <summary>The view the token blocks of <paramref name="blocks"/> were computed from that has the prompt column.</summary>
    private IDataView PromptRows(IDataView blocks)
    {
        var view = blocks;
        while (view.Schema.GetColumnOrNull(_options.InputColumnName) is null)
        {
            view = view is IDerivedDataView derived ? derived.Source : throw new ArgumentOutOfRangeException("input",
                $"Could not find input column '{_options.InputColumnName}': GenerateText received the language model's token column '{LanguageModel.TokensColumnName}', and none of the views it was computed from has the prompt column. Give the prompts in column '{_options.InputColumnName}'.");
        }

        return view;
    }

    private AppendColumnsMapper MakeMapper(DataViewSchema inputSchema, IDataView? source)
    {
        var prompt = SchemaChecks.TextColumn(inputSchema, _options.InputColumnName);
        int n = _options.Generation.NumReturnSequences;
        return new AppendColumnsMapper(inputSchema, prompt.Index, [new(_options.OutputColumnName, CompletionType)], (row, active) =>
        {
            var promptGetter = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[prompt.Index]);
            var batches = source is null ? null : new CompletionBatches(this, source, prompt);
            long cachedPosition = -1;
            string[] cached = [];
            string[] Completions()
            {
                if (row.Position != cachedPosition)
                {
                    ReadOnlyMemory<char> text = default;
                    promptGetter(ref text);
                    string promptText = text.ToString();
                    cached = batches?.Get(row.Position, promptText) ?? GenerateBatch([promptText], 0);
                    cachedPosition = row.Position;
                }

                return cached;
            }

            Delegate getter = n > 1
                ? (ValueGetter<VBuffer<ReadOnlyMemory<char>>>)((ref VBuffer<ReadOnlyMemory<char>> value) =>
                {
                    var completions = Completions();
                    var editor = VBufferEditor.Create(ref value, n);
                    for (int i = 0; i < n; i++)
                    {
                        editor.Values[i] = completions[i].AsMemory();
                    }

                    value = editor.Commit();
                })
                : (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> value) => value = Completions()[0].AsMemory());
            return [getter];
        })
        {
            SingleCursor = true,
        };
    }

    /// <summary>Generates the completions of <paramref name="prompts"/>: NumReturnSequences per prompt, in prompt order.</summary>
    private string[] GenerateBatch(IReadOnlyList<string> prompts, long batchIndex)
    {
        var options = _options.Generation;
        if (options.Seed is { } seed && batchIndex != 0)
        {
            options = options.Clone();
            options.Seed = unchecked(seed + (int)batchIndex);
        }

        lock (_lock)
        {
            return [.. _generator.Generate(prompts, options)];
        }
    }

    /// <summary>
    /// The prompt and completion columns of the generated rows (a whole training chain's output): the rows of the view
    /// the completions were appended to, with only those two columns, typed as <see cref="MakeSchema"/> says.
    /// </summary>
    private sealed class PromptCompletionView : IDataView
    {
        private readonly IDataView _source;
        private readonly int[] _columns;                     // output column → source column

        public PromptCompletionView(IDataView source, string prompt, string completion, DataViewType completionType)
        {
            _source = source;
            _columns = [source.Schema[prompt].Index, source.Schema[completion].Index];
            Schema = MakeSchema(prompt, completion, completionType);
        }

        public DataViewSchema Schema { get; }

        public bool CanShuffle => _source.CanShuffle;

        public static DataViewSchema MakeSchema(string prompt, string completion, DataViewType completionType)
        {
            var builder = new DataViewSchema.Builder();
            builder.AddColumn(prompt, TextDataViewType.Instance);
            builder.AddColumn(completion, completionType);
            return builder.ToSchema();
        }

        public long? GetRowCount() => _source.GetRowCount();

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
            new Cursor(this, _source.GetRowCursor(columnsNeeded.Select(c => _source.Schema[_columns[c.Index]]), rand));

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
            [GetRowCursor(columnsNeeded, rand)];

        private sealed class Cursor(PromptCompletionView view, DataViewRowCursor input) : DataViewRowCursor
        {
            public override DataViewSchema Schema => view.Schema;

            public override long Position => input.Position;

            public override long Batch => input.Batch;

            public override ValueGetter<DataViewRowId> GetIdGetter() => input.GetIdGetter();

            public override bool MoveNext() => input.MoveNext();

            public override bool IsColumnActive(DataViewSchema.Column column) => input.IsColumnActive(input.Schema[view._columns[column.Index]]);

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) =>
                input.GetGetter<TValue>(input.Schema[view._columns[column.Index]]);

            protected override void Dispose(bool disposing)
            {
                if (disposing)
                {
                    input.Dispose();
                }

                base.Dispose(disposing);
            }
        }
    }

    /// <summary>
    /// Reads prompts ahead of a cursor, <see cref="BatchSize"/> rows at a time, through a second cursor over the same
    /// input (ML.NET cursors over one view yield the same rows in the same order), and generates each block in one batch.
    /// A row whose prompt differs from the one read ahead (a shuffled cursor) is generated on its own.
    /// </summary>
    private sealed class CompletionBatches(TextGenerationTransformer owner, IDataView source, DataViewSchema.Column prompt)
    {
        private DataViewRowCursor? _ahead;
        private ValueGetter<ReadOnlyMemory<char>>? _aheadGetter;
        private long _blockStart = -1;
        private string[] _prompts = [];
        private string[]? _completions;

        public string[] Get(long position, string promptText)
        {
            int size = owner._options.BatchSize;
            int n = owner._options.Generation.NumReturnSequences;
            long block = position / size;
            if (_blockStart != block * size)
            {
                ReadBlock(block * size, size);
                _completions = _prompts.Length == 0 ? [] : owner.GenerateBatch(_prompts, block);
            }

            int offset = (int)(position - _blockStart);
            if (offset >= _prompts.Length || _prompts[offset] != promptText)
            {
                return owner.GenerateBatch([promptText], position);
            }

            return _completions!.AsSpan(offset * n, n).ToArray();
        }

        private void ReadBlock(long start, int size)
        {
            if (_ahead is null || _ahead.Position >= start)
            {
                _ahead?.Dispose();
                _ahead = source.GetRowCursor([prompt]);
                _aheadGetter = _ahead.GetGetter<ReadOnlyMemory<char>>(prompt);
            }

            var prompts = new List<string>(size);
            while (_ahead.Position < start - 1 && _ahead.MoveNext())
            {
            }

            ReadOnlyMemory<char> text = default;
            while (prompts.Count < size && _ahead.MoveNext())
            {
                _aheadGetter!(ref text);
                prompts.Add(text.ToString());
            }

            _prompts = [.. prompts];
            _blockStart = start;
        }
    }

    // Binary format (version 0x00010004; 0x00010002 and 0x00010003 are still read): OutputColumnName, InputColumnName
    // (string), BatchSize (int32), the GenerationOptions (GenerationOptionsFormat), prompt-transform count (int32).
    // Nested components: "LanguageModel" (CausalLmTransformer), "PromptTransform{i}" (TextNormalizerTransformer or
    // PiiRedactorTransformer) for each prompt transform, in order; since 0x00010004 each written as a shared component
    // (ComponentWriter.WriteSharedComponent: bool shared + directory in the main stream, the entry only when not shared),
    // so `fittedPipeline.Append(generator)` saves the model's weights once.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(_options.OutputColumnName);
        w.Write(_options.InputColumnName);
        w.Write(_options.BatchSize);
        GenerationOptionsFormat.Write(w, _options.Generation);
        w.Write(_generator.PromptTransforms.Count);
        writer.WriteSharedComponent("LanguageModel", LanguageModel);
        for (int i = 0; i < _generator.PromptTransforms.Count; i++)
        {
            writer.WriteSharedComponent(Invariant($"PromptTransform{i}"), _generator.PromptTransforms[i]);
        }
    }

    // Binary format: see SaveState.
    static TextGenerationTransformer IPersistentComponent<TextGenerationTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        var options = new TextGenerationOptions
        {
            OutputColumnName = r.ReadString(),
            InputColumnName = r.ReadString(),
            BatchSize = r.ReadInt32(),
            Generation = GenerationOptionsFormat.Read(r, reader.Version),
        };
        int count = r.ReadInt32();
        if (count < 0 || count > 1024)
        {
            throw new FormatException(Invariant($"The text generation component records {count} prompt transforms; expected 0 to 1024."));
        }

        options.Validate();
        bool shared = reader.Version >= SharedModelVersion;
        var languageModel = shared ? reader.ReadSharedComponent<CausalLmTransformer>("LanguageModel") : reader.ReadComponent<CausalLmTransformer>("LanguageModel");
        var transforms = new List<AppendColumnsTransformerBase>();
        for (int i = 0; i < count; i++)
        {
            string name = Invariant($"PromptTransform{i}");
            var transform = shared ? reader.ReadSharedComponent<AppendColumnsTransformerBase>(name) : reader.ReadComponent<AppendColumnsTransformerBase>(name);
            if (transform is not (TextNormalizerTransformer or PiiRedactorTransformer))
            {
                throw new FormatException(Invariant($"The model zip entry 'PromptTransform{i}' holds a {transform.GetType().Name}; expected a TextNormalizerTransformer or PiiRedactorTransformer."));
            }

            transforms.Add(transform);
        }

        return new TextGenerationTransformer(languageModel, transforms, options);
    }
}

/// <summary>The binary form of <see cref="GenerationOptions"/> inside a saved component.</summary>
internal static class GenerationOptionsFormat
{
    // Binary format: MaxNewTokens (int32), DoSample (bool), Temperature, TopK (int32), TopP, MinP, RepetitionPenalty
    // (float32 each but TopK), has-seed (bool), Seed (int32), StopStrings (int32 count + strings), EosTokenIds (int32 count
    // + int32s), NoRepeatNgramSize (int32), PresencePenalty, FrequencyPenalty (float32), MinNewTokens (int32), BadWordsIds
    // (int32 count, then int32 length + int32s each), NumReturnSequences, NumBeams (int32), LengthPenalty (float32),
    // EarlyStopping (int32 BeamEarlyStopping since component version 0x00010003; before, a bool: false → Heuristic,
    // true → WhenBeamsFinished), PromptOverflow, ContextOverflow (int32).
    public static void Write(BinaryWriter w, GenerationOptions o)
    {
        w.Write(o.MaxNewTokens);
        w.Write(o.DoSample);
        w.Write(o.Temperature);
        w.Write(o.TopK);
        w.Write(o.TopP);
        w.Write(o.MinP);
        w.Write(o.RepetitionPenalty);
        w.Write(o.Seed.HasValue);
        w.Write(o.Seed ?? 0);
        w.Write(o.StopStrings.Count);
        foreach (var s in o.StopStrings)
        {
            w.Write(s);
        }

        WriteInts(w, o.EosTokenIds);
        w.Write(o.NoRepeatNgramSize);
        w.Write(o.PresencePenalty);
        w.Write(o.FrequencyPenalty);
        w.Write(o.MinNewTokens);
        w.Write(o.BadWordsIds.Count);
        foreach (var word in o.BadWordsIds)
        {
            WriteInts(w, word);
        }

        w.Write(o.NumReturnSequences);
        w.Write(o.NumBeams);
        w.Write(o.LengthPenalty);
        w.Write((int)o.EarlyStopping);
        w.Write((int)o.PromptOverflow);
        w.Write((int)o.ContextOverflow);
    }

    // version: the component version the options were written with.
    public static GenerationOptions Read(BinaryReader r, uint version)
    {
        var o = new GenerationOptions
        {
            MaxNewTokens = r.ReadInt32(),
            DoSample = r.ReadBoolean(),
            Temperature = r.ReadSingle(),
            TopK = r.ReadInt32(),
            TopP = r.ReadSingle(),
            MinP = r.ReadSingle(),
            RepetitionPenalty = r.ReadSingle(),
        };
        bool hasSeed = r.ReadBoolean();
        int seed = r.ReadInt32();
        o.Seed = hasSeed ? seed : null;
        int stops = Count(r);
        for (int i = 0; i < stops; i++)
        {
            o.StopStrings.Add(r.ReadString());
        }

        o.EosTokenIds = ReadInts(r);
        o.NoRepeatNgramSize = r.ReadInt32();
        o.PresencePenalty = r.ReadSingle();
        o.FrequencyPenalty = r.ReadSingle();
        o.MinNewTokens = r.ReadInt32();
        int words = Count(r);
        for (int i = 0; i < words; i++)
        {
            o.BadWordsIds.Add(ReadInts(r));
        }

        o.NumReturnSequences = r.ReadInt32();
        o.NumBeams = r.ReadInt32();
        o.LengthPenalty = r.ReadSingle();
        o.EarlyStopping = version >= TextGenerationTransformer.EarlyStoppingModeVersion
            ? (BeamEarlyStopping)r.ReadInt32()
            : r.ReadBoolean() ? BeamEarlyStopping.WhenBeamsFinished : BeamEarlyStopping.Heuristic;
        o.PromptOverflow = (PromptOverflow)r.ReadInt32();
        o.ContextOverflow = (ContextOverflow)r.ReadInt32();
        return o;
    }

    private static void WriteInts(BinaryWriter w, IList<int> values)
    {
        w.Write(values.Count);
        foreach (int v in values)
        {
            w.Write(v);
        }
    }

    private static List<int> ReadInts(BinaryReader r)
    {
        int count = Count(r);
        var values = new List<int>(count);
        for (int i = 0; i < count; i++)
        {
            values.Add(r.ReadInt32());
        }

        return values;
    }

    private static int Count(BinaryReader r)
    {
        int count = r.ReadInt32();
        if (count < 0 || count > 1 << 24)
        {
            throw new FormatException(Invariant($"The saved generation options hold a list of {count} entries; expected 0 to {1 << 24}."));
        }

        return count;
    }
}
