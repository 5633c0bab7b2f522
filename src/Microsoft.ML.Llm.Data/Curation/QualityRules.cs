// The rule sets of TextQualityFilter, computed the way datatrove does (gopher_quality_filter.py,
// gopher_repetition_filter.py, c4_filters.py, fineweb_quality_filter.py), over spans of the text: no per-word
// strings, n-grams compared by 64-bit hashes of their word sequence, scratch buffers reused per cursor.
using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>One word token: a run of letters/digits/marks, or a run of other non-space characters.</summary>
internal struct WordToken
{
    public int Start;
    public int Length;
    public bool IsWord;     // has a character outside the punctuation set (datatrove's "non-symbol word")
    public bool HasLetter;  // has an alphabetic character
    public ulong Hash;
}

/// <summary>64-bit hashing of character spans (deterministic across processes).</summary>
internal static class SpanHash
{
    private const ulong K1 = 0x9E3779B97F4A7C15UL, K2 = 0xC2B2AE3D27D4EB4FUL;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mix(ulong h)
    {
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDUL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53UL;
        h ^= h >> 33;
        return h;
    }

    /// <summary>Hashes the characters of <paramref name="s"/> (8 bytes at a time).</summary>
    public static ulong Hash(ReadOnlySpan<char> s)
    {
        ulong h = K2 ^ ((ulong)s.Length * K1);
        var bytes = MemoryMarshal.AsBytes(s);
        int i = 0;
        for (; i + 8 <= bytes.Length; i += 8)
            h = BitOperations.RotateLeft((h ^ MemoryMarshal.Read<ulong>(bytes[i..])) * K1, 29) * K2;
        ulong tail = 0;
        for (int k = 0; i < bytes.Length; i++, k += 8)
            tail |= (ulong)bytes[i] << k;
        h = BitOperations.RotateLeft((h ^ tail) * K1, 29) * K2;
        return Mix(h);
    }

    /// <summary>Combines a running sequence hash with the next element.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Combine(ulong h, ulong next) => BitOperations.RotateLeft(h * K1, 31) ^ (next * K2 + 0x165667B19E3779F9UL);
}

/// <summary>Character classes used by the rules.</summary>
internal static class TextClasses
{
    /// <summary>datatrove's PUNCTUATION_SET, read as Unicode punctuation, symbols and control characters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsPunctuation(char c)
    {
        if (c < 128)
            return c < 0x30 ? c != ' ' : (c <= 0x39 ? false : (c < 0x41 || (c > 0x5A && c < 0x61) || c > 0x7A));
        var cat = CharUnicodeInfo.GetUnicodeCategory(c);
        return cat is >= UnicodeCategory.ConnectorPunctuation and <= UnicodeCategory.OtherSymbol || cat == UnicodeCategory.Control;
    }

    /// <summary>Python's <c>str.isalpha</c> for one character.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAlpha(char c) => c < 128 ? (uint)((c | 0x20) - 'a') <= 'z' - 'a' : char.IsLetter(c);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSpace(char c) => c < 128 ? (c == ' ' || (uint)(c - '\t') <= '\r' - '\t' || (uint)(c - 0x1C) <= 3) : char.IsWhiteSpace(c);

    /// <summary>datatrove's TERMINAL_PUNCTUATION (the common part of it).</summary>
    public static bool IsTerminalPunctuation(char c) => c switch
    {
        '.' or '!' or '?' or '…' or '。' or '！' or '？' or '．' or '؟' or '۔' or '।' or '॥' or '‼' or '⁇' or '⁈' or '⁉' or '｡' or '܁' or '܂' or '።' or '፧' or '፨' or '᙮' or '᠃' or '᠉' => true,
        _ => false,
    };
}

/// <summary>Evaluates the enabled rule sets on one document at a time; one instance per cursor (not thread-safe).</summary>
internal sealed class QualityEvaluator : RowFilterState
{
    private static readonly string[] s_policy = ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"];

    private readonly TextQualityFilterOptions _o;
    private readonly HashCounter _seen = new();
    private readonly HashCounter _counts = new();
    private ulong[] _prefixHash = new ulong[257];
    private int[] _prefixChars = new int[257];
    private static readonly ulong[] s_pow = BuildPowers();

