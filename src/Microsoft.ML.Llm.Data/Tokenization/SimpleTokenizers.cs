// Two small Microsoft.ML.Tokenizers.Tokenizer implementations the library ships itself: a character-level
// tokenizer (nanoGPT's shakespeare_char: the vocabulary is the sorted distinct characters of the corpus) and a
// byte-level tokenizer (256 UTF-8 byte tokens). Both append their special tokens after the regular ids.
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Llm.Data;

/// <summary>Shared plumbing: special tokens after the regular ids, span-first encoding, decoding into a span.</summary>
internal abstract class SimpleTokenizer : Tokenizer
{
    private readonly string[] _specialById;

    protected SimpleTokenizer(int regularCount, IReadOnlyList<string> specialTokens)
    {
        RegularCount = regularCount;
        _specialById = specialTokens.ToArray();
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < _specialById.Length; i++)
            specials.Add(_specialById[i], regularCount + i);
        SpecialTokens = specials;
    }

    /// <summary>Number of regular (non-special) tokens; specials follow them.</summary>
    public int RegularCount { get; }

    /// <summary>Special tokens and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>All ids: regular tokens then specials.</summary>
    public int VocabularySize => RegularCount + _specialById.Length;

    /// <summary>Appends the ids of <paramref name="text"/> to <paramref name="ids"/>.</summary>
    public abstract void EncodeInto(ReadOnlySpan<char> text, List<int> ids);

    /// <summary>Decodes ids (already checked to be in range) to text.</summary>
    public abstract string DecodeToString(ReadOnlySpan<int> ids);

    /// <summary>The text of special id <paramref name="id"/>, or null when it is a regular id.</summary>
    protected string? SpecialText(int id) => id >= RegularCount ? _specialById[id - RegularCount] : null;

    protected override EncodeResults<int> EncodeToIds(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var ids = new List<int>(span.Length);
        EncodeInto(span, ids);
        int consumed = span.Length;
        if (settings.MaxTokenCount > 0 && ids.Count > settings.MaxTokenCount)
        {
            // Count the characters the kept tokens cover.
            var tokens = EncodeToTokens(text, textSpan, settings).Tokens;
            consumed = tokens.Count == 0 ? 0 : tokens[^1].Offset.End.Value;
            ids.RemoveRange(settings.MaxTokenCount, ids.Count - settings.MaxTokenCount);
        }
        return new EncodeResults<int> { Tokens = ids, NormalizedText = null, CharsConsumed = consumed };
    }

    protected override int CountTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
        => EncodeToIds(text, textSpan, settings).Tokens.Count;

    public override string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        int[] array = ids as int[] ?? ids.ToArray();
        foreach (int id in array)
        {
            if ((uint)id >= (uint)VocabularySize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary; valid ids are 0 to {VocabularySize - 1}.");
        }

        return DecodeToString(array);
    }

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten)
    {
        ArgumentNullException.ThrowIfNull(ids);
        int[] array = ids as int[] ?? ids.ToArray();
        foreach (int id in array)
        {
            if ((uint)id >= (uint)VocabularySize)
            {
                idsConsumed = 0;
                charsWritten = 0;
                return OperationStatus.InvalidData;
            }
        }
        string text = DecodeToString(array);
        if (text.Length > destination.Length)
        {
            idsConsumed = 0;
            charsWritten = 0;
            return OperationStatus.DestinationTooSmall;
        }
        text.AsSpan().CopyTo(destination);
        idsConsumed = array.Length;
        charsWritten = text.Length;
        return OperationStatus.Done;
    }
}

/// <summary>
/// Character-level tokenizer: one id per Unicode code point of a fixed, sorted alphabet (nanoGPT shakespeare_char).
/// </summary>
internal sealed class CharacterTokenizer : SimpleTokenizer
{
    private readonly int[] _alphabet;          // code points, ascending; id = index
    private readonly int[] _bmpToId;           // id + 1 of each BMP char, 0 when absent
    private readonly Dictionary<int, int> _astralToId = new();

    public CharacterTokenizer(IReadOnlyList<int> alphabet, IReadOnlyList<string> specialTokens)
        : base(alphabet.Count, specialTokens)
    {
        _alphabet = alphabet.ToArray();
        _bmpToId = new int[65536];
        for (int i = 0; i < _alphabet.Length; i++)
        {
            int cp = _alphabet[i];
            if (i > 0 && cp <= _alphabet[i - 1])
                throw new ArgumentException("The character alphabet must be strictly ascending code points.", nameof(alphabet));
            if (cp < 65536)
                _bmpToId[cp] = i + 1;
            else
                _astralToId[cp] = i;
        }
    }

