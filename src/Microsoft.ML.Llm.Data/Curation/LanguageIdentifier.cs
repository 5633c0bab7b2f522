using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// A character n-gram (1-3) naive-Bayes language identifier. The bundled model (<see cref="Default"/>, about 0.87 MB,
/// embedded in the assembly, never downloaded) covers 26 languages: en de fr es it pt nl pl cs ru sv tr ja zh ar uk fi
/// da hu ro el ko vi id bg sk. It was built by tools/LanguageModelBuilder from the gettext catalogs of Debian 12
/// packages. The score is the posterior probability of the best language (uniform prior).
/// </summary>
public sealed class LanguageIdentifier
{
    private static readonly Lazy<LanguageIdentifier> s_default = new(() =>
    {
        using var stream = typeof(LanguageIdentifier).Assembly.GetManifestResourceStream("Microsoft.ML.Llm.Data.Resources.langid.bin")
            ?? throw new InvalidOperationException("The bundled language-ID model 'Resources/langid.bin' is missing from Microsoft.ML.Llm.Data.");
        return Load(stream);
    });

    private readonly string[] _languages;
    private readonly int _stride;          // languages padded to a multiple of Vector<float>.Count
    private readonly float[] _rows;        // n-gram rows of log-probabilities, _stride floats each; row 0 is the floors
    private readonly ulong[] _keys;        // open-addressing table: packed n-gram (chars and length) -> row
    private readonly int[] _slots;
    private readonly int _mask;

