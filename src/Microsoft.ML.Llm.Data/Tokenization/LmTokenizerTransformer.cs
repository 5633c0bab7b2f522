// TokenizeForLm: text column → variable-length Int32 token column carrying the LmTokenizer as an annotation.
// Options, estimator (builds or trains the tokenizer in Fit) and transformer (persisted with the tokenizer's
// definition; the row mapping comes from the transform kit, plus a parallel batch cursor).
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>Options of <c>TokenizeForLm</c>.</summary>
public sealed class LmTokenizerOptions
{
    internal static class Defaults
    {
        public const LmTokenizerKind Kind = LmTokenizerKind.Bpe;
        public const string TiktokenEncoding = "o200k_base";
        public const string EndOfTextToken = LmTokenizer.DefaultEndOfTextToken;
        public const bool CharacterSpecialTokens = false;
        public const int VocabularySize = 8192;
        public const int MinPairFrequency = 2;
        public const PreTokenizationPattern PreTokenization = PreTokenizationPattern.Gpt2;
        public const int MaxTokenLength = 32;
    }

    /// <summary>A ready tokenizer to use; when set, <see cref="Kind"/> and the building options are ignored.</summary>
    public LmTokenizer? Tokenizer { get; set; }

    /// <summary>
    /// Which tokenizer <c>Fit</c> builds when <see cref="Tokenizer"/> is null: <see cref="LmTokenizerKind.Character"/>
    /// (the sorted distinct characters of the input column), <see cref="LmTokenizerKind.Bytes"/> or
    /// <see cref="LmTokenizerKind.Tiktoken"/> (<see cref="TiktokenEncoding"/>) or <see cref="LmTokenizerKind.Bpe"/>
    /// (the default: a byte-level BPE trained on the input column, see <see cref="VocabularySize"/> and the other BPE options).
    /// </summary>
    public LmTokenizerKind Kind { get; set; } = Defaults.Kind;

    /// <summary>The tiktoken encoding for <see cref="LmTokenizerKind.Tiktoken"/>: "o200k_base" or "cl100k_base".</summary>
    public string TiktokenEncoding { get; set; } = Defaults.TiktokenEncoding;

    /// <summary>The end-of-text special token of tokenizers built in Fit (null for none).</summary>
    public string? EndOfTextToken { get; set; } = Defaults.EndOfTextToken;

    /// <summary>The padding special token of tokenizers built in Fit (null for none, the default).</summary>
    public string? PadToken { get; set; }

    /// <summary>
    /// Whether a character tokenizer gets the special tokens too. Off by default: the vocabulary is exactly the
    /// distinct characters, as nanoGPT's shakespeare_char (65 on tinyshakespeare).
    /// </summary>
    public bool CharacterSpecialTokens { get; set; } = Defaults.CharacterSpecialTokens;

    /// <summary>BPE: the beginning-of-text special token (null for none, the default).</summary>
    public string? BeginOfTextToken { get; set; }

    /// <summary>BPE: the target vocabulary size, counting the 256 byte tokens and the special tokens.</summary>
    public int VocabularySize { get; set; } = Defaults.VocabularySize;

    /// <summary>BPE: a pair seen fewer times than this is never merged (training stops early). At least 1.</summary>
    public int MinPairFrequency { get; set; } = Defaults.MinPairFrequency;

    /// <summary>BPE: the regex that splits text into words before merging (GPT-2, cl100k or o200k).</summary>
    public PreTokenizationPattern PreTokenization { get; set; } = Defaults.PreTokenization;

    /// <summary>BPE: the longest token, in bytes, a merge may create (0 for no limit).</summary>
    public int MaxTokenLength { get; set; } = Defaults.MaxTokenLength;

    /// <summary>Threads for BPE training and for encoding in cursors; null means all cores.</summary>
    public int? MaxDegreeOfParallelism { get; set; }