    private const ulong RollBase = 0x9E3779B97F4A7C15UL;

    private static ulong[] BuildPowers()
    {
        var p = new ulong[64];
        p[0] = 1;
        for (int i = 1; i < p.Length; i++)
            p[i] = p[i - 1] * RollBase;
        return p;
    }

    /// <summary>Prefix hashes and character counts of the tokens, so any n-gram's hash and length is O(1).</summary>
    private void BuildPrefixes()
    {
        var tokens = Tokens;
        if (_prefixHash.Length < tokens.Length + 1)
        {
            _prefixHash = new ulong[tokens.Length * 2 + 1];
            _prefixChars = new int[tokens.Length * 2 + 1];
        }
        ulong h = 0;
        int c = 0;
        for (int i = 0; i < tokens.Length; i++)
        {
            h = h * RollBase + tokens[i].Hash;
            c += tokens[i].Length;
            _prefixHash[i + 1] = h;
            _prefixChars[i + 1] = c;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong NGramHash(int i, int n) =>
        n < s_pow.Length ? SpanHash.Mix((_prefixHash[i + n] - _prefixHash[i] * s_pow[n]) ^ ((ulong)n << 56)) : SlowNGramHash(i, n);

    private ulong SlowNGramHash(int i, int n)
    {
        ulong h = 0;
        for (int k = 0; k < n; k++)
            h = SpanHash.Combine(h, _tokens[i + k].Hash);
        return SpanHash.Mix(h);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int NGramChars(int i, int n) => _prefixChars[i + n] - _prefixChars[i];
    private readonly ulong[] _stopWordHashes;
    private WordToken[] _tokens = new WordToken[256];
    private int _tokenCount;
    private char[] _c4Buffer = new char[1024];
    private ReadOnlyMemory<char> _replacement;
    private bool _hasReplacement;

    public QualityEvaluator(TextQualityFilterOptions options)
    {
        _o = options;
        _stopWordHashes = options.GopherStopWords.Select(w => SpanHash.Hash(w)).ToArray();
    }

    public override bool TryGetReplacement(out ReadOnlyMemory<char> text)
    {
        text = _replacement;
        return _hasReplacement;
    }

    public override string? Evaluate(ReadOnlyMemory<char> memory)
    {
        _hasReplacement = false;
        ReadOnlySpan<char> text = memory.Span;
        bool tokenized = false;
        if (_o.GopherRepetition)
        {
            Tokenize(text);
            tokenized = true;
            if (GopherRepetition(text) is { } r)
                return r;
        }
        if (_o.GopherQuality)
        {
            if (!tokenized)
                Tokenize(text);
            if (GopherQuality(text) is { } r)
                return r;
        }
        if (_o.C4)
        {
            if (C4(text, out int keptLength) is { } r)
                return r;
            if (_o.C4RemoveLines && !_c4Buffer.AsSpan(0, keptLength).SequenceEqual(text))
            {
                _replacement = new string(_c4Buffer, 0, keptLength).AsMemory();
                _hasReplacement = true;
                text = _replacement.Span;
                tokenized = false;
            }
        }
        if (_o.FineWeb)
        {
            if (FineWeb(text, tokenized) is { } r)
                return r;
        }
        return null;
    }

    // ---------------------------------------------------------------- words

    /// <summary>
    /// Splits into word tokens like datatrove's English word tokenizer: whitespace separates tokens, and within a
    /// whitespace-separated chunk a run of letters/digits/marks (with inner apostrophes) and a run of punctuation
    /// are separate tokens ("Hello, world." → Hello , world .).
    /// </summary>
    internal int Tokenize(ReadOnlySpan<char> text)
    {
        int n = 0;
        int i = 0;
        while (i < text.Length)
        {
            char c = text[i];
            if (TextClasses.IsSpace(c))
            { i++; continue; }
            int start = i;
            bool isWord = !TextClasses.IsPunctuation(c);
            bool letter = false;
            if (isWord)
            {
                while (i < text.Length)
                {
                    c = text[i];
                    if (TextClasses.IsSpace(c))
                        break;
                    if (TextClasses.IsPunctuation(c))
                    {
                        // an apostrophe between two word characters stays inside the word (don't, l'homme)
                        if ((c == '\'' || c == '’') && i + 1 < text.Length && !TextClasses.IsSpace(text[i + 1]) && !TextClasses.IsPunctuation(text[i + 1]))
                        { i++; continue; }
                        break;
                    }
                    letter |= TextClasses.IsAlpha(c);
                    i++;
                }
            }
            else
            {
                while (i < text.Length && !TextClasses.IsSpace(text[i]) && TextClasses.IsPunctuation(text[i]))
                    i++;
            }
            if (n == _tokens.Length)
                Array.Resize(ref _tokens, n * 2);
            _tokens[n] = new WordToken { Start = start, Length = i - start, IsWord = isWord, HasLetter = letter, Hash = SpanHash.Hash(text[start..i]) };
            n++;
        }
        _tokenCount = n;
        return n;
    }

    internal ReadOnlySpan<WordToken> Tokens => _tokens.AsSpan(0, _tokenCount);

    // ---------------------------------------------------------------- Gopher quality

    private string? GopherQuality(ReadOnlySpan<char> text)
    {
        var o = _o;
        var tokens = Tokens;
        int nWords = tokens.Length;
        int nNonSymbol = 0;
        long nonSymbolChars = 0;
        int alphaWords = 0, stopWords = 0;
        foreach (ref readonly var t in tokens)
        {
            if (t.IsWord)
            { nNonSymbol++; nonSymbolChars += t.Length; }
            if (t.HasLetter)
                alphaWords++;
            if (t.Length <= 4 && IsStopWord(in t))
                stopWords++;
        }
        if (o.GopherMinDocWords > 0 && nNonSymbol < o.GopherMinDocWords)
            return "gopher_short_doc";
        if (o.GopherMaxDocWords > 0 && nNonSymbol > o.GopherMaxDocWords)
            return "gopher_long_doc";
        if (nNonSymbol > 0)
        {
            double avg = (double)nonSymbolChars / nNonSymbol;
            if (o.GopherMinAvgWordLength > 0 && avg < o.GopherMinAvgWordLength)
                return "gopher_below_avg_threshold";
            if (o.GopherMaxAvgWordLength > 0 && avg > o.GopherMaxAvgWordLength)
                return "gopher_above_avg_threshold";
        }
        if (o.GopherMaxSymbolWordRatio > 0 && nWords > 0)
        {
            if ((double)text.Count('#') / nWords > o.GopherMaxSymbolWordRatio)
                return "gopher_too_many_hashes";
            if ((double)(text.Count("...") + text.Count('…')) / nWords > o.GopherMaxSymbolWordRatio)
                return "gopher_too_many_ellipsis";
        }
        if (o.GopherMaxBulletLinesRatio > 0 || o.GopherMaxEllipsisLinesRatio > 0)
        {
            int lines = 0, bullets = 0, ellipsis = 0;
            foreach (var line in new LineEnumerator(text))
            {
                lines++;
                var l = line.TrimStart();
                if (l.StartsWith('•') || l.StartsWith('-'))
                    bullets++;
                var r = line.TrimEnd();
                if (r.EndsWith("...") || r.EndsWith('…'))
                    ellipsis++;
            }
            if (lines > 0)
            {
                if (o.GopherMaxBulletLinesRatio > 0 && (double)bullets / lines > o.GopherMaxBulletLinesRatio)
                    return "gopher_too_many_bullets";
                if (o.GopherMaxEllipsisLinesRatio > 0 && (double)ellipsis / lines > o.GopherMaxEllipsisLinesRatio)
                    return "gopher_too_many_end_ellipsis";
            }
        }
        if (o.GopherMinAlphaWordsRatio > 0 && nWords > 0 && (double)alphaWords / nWords < o.GopherMinAlphaWordsRatio)
            return "gopher_below_alpha_threshold";
        if (o.GopherMinStopWords > 0 && stopWords < o.GopherMinStopWords)
            return "gopher_enough_stop_words";
        return null;
    }

    private bool IsStopWord(in WordToken t)
    {
        foreach (ulong h in _stopWordHashes)
        {
            if (h == t.Hash)
                return true;
        }

        return false;
    }

    // ---------------------------------------------------------------- Gopher repetition

    private string? GopherRepetition(ReadOnlySpan<char> text)
    {
        var o = _o;
        if (text.Length == 0)
            return null;
        double len = text.Length;

        // paragraphs: re.split(r"\n{2,}", text.strip())
        var (paragraphs, paraDup, paraDupChars) = Duplicates(text.Trim(), paragraphs: true);
        if (o.DupParagraphFraction > 0 && (double)paraDup / paragraphs > o.DupParagraphFraction)
            return "dup_para_frac";
        if (o.DupParagraphCharFraction > 0 && paraDupChars / len > o.DupParagraphCharFraction)
            return "dup_para_char_frac";

        // lines: re.split("\n+", text)
        var (lines, lineDup, lineDupChars) = Duplicates(text, paragraphs: false);
        if (o.DupLineFraction > 0 && (double)lineDup / lines > o.DupLineFraction)
            return "dup_line_frac";
        if (o.DupLineCharFraction > 0 && lineDupChars / len > o.DupLineCharFraction)
            return "dup_line_char_frac";

        var tokens = Tokens;
        BuildPrefixes();
        foreach (var t in o.TopNGrams)
        {
            if (t.MaxCharFraction <= 0 || tokens.Length < t.N)
                continue;
            if (TopNGramChars(tokens, t.N) / len > t.MaxCharFraction)
                return $"top_{t.N}_gram";
        }
        foreach (var t in o.DuplicateNGrams)
        {
            if (t.MaxCharFraction <= 0)
                continue;
            if (DuplicateNGramChars(tokens, t.N) / len > t.MaxCharFraction)
                return $"duplicated_{t.N}_n_grams";
        }
        return null;
    }

    /// <summary>(elements, duplicate elements, characters in duplicate elements) of the split text.</summary>
    private (int Count, int Duplicates, long DuplicateChars) Duplicates(ReadOnlySpan<char> text, bool paragraphs)
    {
        _seen.Clear(text.Length / 32 + 16);
        int count = 0, dup = 0;
        long dupChars = 0;
        int start = 0;
        int i = 0;
        while (true)
        {
            int nl = text[i..].IndexOf('\n');
            if (nl < 0)
                break;
            nl += i;
            int end = nl;
            while (end < text.Length && text[end] == '\n')
                end++;
            if (!paragraphs || end - nl >= 2)
            {
                Add(text[start..nl]);
                start = end;
            }
            i = end;
            if (i >= text.Length)
                break;
        }
        Add(text[start..]);
        return (count, dup, dupChars);

        void Add(ReadOnlySpan<char> element)
        {
            count++;
            if (!_seen.Add(SpanHash.Hash(element)))
            {
                dup++;
                dupChars += element.Length;
            }
        }
    }

    /// <summary>Characters of the most frequent n-gram (" ".join) times its count; ties go to the first seen.</summary>
    private double TopNGramChars(ReadOnlySpan<WordToken> tokens, int n)
    {
        _counts.Clear(tokens.Length);
        int bestCount = 0, bestChars = 0, bestFirst = int.MaxValue;
        for (int i = 0; i + n <= tokens.Length; i++)
        {
            ref int count = ref _counts.Slot(NGramHash(i, n), i, out int first);
            count++;
            if (count > bestCount || (count == bestCount && first < bestFirst))
            {
                bestCount = count;
                bestChars = NGramChars(first, n) + n - 1;
                bestFirst = first;
            }
        }
        return (double)bestCount * bestChars;
    }

    /// <summary>datatrove's find_all_duplicate: characters ("".join) of n-grams seen before, skipping n words after each.</summary>
    private double DuplicateNGramChars(ReadOnlySpan<WordToken> tokens, int n)
    {
        _seen.Clear(tokens.Length);
        long repeated = 0;
        int idx = 0;
        while (idx < tokens.Length - n + 1)
        {
            if (!_seen.Add(NGramHash(idx, n)))
            {
                repeated += NGramChars(idx, n);
                idx += n;
            }
            else
            {
                idx++;
            }
        }
        return repeated;
    }

    // ---------------------------------------------------------------- C4

    private string? C4(ReadOnlySpan<char> text, out int keptLength)
    {
        var o = _o;
        bool original = o.C4Variant == C4Variant.OriginalC4;
        int minWords = o.C4MinWordsPerLine ?? (original ? 5 : 3);
        int minSentences = o.C4MinSentences ?? (original ? 3 : 5);
        if (_c4Buffer.Length < text.Length)
            _c4Buffer = new char[Math.Max(text.Length, _c4Buffer.Length * 2)];
        var output = _c4Buffer.AsSpan();
        keptLength = 0;
        int sentences = 0;
        char[]? lineBuffer = null;
        try
        {
            foreach (var rawLine in new LineEnumerator(text))
            {
                ReadOnlySpan<char> line = rawLine.Trim();
                int words = 0;
                bool tooLong = false;
                foreach (var w in new WordEnumerator(line))
                {
                    words++;
                    if (o.C4MaxWordLength > 0 && w.Length > o.C4MaxWordLength)
                        tooLong = true;
                }
                if (tooLong)
                    continue;
                if (o.C4RemoveCitations && line.Contains('['))
                {
                    if (lineBuffer == null || lineBuffer.Length < line.Length)
                    { if (lineBuffer != null) ArrayPool<char>.Shared.Return(lineBuffer); lineBuffer = ArrayPool<char>.Shared.Rent(line.Length); }
                    line = lineBuffer.AsSpan(0, RemoveCitations(line, lineBuffer));
                }
                if (o.C4FilterNoTerminalPunctuation)
                {
                    if (line.IsEmpty)
                        continue;
                    char last = line[^1];
                    bool endsOk = last is '.' or '?' or '!' or '"' || (last == '\'' && !original);
                    if (!endsOk || line.EndsWith("..."))
                        continue;
                }
                if (words < minWords)
                    continue;
                if (o.C4FilterLoremIpsum && line.Contains("lorem ipsum", StringComparison.OrdinalIgnoreCase))
                    return "lorem_ipsum";
                if (o.C4FilterJavascript && line.Contains("javascript", StringComparison.OrdinalIgnoreCase))
                    continue;
                if (o.C4FilterCurlyBracket && line.Contains('{'))
                    return "curly_bracket";
                if (o.C4FilterPolicy && ContainsPolicy(line))
                    continue;
                if (minSentences > 0)
                    sentences += CountSentences(line);
                if (keptLength > 0)
                    output[keptLength++] = '\n';
                line.CopyTo(output[keptLength..]);
                keptLength += line.Length;
            }
        }
        finally
        {
            if (lineBuffer != null)
                ArrayPool<char>.Shared.Return(lineBuffer);
        }
        if (sentences < minSentences)
            return "too_few_sentences";
        var kept = output[..keptLength].Trim();
        if (kept.Length != keptLength)
        {
            kept.CopyTo(output);
            keptLength = kept.Length;
        }
        return null;
    }

    private static bool ContainsPolicy(ReadOnlySpan<char> line)
    {
        foreach (var p in s_policy)
        {
            if (line.Contains(p, StringComparison.OrdinalIgnoreCase))
                return true;
        }

        return false;
    }

    /// <summary>Removes <c>[digits]</c>, <c>[edit]</c> and <c>[citation needed]</c> (C4's CITATION_REGEX).</summary>
    internal static int RemoveCitations(ReadOnlySpan<char> line, Span<char> dst)
    {
        int w = 0;
        for (int i = 0; i < line.Length; i++)
        {
            if (line[i] == '[')
            {
                var rest = line[(i + 1)..];
                int close = rest.IndexOf(']');
                if (close >= 0)
                {
                    var inner = rest[..close];
                    if (inner.SequenceEqual("edit") || inner.SequenceEqual("citation needed") || !inner.ContainsAnyExceptInRange('0', '9'))
                    {
                        i += close + 1;
                        continue;
                    }
                }
            }
            dst[w++] = line[i];
        }
        return w;
    }

    /// <summary>
    /// Sentences in a line: runs of '.', '!' or '?' (optionally followed by closing quotes or brackets) that end the
    /// line or are followed by whitespace end a sentence; a non-empty line has at least one. (datatrove uses NLTK's
    /// Punkt, which also knows abbreviations; this count may be higher after an abbreviation such as "Mr.".)
    /// </summary>
    internal static int CountSentences(ReadOnlySpan<char> line)
    {
        int count = 0;
        int i = 0;
        bool content = false;
        while (i < line.Length)
        {
            char c = line[i];
            if (c is '.' or '!' or '?')
            {
                while (i < line.Length && line[i] is '.' or '!' or '?')
                    i++;
                while (i < line.Length && line[i] is '"' or '\'' or ')' or ']' or '”' or '’')
                    i++;
                if (i == line.Length || TextClasses.IsSpace(line[i]))
                {
                    if (content)
                        count++;
                    content = false;
                }
                continue;
            }
            if (!TextClasses.IsSpace(c))
                content = true;
            i++;
        }
        if (content)
            count++;
        return count;
    }

    // ---------------------------------------------------------------- FineWeb

    private string? FineWeb(ReadOnlySpan<char> text, bool tokenized)
    {
        var o = _o;
        int lines = 0, punct = 0, shortLines = 0;
        long dupChars = 0;
        _seen.Clear(text.Length / 32 + 16);
        foreach (var line in new SplitEnumerator(text, '\n'))
        {
            if (line.IsWhiteSpace())
                continue;
            lines++;
            if (TextClasses.IsTerminalPunctuation(line[^1]))
                punct++;
            if (line.Length <= o.FineWebShortLineLength)
                shortLines++;
            if (!_seen.Add(SpanHash.Hash(line)))
                dupChars += line.Length;
        }
        if (lines == 0)
            return "empty";
        double ratio = (double)punct / lines;
        if (ratio < o.FineWebMinLinePunctuationRatio && !(ratio == 0 && o.FineWebLinePunctuationExcludeZero))
            return "line_punct_ratio";
        if (o.FineWebMaxShortLineRatio > 0 && (double)shortLines / lines > o.FineWebMaxShortLineRatio)
            return "short_line_ratio";
        int newlines = text.Count('\n');
        if (o.FineWebMaxCharDuplicatesRatio > 0 && (double)dupChars / (text.Length - newlines) > o.FineWebMaxCharDuplicatesRatio)
            return "char_dup_ratio";
        if (o.FineWebMaxNewLineRatio > 0)
        {
            int words = tokenized ? _tokenCount : Tokenize(text);
            if (words == 0 ? newlines > 0 : (double)newlines / words > o.FineWebMaxNewLineRatio)
                return "list_ratio";
        }
        return null;
    }
}

/// <summary>
/// An open-addressing table of 64-bit hashes with a count and the first index per entry, cleared in O(1) by a
/// generation stamp (the quality rules clear it several times per document).
/// </summary>
internal sealed class HashCounter
{
    private ulong[] _keys = new ulong[1024];
    private int[] _stamps = new int[1024];
    private int[] _counts = new int[1024];
    private int[] _firsts = new int[1024];
    private int _stamp = 1, _mask = 1023, _size;

    /// <summary>Empties the table, sized for about <paramref name="expected"/> entries.</summary>
    public void Clear(int expected)
    {
        int needed = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(1024, expected * 2));
        if (needed > _keys.Length)
        {
            _keys = new ulong[needed];
            _stamps = new int[needed];
            _counts = new int[needed];
            _firsts = new int[needed];
            _mask = needed - 1;
            _stamp = 0;
        }
        _size = 0;
        if (++_stamp == int.MaxValue)
        {
            Array.Clear(_stamps);
            _stamp = 1;
        }
    }

    /// <summary>Adds <paramref name="key"/>; false when it was already there.</summary>
    public bool Add(ulong key)
    {
        Slot(key, 0, out _, out bool existed);
        return !existed;
    }

    /// <summary>The count slot of <paramref name="key"/> (0 when new) and the index it was first seen at.</summary>
    public ref int Slot(ulong key, int index, out int first) => ref Slot(key, index, out first, out _);

    private ref int Slot(ulong key, int index, out int first, out bool existed)
    {
        if (_size * 2 >= _keys.Length)
            Grow();
        int i = (int)(key >> 32) & _mask;
        while (true)
        {
            if (_stamps[i] != _stamp)
            {
                _stamps[i] = _stamp;
                _keys[i] = key;
                _counts[i] = 0;
                _firsts[i] = index;
                _size++;
                first = index;
                existed = false;
                return ref _counts[i];
            }
            if (_keys[i] == key)
            {
                first = _firsts[i];
                existed = true;
                return ref _counts[i];
            }
            i = (i + 1) & _mask;
        }
    }

    private void Grow()
    {
        var (keys, stamps, counts, firsts, stamp) = (_keys, _stamps, _counts, _firsts, _stamp);
        int n = keys.Length * 2;
        _keys = new ulong[n];
        _stamps = new int[n];
        _counts = new int[n];
        _firsts = new int[n];
        _mask = n - 1;
        _stamp = 1;
        _size = 0;
        for (int j = 0; j < keys.Length; j++)
        {
            if (stamps[j] != stamp)
                continue;
            ref int c = ref Slot(keys[j], firsts[j], out _, out _);
            c = counts[j];
        }
    }
}

/// <summary>Python's <c>str.splitlines()</c> over a span (no trailing empty line).</summary>
internal ref struct LineEnumerator
{
    private ReadOnlySpan<char> _rest;
    private bool _done;

    public LineEnumerator(ReadOnlySpan<char> text)
    {
        _rest = text;
        _done = text.IsEmpty;
        Current = default;
    }

    public ReadOnlySpan<char> Current { get; private set; }

    public readonly LineEnumerator GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_done)
            return false;
        int i = _rest.IndexOfAny("\n\r\v\f\u001C\u001D\u001E\u0085\u2028\u2029");
        if (i < 0)
        {
            Current = _rest;
            _done = true;
            return true;
        }
        Current = _rest[..i];
        int skip = _rest[i] == '\r' && i + 1 < _rest.Length && _rest[i + 1] == '\n' ? 2 : 1;
        _rest = _rest[(i + skip)..];
        if (_rest.IsEmpty)
            _done = true;
        return true;
    }
}