    private LanguageIdentifier(string[] languages, float[] floors, Dictionary<string, float[]> grams)
    {
        _languages = languages;
        int vc = System.Numerics.Vector<float>.Count;
        _stride = (languages.Length + vc - 1) / vc * vc;
        _rows = new float[(grams.Count + 1) * _stride];
        floors.CopyTo(_rows, 0);
        int size = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, grams.Count * 2));
        _keys = new ulong[size];
        _slots = new int[size];
        _mask = size - 1;
        int row = 1;
        foreach (var (gram, values) in grams.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            values.CopyTo(_rows, row * _stride);
            ulong key = Pack(gram);
            int i = Slot(key);
            while (_slots[i] != 0)
                i = (i + 1) & _mask;
            _keys[i] = key;
            _slots[i] = row++;
        }
    }

    /// <summary>An n-gram of 1-3 UTF-16 units as one 64-bit key: the units in 16-bit lanes and the length on top.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static ulong Pack(ReadOnlySpan<char> g)
    {
        ulong key = (ulong)g.Length << 48;
        for (int k = 0; k < g.Length; k++)
            key |= (ulong)g[k] << (16 * k);
        return key;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private int Slot(ulong key) => (int)((key * 0x9E3779B97F4A7C15UL) >> 40) & _mask;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private int Row(ulong key)
    {
        int i = Slot(key);
        while (true)
        {
            int row = _slots[i];
            if (row == 0)
                return 0;           // unknown n-gram: the floors
            if (_keys[i] == key)
                return row;
            i = (i + 1) & _mask;
        }
    }

    /// <summary>The bundled model.</summary>
    public static LanguageIdentifier Default => s_default.Value;

    /// <summary>ISO 639-1 codes of the languages the model knows.</summary>
    public IReadOnlyList<string> Languages => _languages;

    /// <summary>Reads a model written by tools/LanguageModelBuilder.</summary>
    public static LanguageIdentifier Load(Stream stream)
    {
        using var r = new BinaryReader(stream, Encoding.UTF8, leaveOpen: true);
        string magic = r.ReadString();
        if (magic != "LLMLANGID1")
            throw new FormatException($"Not a language-ID model: header '{magic}', expected 'LLMLANGID1'.");
        int count = r.ReadInt32();
        var languages = new string[count];
        var floors = new float[count];
        var grams = new Dictionary<string, float[]>(StringComparer.Ordinal);
        for (int l = 0; l < count; l++)
        {
            languages[l] = r.ReadString();
            floors[l] = r.ReadSingle();
            int n = r.ReadInt32();
            for (int i = 0; i < n; i++)
            {
                string g = r.ReadString();
                float v = r.ReadSingle();
                if (g.Length is < 1 or > NGrams.MaxN)
                    throw new FormatException($"Language-ID model n-gram '{g}' has {g.Length} characters; expected 1 to {NGrams.MaxN}.");
                if (!grams.TryGetValue(g, out var row))
                    grams[g] = row = new float[count];
                row[l] = v;
            }
        }
        // n-grams missing from a language's list get that language's floor
        foreach (var row in grams.Values)
        {
            for (int l = 0; l < count; l++)
            {
                if (row[l] == 0)
                    row[l] = floors[l];
            }
        }

        return new LanguageIdentifier(languages, floors, grams);
    }

    [ThreadStatic] private static StringBuilder? t_features;
    [ThreadStatic] private static char[]? t_buffer;

    /// <summary>The most likely language of <paramref name="text"/> and its posterior probability; ("", 0) for text without letters.</summary>
    public (string Language, float Score) Detect(ReadOnlySpan<char> text)
    {
        var sb = t_features ??= new StringBuilder();
        NGrams.Features(text, sb);
        if (sb.Length <= 1)
            return ("", 0f);
        if (t_buffer is null || t_buffer.Length < sb.Length)
            t_buffer = new char[Math.Max(sb.Length, 1024)];
        sb.CopyTo(0, t_buffer, 0, sb.Length);
        ReadOnlySpan<char> span = t_buffer.AsSpan(0, sb.Length);

        int stride = _stride;
        Span<float> sums = stackalloc float[stride];
        sums.Clear();
        var acc = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(sums);
        var rows = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(_rows.AsSpan());
        int vectorsPerRow = acc.Length;
        for (int i = 0; i < span.Length; i++)
        {
            for (int n = 1; n <= NGrams.MaxN && i + n <= span.Length; n++)
            {
                var g = span.Slice(i, n);
                if (n == 1 && g[0] == ' ')
                    continue;
                if (n == 2 && g[0] == ' ' && g[1] == ' ')
                    continue;
                int at = Row(Pack(g)) * vectorsPerRow;
                for (int v = 0; v < vectorsPerRow; v++)
                    acc[v] += rows[at + v];
            }
        }

        int count = _languages.Length;
        // Script rule for Chinese, Japanese and Korean (as CLD does): when at least half of the letters are CJK, kana
        // means Japanese, Hangul Korean, and Han alone Chinese; the n-grams then rank only that language's candidates.
        int only = CjkLanguage(span);
        int best = -1;
        for (int l = 0; l < count; l++)
        {
            if (only >= 0 && l != only)
                continue;
            if (best < 0 || sums[l] > sums[best])
                best = l;
        }
        double z = 0;
        for (int l = 0; l < count; l++)
        {
            if (only < 0 || l == only)
                z += Math.Exp((double)sums[l] - sums[best]);
        }

        return (_languages[best], (float)(1 / z));
    }

    internal int IndexOf(string code) => Array.IndexOf(_languages, code);

    private int CjkLanguage(ReadOnlySpan<char> features)
    {
        int letters = 0, kana = 0, hangul = 0, han = 0;
        foreach (char c in features)
        {
            if (c == ' ')
                continue;
            letters++;
            if (c is >= '\u3040' and <= '\u30FF' or >= '\u31F0' and <= '\u31FF' or >= '\uFF66' and <= '\uFF9F')
                kana++;
            else if (c is >= '\uAC00' and <= '\uD7AF' or >= '\u1100' and <= '\u11FF' or >= '\u3130' and <= '\u318F')
                hangul++;
            else if (c is >= '\u4E00' and <= '\u9FFF' or >= '\u3400' and <= '\u4DBF' or >= '\uF900' and <= '\uFAFF')
                han++;
        }
        if ((kana + hangul + han) * 2 < letters)
            return -1;
        string code = kana > 0 && kana >= hangul ? "ja" : hangul > 0 ? "ko" : "zh";
        return IndexOf(code);
    }
}