    internal void ValidateBpe(int specialCount)
    {
        if (VocabularySize < 256 + specialCount)
        {
            throw new ArgumentOutOfRangeException(nameof(VocabularySize), VocabularySize,
                $"LmTokenizerOptions.VocabularySize must be at least 256 + {specialCount} special tokens = {256 + specialCount} for a byte-level BPE; got {VocabularySize}.");
        }

        if (MinPairFrequency < 1)
            throw new ArgumentOutOfRangeException(nameof(MinPairFrequency), MinPairFrequency, $"LmTokenizerOptions.MinPairFrequency must be at least 1; got {MinPairFrequency}.");
        if (MaxTokenLength < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxTokenLength), MaxTokenLength, $"LmTokenizerOptions.MaxTokenLength must be 0 (no limit) or more; got {MaxTokenLength}.");
        if (MaxDegreeOfParallelism is < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxDegreeOfParallelism), MaxDegreeOfParallelism, $"LmTokenizerOptions.MaxDegreeOfParallelism must be at least 1 or null; got {MaxDegreeOfParallelism}.");
        if (!Enum.IsDefined(PreTokenization))
        {
            throw new ArgumentOutOfRangeException(nameof(PreTokenization), PreTokenization,
                $"LmTokenizerOptions.PreTokenization {(int)PreTokenization} is not a pattern; accepted: {string.Join(", ", Enum.GetNames<PreTokenizationPattern>())}.");
        }
    }
}

/// <summary>Estimator of <c>TokenizeForLm</c>: builds (or takes) the tokenizer in <see cref="Fit"/>.</summary>
public sealed class LmTokenizerEstimator : IEstimator<LmTokenizerTransformer>
{
    private readonly string _outputColumnName;
    private readonly string _inputColumnName;
    private readonly LmTokenizerOptions _options;

    internal LmTokenizerEstimator(string outputColumnName, string? inputColumnName, LmTokenizerOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        _outputColumnName = outputColumnName;
        _inputColumnName = inputColumnName ?? outputColumnName;
        _options = options;
        if (options.Tokenizer is null && !Enum.IsDefined(options.Kind))
            throw new ArgumentOutOfRangeException(nameof(options), $"LmTokenizerOptions.Kind {(int)options.Kind} is not a tokenizer kind; accepted: {string.Join(", ", Enum.GetNames<LmTokenizerKind>())}.");
        if (options.Tokenizer is null && options.Kind == LmTokenizerKind.Tiktoken && !LmTokenizer.TiktokenEncodings.Contains(options.TiktokenEncoding))
        {
            throw new ArgumentOutOfRangeException(nameof(options),
                $"LmTokenizerOptions.TiktokenEncoding '{options.TiktokenEncoding}' is not available; accepted values are {string.Join(", ", LmTokenizer.TiktokenEncodings.Select(e => $"'{e}'"))}.");
        }

        if (options.Tokenizer is null && options.Kind == LmTokenizerKind.Bpe)
        {
            int specials = new[] { options.EndOfTextToken, options.PadToken, options.BeginOfTextToken }.Count(t => t is not null);
            options.ValidateBpe(specials);
        }
        if (options.Tokenizer is null && options.Kind == LmTokenizerKind.SentencePiece)
        {
            throw new ArgumentOutOfRangeException(nameof(options),
                "LmTokenizerOptions.Kind is SentencePiece but LmTokenizerOptions.Tokenizer is null; load the model with LmTokenizer.FromSentencePiece and set Tokenizer.");
        }

        if (options.Tokenizer is null && options.Kind == LmTokenizerKind.Custom)
            throw new ArgumentOutOfRangeException(nameof(options), "LmTokenizerOptions.Kind is Custom but LmTokenizerOptions.Tokenizer is null; set Tokenizer to the custom tokenizer.");
    }