    /// <summary>The alphabet (code points, ascending); id = index.</summary>
    public IReadOnlyList<int> Alphabet => _alphabet;

    public override void EncodeInto(ReadOnlySpan<char> text, List<int> ids)
    {
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            int id;
            if (!char.IsSurrogate(c))
            {
                id = _bmpToId[c] - 1;
                if (id < 0)
                    throw Unknown(c, i);
            }
            else
            {
                if (!char.IsHighSurrogate(c) || i + 1 >= text.Length || !char.IsLowSurrogate(text[i + 1]) ||
                    !_astralToId.TryGetValue(char.ConvertToUtf32(c, text[i + 1]), out id))
                {
                    throw Unknown(char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])
                        ? char.ConvertToUtf32(c, text[i + 1]) : c, i);
                }

                i++;
            }
            ids.Add(id);
        }
    }

    private ArgumentException Unknown(int codePoint, int index) => new(
        $"The character '{(Rune.IsValid(codePoint) ? new Rune(codePoint).ToString() : "?")}' (U+{codePoint:X4}) at index {index} is not in the character tokenizer's " +
        $"vocabulary of {_alphabet.Length} characters (the distinct characters seen when it was built).", "text");

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var ids = new List<int>(span.Length);
        EncodeInto(span, ids);
        var tokens = new List<EncodedToken>(ids.Count);
        int max = settings.MaxTokenCount > 0 ? settings.MaxTokenCount : int.MaxValue;
        int pos = 0;
        foreach (int id in ids)
        {
            if (tokens.Count == max)
                break;
            int length = _alphabet[id] >= 65536 ? 2 : 1;
            tokens.Add(new EncodedToken(id, span.Slice(pos, length).ToString(), new Range(pos, pos + length)));
            pos += length;
        }
        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = null, CharsConsumed = pos };
    }

    public override string DecodeToString(ReadOnlySpan<int> ids)
    {
        var sb = new StringBuilder(ids.Length);
        foreach (int id in ids)
        {
            string? special = SpecialText(id);
            if (special is not null)
                sb.Append(special);
            else
                sb.Append(new Rune(_alphabet[id]).ToString());
        }
        return sb.ToString();
    }
}

/// <summary>Byte-level tokenizer: ids 0-255 are the UTF-8 bytes of the text, special tokens follow.</summary>
internal sealed class ByteTokenizer : SimpleTokenizer
{
    public ByteTokenizer(IReadOnlyList<string> specialTokens) : base(256, specialTokens) { }

    public override void EncodeInto(ReadOnlySpan<char> text, List<int> ids)
    {
        int max = Encoding.UTF8.GetMaxByteCount(text.Length);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(max);
        try
        {
            int n = Encoding.UTF8.GetBytes(text, buffer);
            ids.EnsureCapacity(ids.Count + n);
            for (int i = 0; i < n; i++)
                ids.Add(buffer[i]);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> span = text is null ? textSpan : text.AsSpan();
        var tokens = new List<EncodedToken>(span.Length);
        int max = settings.MaxTokenCount > 0 ? settings.MaxTokenCount : int.MaxValue;
        Span<byte> utf8 = stackalloc byte[4];
        int pos = 0;
        while (pos < span.Length)
        {
            int length = char.IsHighSurrogate(span[pos]) && pos + 1 < span.Length && char.IsLowSurrogate(span[pos + 1]) ? 2 : 1;
            int n = Encoding.UTF8.GetBytes(span.Slice(pos, length), utf8);
            if (tokens.Count + n > max)
                break;
            for (int b = 0; b < n; b++)
                tokens.Add(new EncodedToken(utf8[b], span.Slice(pos, length).ToString(), new Range(pos, pos + length)));
            pos += length;
        }
        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = null, CharsConsumed = pos };
    }

    public override string DecodeToString(ReadOnlySpan<int> ids)
    {
        var sb = new StringBuilder(ids.Length);
        byte[] bytes = ArrayPool<byte>.Shared.Rent(Math.Max(1, ids.Length));
        try
        {
            int pending = 0;
            foreach (int id in ids)
            {
                string? special = SpecialText(id);
                if (special is null)
                {
                    bytes[pending++] = (byte)id;
                    continue;
                }
                if (pending > 0)
                {
                    sb.Append(Encoding.UTF8.GetString(bytes, 0, pending));
                    pending = 0;
                }
                sb.Append(special);
            }
            if (pending > 0)
                sb.Append(Encoding.UTF8.GetString(bytes, 0, pending));
            return sb.ToString();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }
}
