using System.Globalization;
using System.Numerics;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// Shingling and MinHash of text as datatrove does it: normalize (lowercase, NFD accent stripping, punctuation to
/// space, digits to 0, whitespace collapsed), word n-grams, one 64-bit hash per shingle, then
/// Bands × RowsPerBand permutations h → a·h + b (mod 2^64, a odd) evaluated with SIMD, and one hash per band.
/// </summary>
internal sealed class MinHasher
{
    private static readonly char[] s_fold = BuildFoldTable();
    private readonly ulong[] _a, _b;
    private readonly int _n, _bands, _rows, _perms;

    public MinHasher(int nGram, int bands, int rows, int seed)
    {
        _n = nGram;
        _bands = bands;
        _rows = rows;
        _perms = bands * rows;
        int padded = (_perms + Vector<ulong>.Count - 1) / Vector<ulong>.Count * Vector<ulong>.Count;
        _a = new ulong[padded];
        _b = new ulong[padded];
        ulong state = (ulong)seed * 0x9E3779B97F4A7C15UL + 0x2545F4914F6CDD1DUL;
        for (int i = 0; i < padded; i++)
        {
            _a[i] = SplitMix(ref state) | 1UL;
            _b[i] = SplitMix(ref state);
        }
    }

    public int Bands => _bands;

    private static ulong SplitMix(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    // Per UTF-16 unit: '\0' dropped (combining mark), ' ' separator, else the folded character.
    private static char[] BuildFoldTable()
    {
        var t = new char[65536];
        Span<char> one = stackalloc char[1];
        Span<char> decomposed = stackalloc char[8];
        for (int c = 0; c < 65536; c++)
        {
            char ch = (char)c;
            if (char.IsSurrogate(ch))
            { t[c] = ch; continue; }
            var cat = CharUnicodeInfo.GetUnicodeCategory(ch);
            if (char.IsWhiteSpace(ch) || cat is >= UnicodeCategory.ConnectorPunctuation and <= UnicodeCategory.OtherSymbol || cat == UnicodeCategory.Control)
            { t[c] = ' '; continue; }
            if (cat is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format)
            { t[c] = '\0'; continue; }
            if (cat == UnicodeCategory.DecimalDigitNumber)
            { t[c] = '0'; continue; }
            char lower = char.ToLowerInvariant(ch);
            if (lower < 128)
            { t[c] = lower; continue; }
            if (cat is UnicodeCategory.OtherNotAssigned or UnicodeCategory.PrivateUse)
            { t[c] = lower; continue; }
            one[0] = lower;
            t[c] = ((ReadOnlySpan<char>)one).TryNormalize(decomposed, out int written, NormalizationForm.FormD) && written > 0 && !char.IsSurrogate(decomposed[0]) ? decomposed[0] : lower;
        }
        return t;
    }

    /// <summary>Hashes of the words of the normalized text into <paramref name="words"/>; returns the count.</summary>
    public static int WordHashes(ReadOnlySpan<char> text, ref ulong[] words)
    {
        var fold = s_fold;
        int n = 0;
        ulong h = 0;
        bool inWord = false;
        foreach (char raw in text)
        {
            char c = fold[raw];
            if (c == '\0')
                continue;
            if (c == ' ')
            {
                if (inWord)
                {
                    if (n == words.Length)
                        Array.Resize(ref words, n * 2);
                    words[n++] = SpanHash.Mix(h);
                    inWord = false;
                }
                continue;
            }
            if (!inWord)
            { h = 0xCBF29CE484222325UL; inWord = true; }
            h = (h ^ c) * 0x100000001B3UL;
        }
        if (inWord)
        {
            if (n == words.Length)
                Array.Resize(ref words, n * 2);
            words[n++] = SpanHash.Mix(h);
        }
        return n;
    }

    /// <summary>Shingle hashes (word n-grams; all words as one shingle when fewer than n) of word hashes.</summary>
    public int Shingles(ReadOnlySpan<ulong> words, ref ulong[] shingles)
    {
        int count = words.Length < _n ? (words.IsEmpty ? 0 : 1) : words.Length - _n + 1;
        if (shingles.Length < count)
            shingles = new ulong[Math.Max(count, shingles.Length * 2)];
        int width = Math.Min(_n, words.Length);
        for (int i = 0; i < count; i++)
        {
            ulong h = (ulong)width;
            for (int k = 0; k < width; k++)
                h = SpanHash.Combine(h, words[i + k]);
            shingles[i] = SpanHash.Mix(h);
        }
        return count;
    }

    /// <summary>Band hashes of the MinHash signature of <paramref name="shingles"/> (not empty).</summary>
    public void BandHashes(ReadOnlySpan<ulong> shingles, Span<ulong> bands, Span<ulong> signature)
    {
        int padded = _a.Length;
        signature[..padded].Fill(ulong.MaxValue);
        ReadOnlySpan<Vector<ulong>> a = System.Runtime.InteropServices.MemoryMarshal.Cast<ulong, Vector<ulong>>(_a);
        ReadOnlySpan<Vector<ulong>> b = System.Runtime.InteropServices.MemoryMarshal.Cast<ulong, Vector<ulong>>(_b);
        Span<Vector<ulong>> sig = System.Runtime.InteropServices.MemoryMarshal.Cast<ulong, Vector<ulong>>(signature[..padded]);
        foreach (ulong s in shingles)
        {
            var h = new Vector<ulong>(s);
            for (int j = 0; j < sig.Length; j++)
                sig[j] = Vector.Min(sig[j], a[j] * h + b[j]);
        }
        for (int band = 0; band < _bands; band++)
        {
            ulong h = (ulong)band + 1;
            for (int r = 0; r < _rows; r++)
                h = SpanHash.Combine(h, signature[band * _rows + r]);
            bands[band] = SpanHash.Mix(h);
        }
    }

    public int SignatureLength => _a.Length;

    /// <summary>64-bit hash of the whole normalized text (exact mode); 0 words → false.</summary>
    public static bool ExactHash(ReadOnlySpan<char> text, ref ulong[] words, out ulong hash)
    {
        int n = WordHashes(text, ref words);
        ulong h = (ulong)n;
        for (int i = 0; i < n; i++)
            h = SpanHash.Combine(h, words[i]);
        hash = SpanHash.Mix(h);
        return n > 0;
    }
}