    /// <summary>Builds the tokenizer (scanning the input column where the kind needs the corpus) and returns the transformer.</summary>
    public LmTokenizerTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.TextColumn(input.Schema, _inputColumnName);
        LmTokenizer tokenizer = _options.Tokenizer ?? _options.Kind switch
        {
            LmTokenizerKind.Character => BuildCharacter(input),
            LmTokenizerKind.Bytes => LmTokenizer.Bytes(_options.EndOfTextToken, _options.PadToken),
            LmTokenizerKind.Tiktoken => LmTokenizer.Tiktoken(_options.TiktokenEncoding),
            LmTokenizerKind.Bpe => TrainBpe(input),
            _ => throw new NotSupportedException($"LmTokenizerOptions.Kind {_options.Kind} cannot be built in Fit; accepted: Bpe, Character, Bytes, Tiktoken."),
        };
        return new LmTokenizerTransformer(_outputColumnName, _inputColumnName, tokenizer) { MaxDegreeOfParallelism = _options.MaxDegreeOfParallelism };
    }

    private LmTokenizer BuildCharacter(IDataView input)
    {
        var column = input.Schema[_inputColumnName];
        try
        {
            return LmTokenizer.Character(ReadTexts(input, column),
                _options.CharacterSpecialTokens ? _options.EndOfTextToken : null,
                _options.CharacterSpecialTokens ? _options.PadToken : null);
        }
        catch (ArgumentException e) when (e.ParamName == "corpus")
        {
            throw new InvalidOperationException(
                $"The input column '{_inputColumnName}' holds no text (an empty corpus); a character tokenizer needs at least one character to build its vocabulary.", e);
        }
    }

    private LmTokenizer TrainBpe(IDataView input)
    {
        var column = input.Schema[_inputColumnName];
        try
        {
            var tokenizer = LmTokenizer.TrainBpe(ReadMemories(input, column), _options, out var report);
            LastTrainingReport = report;
            return tokenizer;
        }
        catch (ArgumentException e) when (e.ParamName == "corpus")
        {
            throw new InvalidOperationException(
                $"The input column '{_inputColumnName}' holds no text (an empty corpus); BPE training needs at least one character.", e);
        }
    }

    /// <summary>What the latest BPE training in <see cref="Fit"/> did, with the time of each phase (null before any).</summary>
    public BpeTrainingReport? LastTrainingReport { get; private set; }

    private static IEnumerable<ReadOnlyMemory<char>> ReadMemories(IDataView input, DataViewSchema.Column column)
    {
        using var cursor = input.GetRowCursor([column]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            // The loader may reuse the buffer behind value for the next row: keep a copy.
            yield return value.ToArray();
        }
    }

    internal static IEnumerable<string> ReadTexts(IDataView input, DataViewSchema.Column column) =>
        ReadMemories(input, column).Select(text => text.ToString());

    /// <summary>The output column is a variable-length Int32 vector carrying the tokenizer annotation.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.TextColumn(inputSchema, _inputColumnName);
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_outputColumnName] = ModelPersistence.SchemaColumn(_outputColumnName, SchemaShape.Column.VectorKind.VariableVector,
            NumberDataViewType.Int32, isKey: false, LmAnnotations.Shape);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }
}

/// <summary>
/// Transformer of <c>TokenizeForLm</c>: adds a variable-length Int32 token column (<see cref="VectorDataViewType"/> of
/// size 0) computed from a text column; the column carries <see cref="Tokenizer"/> as its <see cref="LmAnnotations.TokenizerKind"/> annotation.
/// Row-to-row: <see cref="AppendColumnsTransformerBase.GetRowToRowMapper"/> works (so prediction engines do).
/// </summary>
public sealed class LmTokenizerTransformer : AppendColumnsTransformerBase, IPersistentComponent<LmTokenizerTransformer>
{
    internal const string LoaderSignature = "LmTokenizingTransformer";

    internal static readonly ComponentVersion Version =
        new("LMTOKENZ", 0x00010002, 0x00010001, LoaderSignature, typeof(LmTokenizerTransformer).Assembly);

