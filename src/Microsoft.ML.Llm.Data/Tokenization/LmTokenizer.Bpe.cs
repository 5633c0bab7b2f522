// LmTokenizer: byte-level BPE (trained here or loaded from Hugging Face vocab.json + merges.txt) and SentencePiece.
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Llm.Data;

public sealed partial class LmTokenizer
{
    /// <summary>A byte-level BPE's definition: tokens by id (byte-level strings, specials as written), merges, pattern.</summary>
    private sealed record BpeDefinition(string[] TokensById, (string Left, string Right)[] Merges, PreTokenizationPattern Pattern);

    private BpeDefinition? _bpe;
    private byte[]? _sentencePieceModel;
    private bool _sentencePieceAddsBos;

    /// <summary>The pre-tokenization pattern of a BPE tokenizer (null for other kinds).</summary>
    public PreTokenizationPattern? PreTokenization => _bpe?.Pattern;

    /// <summary>
    /// Trains a byte-level BPE on <paramref name="corpus"/> (what <c>TokenizeForLm</c>'s Fit does when no tokenizer is
    /// given): the vocabulary holds the 256 bytes, one token per learned merge, then the special tokens.
    /// </summary>
    /// <param name="corpus">The training texts.</param>
    /// <param name="options">Vocabulary size, minimum pair frequency, pre-tokenization pattern, max token length, special tokens.</param>
    public static LmTokenizer TrainBpe(IEnumerable<string> corpus, LmTokenizerOptions? options = null)
        => TrainBpe(corpus, options, out _);