/// <summary><c>str.split(sep)</c> over a span (keeps empty elements).</summary>
internal ref struct SplitEnumerator
{
    private ReadOnlySpan<char> _rest;
    private readonly char _separator;
    private bool _done;

    public SplitEnumerator(ReadOnlySpan<char> text, char separator)
    {
        _rest = text;
        _separator = separator;
        _done = false;
        Current = default;
    }

    public ReadOnlySpan<char> Current { get; private set; }

    public readonly SplitEnumerator GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_done)
            return false;
        int i = _rest.IndexOf(_separator);
        if (i < 0)
        {
            Current = _rest;
            _done = true;
            return true;
        }
        Current = _rest[..i];
        _rest = _rest[(i + 1)..];
        return true;
    }
}

/// <summary>Python's <c>str.split()</c> (whitespace-separated words) over a span.</summary>
internal ref struct WordEnumerator
{
    private ReadOnlySpan<char> _rest;

    public WordEnumerator(ReadOnlySpan<char> text)
    {
        _rest = text;
        Current = default;
    }

    public ReadOnlySpan<char> Current { get; private set; }

    public readonly WordEnumerator GetEnumerator() => this;

    public bool MoveNext()
    {
        int i = 0;
        while (i < _rest.Length && TextClasses.IsSpace(_rest[i]))
            i++;
        if (i == _rest.Length)
            return false;
        int start = i;
        while (i < _rest.Length && !TextClasses.IsSpace(_rest[i]))
            i++;
        Current = _rest[start..i];
        _rest = _rest[i..];
        return true;
    }
}