    static ComponentVersion IPersistentComponent<LmTokenizerTransformer>.PersistenceVersion => Version;

    private int? _maxDegreeOfParallelism;

    internal LmTokenizerTransformer(string outputColumnName, string inputColumnName, LmTokenizer tokenizer)
        : base(Version)
    {
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Tokenizer = tokenizer;
    }

    /// <summary>The tokenizer the transformer applies.</summary>
    public LmTokenizer Tokenizer { get; }

    /// <summary>Name of the token column added.</summary>
    public string OutputColumnName { get; }

    /// <summary>Name of the text column read.</summary>
    public string InputColumnName { get; }

    /// <summary>
    /// Threads a cursor uses to encode when only the token column is requested (as <c>PackTokens</c> does): it reads a
    /// batch of rows and encodes them in parallel, one tokenizer copy per thread (a trained BPE's copies have their own
    /// pre-tokenization regex, so threads do not contend on one Regex). Null means all cores; 1 encodes row by row.
    /// Character and byte tokenizers always encode row by row. Not persisted.
    /// </summary>
    public int? MaxDegreeOfParallelism
    {
        get => _maxDegreeOfParallelism;
        set
        {
            if (value is < 1)
                throw new ArgumentOutOfRangeException(nameof(MaxDegreeOfParallelism), value, $"MaxDegreeOfParallelism must be at least 1 or null; got {value}.");
            _maxDegreeOfParallelism = value;
        }
    }

    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        var text = SchemaChecks.TextColumn(inputSchema, InputColumnName);
        var tokens = new AddedColumn(OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32), LmAnnotations.Create(Tokenizer));
        int parallelism = MaxDegreeOfParallelism ?? Environment.ProcessorCount;
        // Character and byte tokenizers are cheaper than the batch copies, so they stay serial.
        bool batched = parallelism > 1 && Tokenizer.Kind is not (LmTokenizerKind.Character or LmTokenizerKind.Bytes);
        AppendColumnsMapper? mapper = null;
        mapper = new AppendColumnsMapper(inputSchema, text.Index, [tokens], (row, active) => [MakeGetter(row, text)])
        {
            // Only the token column wanted (the text column is the one input column read): encode batches in parallel.
            FastCursor = batched
                ? (input, requested) => requested.Count > 0 && requested.All(c => c.Index >= inputSchema.Count)
                    ? new BatchCursor(mapper!.OutputSchema, input, text, Tokenizer, parallelism)
                    : null
                : null,
        };
        return mapper;
    }

    // Binary format (version 0x00010001): OutputColumnName (string), InputColumnName (string), then the tokenizer as
    // LmTokenizer.Save writes it. No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        writer.Writer.Write(OutputColumnName);
        writer.Writer.Write(InputColumnName);
        Tokenizer.Save(writer.Writer);
    }

    // Binary format: see SaveState.
    static LmTokenizerTransformer IPersistentComponent<LmTokenizerTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        string output = reader.Reader.ReadString();
        string input = reader.Reader.ReadString();
        var tokenizer = LmTokenizer.Load(reader.Reader);
        return new LmTokenizerTransformer(output, input, tokenizer);
    }

    /// <summary>Builds the token getter of one input row (a cursor's or a prediction engine's).</summary>
    private ValueGetter<VBuffer<int>> MakeGetter(DataViewRow input, DataViewSchema.Column textColumn)
    {
        var textGetter = input.GetGetter<ReadOnlyMemory<char>>(textColumn);
        var ids = new List<int>();
        ReadOnlyMemory<char> text = default;
        long cachedPosition = -1;
        return (ref VBuffer<int> value) =>
        {
            if (cachedPosition != input.Position || input.Position < 0)
            {
                textGetter(ref text);
                ids.Clear();
                Tokenizer.EncodeInto(text.Span, ids);
                cachedPosition = input.Position;
            }
            var editor = VBufferEditor.Create(ref value, ids.Count);
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(ids).CopyTo(editor.Values);
            value = editor.Commit();
        };
    }

    /// <summary>
    /// Reads up to <see cref="BatchRows"/> rows (or <see cref="BatchCharacters"/> characters) of text, encodes them
    /// in parallel, then serves them in order: same rows, same order, same ids as the serial cursor.
    /// </summary>
    private sealed class BatchCursor : DataViewRowCursor
    {
        private const int BatchRows = 4096;
        private const int BatchCharacters = 4 << 20;

        private readonly DataViewSchema _schema;
        private readonly DataViewRowCursor _input;
        private readonly LmTokenizer _tokenizer;
        private readonly ValueGetter<ReadOnlyMemory<char>> _text;
        private readonly ValueGetter<DataViewRowId> _inputId;
        private readonly ParallelOptions _parallel;
        private readonly List<string> _texts = [];
        private readonly List<DataViewRowId> _ids = [];
        private int[][] _tokens = [];
        private int _current = -1;
        private long _position = -1;
        private bool _exhausted;

        public BatchCursor(DataViewSchema schema, DataViewRowCursor input, DataViewSchema.Column textColumn, LmTokenizer tokenizer, int parallelism)
        {
            _schema = schema;
            _input = input;
            _tokenizer = tokenizer;
            _text = input.GetGetter<ReadOnlyMemory<char>>(textColumn);
            _inputId = input.GetIdGetter();
            _parallel = new ParallelOptions { MaxDegreeOfParallelism = parallelism };
        }

        public override DataViewSchema Schema => _schema;

        public override long Position => _position;

        public override long Batch => 0;

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = _ids[_current];

        public override bool IsColumnActive(DataViewSchema.Column column) => column.Index >= _input.Schema.Count;

        public override bool MoveNext()
        {
            if (++_current < _texts.Count)
            {
                _position++;
                return true;
            }
            if (_exhausted || !Fill())
            {
                _position = -1;
                return false;
            }
            _current = 0;
            _position++;
            return true;
        }

        private bool Fill()
        {
            _texts.Clear();
            _ids.Clear();
            long characters = 0;
            ReadOnlyMemory<char> text = default;
            DataViewRowId id = default;
            while (_texts.Count < BatchRows && characters < BatchCharacters)
            {
                if (!_input.MoveNext())
                {
                    _exhausted = true;
                    break;
                }
                _text(ref text);
                _inputId(ref id);
                _texts.Add(text.ToString());
                _ids.Add(id);
                characters += text.Length;
            }
            if (_texts.Count == 0)
                return false;
            if (_tokens.Length < _texts.Count)
                _tokens = new int[_texts.Count][];
            // One tokenizer per worker (its own pre-tokenization regex), chunks of rows handed out dynamically.
            int workers = _parallel.MaxDegreeOfParallelism;
            int count = _texts.Count;
            var tokenizers = _tokenizer.WorkerCopies(workers);
            int chunk = Math.Max(1, count / (workers * 8));
            int next = 0;
            Parallel.For(0, workers, _parallel, w =>
            {
                var tokenizer = tokenizers[w];
                int start;
                while ((start = Interlocked.Add(ref next, chunk) - chunk) < count)
                {
                    for (int i = start, end = Math.Min(count, start + chunk); i < end; i++)
                        _tokens[i] = tokenizer.Encode(_texts[i]);
                }
            });
            return true;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < _input.Schema.Count)
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it in GetRowCursor's columnsNeeded.");
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> value) =>
            {
                int[] tokens = _tokens[_current];
                var editor = VBufferEditor.Create(ref value, tokens.Length);
                tokens.CopyTo(editor.Values);
                value = editor.Commit();
            };
            return getter as ValueGetter<TValue> ?? throw SchemaChecks.WrongGetterType<TValue, VBuffer<int>>();
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