    /// <summary>Trains a byte-level BPE and reports the time of each phase.</summary>
    /// <param name="corpus">The training texts.</param>
    /// <param name="options">Vocabulary size, minimum pair frequency, pre-tokenization pattern, max token length, special tokens.</param>
    /// <param name="report">What training did and how long each phase took.</param>
    public static LmTokenizer TrainBpe(IEnumerable<string> corpus, LmTokenizerOptions? options, out BpeTrainingReport report)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        return TrainBpe(corpus.Where(t => t is not null).Select(t => t.AsMemory()), options ?? new LmTokenizerOptions(), out report);
    }

    internal static LmTokenizer TrainBpe(IEnumerable<ReadOnlyMemory<char>> corpus, LmTokenizerOptions options, out BpeTrainingReport report)
    {
        var specials = SpecialList(options.EndOfTextToken, options.PadToken);
        if (options.BeginOfTextToken is { } bos)
        {
            if (bos.Length == 0 || specials.Contains(bos))
                throw new ArgumentException($"LmTokenizerOptions.BeginOfTextToken '{bos}' must be non-empty and differ from the other special tokens.", nameof(options));
            specials.Add(bos);
        }
        options.ValidateBpe(specials.Count);
        var trainer = new BpeTrainer(options.VocabularySize, options.MinPairFrequency, options.MaxTokenLength, options.PreTokenization, specials,
            options.MaxDegreeOfParallelism ?? Environment.ProcessorCount);
        trainer.Train(corpus);
        var clock = Stopwatch.StartNew();
        // Token strings: bytes via GPT-2's byte ↔ character map, each merge the concatenation of its parts.
        var tokens = new List<string>(256 + trainer.Merges.Count + specials.Count);
        for (int b = 0; b < 256; b++)
            tokens.Add(ByteLevelAlphabet.ByteToChar[b].ToString());
        var merges = new (string, string)[trainer.Merges.Count];
        for (int i = 0; i < merges.Length; i++)
        {
            var (left, right) = trainer.Merges[i];
            merges[i] = (tokens[left], tokens[right]);
            tokens.Add(tokens[left] + tokens[right]);
        }
        tokens.AddRange(specials);
        var definition = new BpeDefinition([.. tokens], merges, options.PreTokenization);
        int regular = tokens.Count - specials.Count;
        var specialIds = specials.Select((s, i) => (s, regular + i)).ToDictionary(x => x.s, x => x.Item2, StringComparer.Ordinal);
        var tokenizer = CreateBpe(definition, specialIds,
            options.EndOfTextToken is null ? null : specialIds[options.EndOfTextToken],
            options.PadToken is null ? null : specialIds[options.PadToken]);
        trainer.SetBuildTime(clock.Elapsed);
        report = trainer.Report!;
        return tokenizer;
    }

    private static LmTokenizer CreateBpe(BpeDefinition definition, Dictionary<string, int> specials, int? endOfTextId, int? padId, Regex? regex = null)
    {
        regex ??= PreTokenizationRegexes.Get(definition.Pattern);
        var vocabulary = definition.TokensById.Select((token, id) => KeyValuePair.Create(token, id));
        var options = new BpeOptions(vocabulary)
        {
            Merges = definition.Merges.Select(m => m.Left + " " + m.Right),
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(regex, specials.Count == 0 ? null : specials),
            SpecialTokens = specials.Count == 0 ? null : specials,
        };
        var tokenizer = BpeTokenizer.Create(options);
        return new LmTokenizer(LmTokenizerKind.Bpe, tokenizer, definition.TokensById.Length, specials, endOfTextId, padId) { _bpe = definition };
    }

    /// <summary>
    /// Tokenizers for <paramref name="count"/> encoding threads, made once and kept. A trained BPE gets copies with their
    /// own pre-tokenization <see cref="Regex"/> (see <see cref="PreTokenizationRegexes.Create"/>); other kinds share this
    /// instance (Tiktoken's pre-tokenizer regex is internal to Microsoft.ML.Tokenizers).
    /// </summary>
    internal LmTokenizer[] WorkerCopies(int count)
    {
        lock (_workerLock)
        {
            if (_workers.Length < count)
            {
                var workers = new LmTokenizer[count];
                for (int i = 0; i < count; i++)
                {
                    workers[i] = i < _workers.Length ? _workers[i]
                        : i == 0 || _bpe is null ? this
                        : CreateBpe(_bpe, new Dictionary<string, int>(SpecialTokens, StringComparer.Ordinal), EndOfTextId, PadId, PreTokenizationRegexes.Create(_bpe.Pattern));
                }

                _workers = workers;
            }
            return _workers;
        }
    }

    private readonly object _workerLock = new();
    private LmTokenizer[] _workers = [];

    private void FillBpeByteCounts(int[] counts)
    {
        // Every character of a byte-level token stands for one byte.
        var tokens = _bpe!.TokensById;
        for (int id = 0; id < tokens.Length; id++)
            counts[id] = tokens[id].Length;
    }

    /// <summary>
    /// Writes the BPE's vocabulary and merges in the Hugging Face layout: <c>vocab.json</c> (token → id, specials
    /// included) and <c>merges.txt</c> (<c>#version: 0.2</c> then one "left right" merge per line). Each file is written
    /// to a temporary name and renamed.
    /// </summary>
    /// <exception cref="InvalidOperationException">The tokenizer is not a BPE.</exception>
    public void SaveBpeFiles(string vocabularyPath, string mergesPath)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabularyPath);
        ArgumentException.ThrowIfNullOrEmpty(mergesPath);
        var bpe = _bpe ?? throw new InvalidOperationException($"SaveBpeFiles needs a BPE tokenizer; this one is {_kind}.");
        WriteAtomically(vocabularyPath, stream =>
        {
            using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false });
            json.WriteStartObject();
            for (int id = 0; id < bpe.TokensById.Length; id++)
                json.WriteNumber(bpe.TokensById[id], id);
            json.WriteEndObject();
        });
        WriteAtomically(mergesPath, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false)) { NewLine = "\n" };
            writer.WriteLine("#version: 0.2");
            foreach (var (left, right) in bpe.Merges)
                writer.WriteLine($"{left} {right}");
        });
    }

    private static void WriteAtomically(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        string temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
                write(stream);
            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
                File.Delete(temp);
        }
    }

    /// <summary>
    /// Loads a byte-level BPE from Hugging Face files (GPT-2 style <c>vocab.json</c> + <c>merges.txt</c>).
    /// </summary>
    /// <param name="vocabularyPath">vocab.json: a JSON object of token → id with ids 0 … n-1.</param>
    /// <param name="mergesPath">merges.txt: optional <c>#version</c> line, then "left right" per line.</param>
    /// <param name="preTokenization">The pre-tokenization regex the vocabulary was trained with.</param>
    /// <param name="endOfTextToken">The end-of-text token, if the vocabulary has it.</param>
    /// <param name="padToken">The padding token, if the vocabulary has it.</param>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="FormatException">A file is not a byte-level BPE vocabulary or merges list.</exception>
    public static LmTokenizer FromBpeFiles(string vocabularyPath, string mergesPath, PreTokenizationPattern preTokenization = PreTokenizationPattern.Gpt2,
        string? endOfTextToken = DefaultEndOfTextToken, string? padToken = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(vocabularyPath);
        ArgumentException.ThrowIfNullOrEmpty(mergesPath);
        PreTokenizationRegexes.Get(preTokenization);
        var vocabulary = ReadVocabulary(vocabularyPath);
        var tokensById = new string[vocabulary.Count];
        foreach (var (token, id) in vocabulary)
        {
            if (id < 0 || id >= tokensById.Length || tokensById[id] is not null)
                throw new FormatException($"The vocabulary file '{vocabularyPath}' is not a BPE vocabulary: token ids must be 0 to {tokensById.Length - 1}, each once; got {id} for '{token}'.");
            tokensById[id] = token;
        }
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string? special in new[] { endOfTextToken, padToken })
        {
            if (special is not null && vocabulary.TryGetValue(special, out int id))
                specials[special] = id;
        }

        CheckByteLevel(vocabulary, specials, $"The vocabulary file '{vocabularyPath}' is not a byte-level BPE vocabulary");
        var merges = ReadMerges(mergesPath, vocabulary);
        return CreateBpe(new BpeDefinition(tokensById, merges, preTokenization), specials,
            endOfTextToken is not null && specials.TryGetValue(endOfTextToken, out int eos) ? eos : null,
            padToken is not null && specials.TryGetValue(padToken, out int pad) ? pad : null);
    }

    private static Dictionary<string, int> ReadVocabulary(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"The vocabulary file '{path}' does not exist.", path);
        try
        {
            using var stream = File.OpenRead(path);
            var vocabulary = JsonSerializer.Deserialize<Dictionary<string, int>>(stream);
            if (vocabulary is null || vocabulary.Count == 0)
                throw new FormatException($"The vocabulary file '{path}' is not a BPE vocabulary: expected a JSON object of token → id, got an empty or null document.");
            return vocabulary;
        }
        catch (JsonException e)
        {
            throw new FormatException($"The vocabulary file '{path}' is not a BPE vocabulary: expected a JSON object of token → id ({e.Message}).", e);
        }
    }

    private static (string Left, string Right)[] ReadMerges(string path, Dictionary<string, int> vocabulary)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"The merges file '{path}' does not exist.", path);
        var merges = new List<(string, string)>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)))
                continue;
            int space = line.IndexOf(' ');
            if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0)
                throw new FormatException($"The merges file '{path}' is not a BPE merges list: line {lineNumber} is '{line}', expected two tokens separated by one space.");
            string left = line[..space], right = line[(space + 1)..];
            if (!vocabulary.ContainsKey(left) || !vocabulary.ContainsKey(right) || !vocabulary.ContainsKey(left + right))
            {
                throw new FormatException($"The merges file '{path}' does not match the vocabulary: line {lineNumber} merges '{left}' and '{right}', " +
                    "but the vocabulary lacks one of them or their concatenation.");
            }

            merges.Add((left, right));
        }
        return [.. merges];
    }

    private void SaveBpe(BinaryWriter writer)
    {
        var bpe = _bpe!;
        writer.Write((int)bpe.Pattern);
        writer.Write(bpe.TokensById.Length);
        foreach (string token in bpe.TokensById)
            writer.Write(token);
        writer.Write(bpe.Merges.Length);
        foreach (var (left, right) in bpe.Merges)
        {
            writer.Write(left);
            writer.Write(right);
        }
        writer.Write(SpecialTokens.Count);
        foreach (var (token, id) in SpecialTokens.OrderBy(kv => kv.Value))
        {
            writer.Write(token);
            writer.Write(id);
        }
        writer.Write(EndOfTextId ?? -1);
        writer.Write(PadId ?? -1);
    }

    private static LmTokenizer LoadBpe(BinaryReader reader)
    {
        var pattern = (PreTokenizationPattern)reader.ReadInt32();
        var tokens = new string[reader.ReadInt32()];
        for (int i = 0; i < tokens.Length; i++)
            tokens[i] = reader.ReadString();
        var merges = new (string, string)[reader.ReadInt32()];
        for (int i = 0; i < merges.Length; i++)
            merges[i] = (reader.ReadString(), reader.ReadString());
        int count = reader.ReadInt32();
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
            specials.Add(reader.ReadString(), reader.ReadInt32());
        int eos = reader.ReadInt32();
        int pad = reader.ReadInt32();
        return CreateBpe(new BpeDefinition(tokens, merges, pattern), specials, eos >= 0 ? eos : null, pad >= 0 ? pad : null);
    }

    /// <summary>Loads a SentencePiece (Llama-style BPE) tokenizer from a <c>.model</c> file.</summary>
    /// <param name="modelPath">The SentencePiece model protobuf.</param>
    /// <param name="addBeginningOfSentence">Whether encoding prepends the beginning-of-sentence token (as Llama does).</param>
    /// <exception cref="FileNotFoundException">The file is missing.</exception>
    /// <exception cref="FormatException">The file is not a SentencePiece model.</exception>
    public static LmTokenizer FromSentencePiece(string modelPath, bool addBeginningOfSentence = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelPath);
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"The SentencePiece model file '{modelPath}' does not exist.", modelPath);
        return CreateSentencePiece(File.ReadAllBytes(modelPath), addBeginningOfSentence, $"The file '{modelPath}'");
    }

    /// <summary>Loads a SentencePiece (Llama-style BPE) tokenizer from a <c>.model</c> stream.</summary>
    /// <param name="model">The SentencePiece model protobuf.</param>
    /// <param name="addBeginningOfSentence">Whether encoding prepends the beginning-of-sentence token (as Llama does).</param>
    public static LmTokenizer FromSentencePiece(Stream model, bool addBeginningOfSentence = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var copy = new MemoryStream();
        model.CopyTo(copy);
        return CreateSentencePiece(copy.ToArray(), addBeginningOfSentence, "The stream");
    }

    private static LmTokenizer CreateSentencePiece(byte[] model, bool addBos, string source)
    {
        SentencePieceTokenizer tokenizer;
        try
        {
            tokenizer = LlamaTokenizer.Create(new MemoryStream(model, writable: false), addBeginOfSentence: addBos, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new FormatException($"{source} is not a SentencePiece model (a .model protobuf with pieces and a BPE or unigram trainer spec): {e.Message}", e);
        }
        if (tokenizer.Vocabulary.Count == 0)
            throw new FormatException($"{source} is not a SentencePiece model: it holds no pieces.");
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (tokenizer.SpecialTokens is { } declared)
        {
            foreach (var (token, id) in declared)
                specials[token] = id;
        }

        foreach (var (token, id) in new[] { (tokenizer.BeginningOfSentenceToken, tokenizer.BeginningOfSentenceId), (tokenizer.EndOfSentenceToken, tokenizer.EndOfSentenceId), (tokenizer.UnknownToken, tokenizer.UnknownId) })
        {
            if (token is not null && id >= 0)
                specials.TryAdd(token, id);
        }

        int vocabularySize = Math.Max(tokenizer.Vocabulary.Values.Max(), specials.Values.DefaultIfEmpty(-1).Max()) + 1;
        int? eos = tokenizer.EndOfSentenceId >= 0 ? tokenizer.EndOfSentenceId : null;
        return new LmTokenizer(LmTokenizerKind.SentencePiece, tokenizer, vocabularySize, specials, eos, padId: null)
        {
            _sentencePieceModel = model,
            _sentencePieceAddsBos = addBos,
        };
    }

    private void FillSentencePieceByteCounts(int[] counts)
    {
        var tokenizer = (SentencePieceTokenizer)Tokenizer;
        foreach (var (piece, id) in tokenizer.Vocabulary)
        {
            if ((uint)id >= (uint)counts.Length)
                continue;
            if (piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>')
                counts[id] = 1;   // byte-fallback piece
            else
                counts[id] = Encoding.UTF8.GetByteCount(piece.Replace('\u2581', ' '));
        }
    }

    private void SaveSentencePiece(BinaryWriter writer)
    {
        writer.Write(_sentencePieceAddsBos);
        writer.Write(_sentencePieceModel!.Length);
        writer.Write(_sentencePieceModel);
    }

    private static LmTokenizer LoadSentencePiece(BinaryReader reader)
    {
        bool addBos = reader.ReadBoolean();
        byte[] model = reader.ReadBytes(reader.ReadInt32());
        return CreateSentencePiece(model, addBos, "The saved SentencePiece model");
    }

    /// <summary>
    /// Checks that every non-special token of a byte-level BPE vocabulary is spelled in GPT-2's 256 byte characters;
    /// otherwise throws <see cref="FormatException"/> "{what}: token 'X' (id N) has the character U+XXXX, …".
    /// </summary>
    private static void CheckByteLevel(IReadOnlyDictionary<string, int> vocabulary, IReadOnlyDictionary<string, int> specials, string what)
    {
        foreach (var (token, id) in vocabulary)
        {
            if (specials.ContainsKey(token))
                continue;
            foreach (char c in token)
            {
                if (!ByteLevelAlphabet.CharToByte.ContainsKey(c))
                    throw new FormatException($"{what}: token '{token}' (id {id}) has the character U+{(int)c:X4}, which is not one of GPT-2's 256 byte characters.");
            }
        }
    }
}
