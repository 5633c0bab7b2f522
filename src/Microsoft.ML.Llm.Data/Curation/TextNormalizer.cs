using System.Runtime.CompilerServices;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>Unicode normalization form applied by <see cref="TextNormalizerEstimator"/>.</summary>
public enum LmNormalizationForm
{
    /// <summary>No Unicode normalization.</summary>
    None = 0,
    /// <summary>Canonical composition (NFC): the default; never changes meaning.</summary>
    Nfc = 1,
    /// <summary>Compatibility composition (NFKC): also folds full-width forms, ligatures, superscripts.</summary>
    Nfkc = 2,
}

/// <summary>Options of <see cref="TextNormalizerEstimator"/> (<c>mlContext.Transforms.Text.NormalizeForLm</c>).</summary>
public sealed class TextNormalizerOptions
{
    /// <summary>Default values of the options, written once.</summary>
    public static class Defaults
    {
        /// <summary>NFC.</summary>
        public const LmNormalizationForm Form = LmNormalizationForm.Nfc;
        /// <summary>Collapse whitespace runs, keep line and paragraph breaks.</summary>
        public const bool CollapseWhitespace = true;
        /// <summary>Fold curly quotes to ASCII quotes.</summary>
        public const bool FoldQuotes = true;
        /// <summary>Fold Unicode dashes and the minus sign to '-'.</summary>
        public const bool FoldDashes = true;
        /// <summary>Remove control and zero-width characters.</summary>
        public const bool RemoveControlCharacters = true;
        /// <summary>Lowercasing is off.</summary>
        public const bool Lowercase = false;
    }

    /// <summary>Unicode normalization form (default NFC).</summary>
    public LmNormalizationForm Form { get; set; } = Defaults.Form;

    /// <summary>
    /// Collapse runs of spaces and tabs (any Unicode space) to one space, trim every line, collapse a run of line
    /// breaks to one newline, or to one blank line ("\n\n") when the run held a blank line (a paragraph break),
    /// and trim the text. CR LF, CR, NEL, U+2028 become "\n"; U+2029 becomes "\n\n".
    /// </summary>
    public bool CollapseWhitespace { get; set; } = Defaults.CollapseWhitespace;

    /// <summary>Fold ‘ ’ ‚ ‛ ′ ´ to <c>'</c> and “ ” „ ‟ ″ to <c>"</c> (guillemets are kept).</summary>
    public bool FoldQuotes { get; set; } = Defaults.FoldQuotes;

    /// <summary>Fold ‐ ‑ ‒ – — ― − ﹘ ﹣ － to <c>-</c>.</summary>
    public bool FoldDashes { get; set; } = Defaults.FoldDashes;

    /// <summary>
    /// Remove C0/C1 control characters (tab and line breaks are whitespace), zero-width space, word joiner, BOM,
    /// soft hyphen, and bidirectional marks/embeddings. ZWJ and ZWNJ are kept (they carry meaning in emoji and
    /// in Indic and Persian scripts).
    /// </summary>
    public bool RemoveControlCharacters { get; set; } = Defaults.RemoveControlCharacters;

    /// <summary>Lowercase with the invariant culture (off by default).</summary>
    public bool Lowercase { get; set; } = Defaults.Lowercase;

    internal TextNormalizerOptions Clone() => (TextNormalizerOptions)MemberwiseClone();

    internal void Validate()
    {
        if (!Enum.IsDefined(Form))
            throw new ArgumentOutOfRangeException(nameof(Form), Form, $"Option '{nameof(Form)}' must be one of None, Nfc, Nfkc; got {(int)Form}.");
    }
}

/// <summary>
/// Normalizes text for language-model training: repairs invalid UTF-16 (a lone surrogate becomes U+FFFD, never an
/// exception), applies NFC or NFKC, removes control and zero-width characters, folds quotes and dashes, collapses
/// whitespace while keeping line and paragraph structure, and optionally lowercases. Text that is already normal is
/// returned without a copy. Thread-safe; the work per character is a table lookup on the ASCII path.
/// </summary>
public static class LmTextNormalizer
{
    // ASCII classes: 0 visible, 1 space, 2 newline, 3 carriage return, 4 removable control.
    private static readonly byte[] s_ascii = BuildAsciiTable();

    private static byte[] BuildAsciiTable()
    {
        var t = new byte[128];
        for (int c = 0; c < 32; c++)
            t[c] = 4;
        t[127] = 4;
        t[' '] = 1;
        t['\t'] = 1;
        t['\n'] = 2;
        t['\v'] = 2;
        t['\f'] = 2;
        t['\r'] = 3;
        return t;
    }

    /// <summary>Normalizes <paramref name="text"/> with the given options (defaults when null).</summary>
    public static string Normalize(string text, TextNormalizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = Normalize(text.AsMemory(), options);
        return System.Runtime.InteropServices.MemoryMarshal.TryGetString(result, out var s, out int start, out int length) && start == 0 && length == s.Length
            ? s : result.ToString();
    }

    /// <summary>Normalizes <paramref name="text"/>; returns <paramref name="text"/> itself when nothing changes.</summary>
    public static ReadOnlyMemory<char> Normalize(ReadOnlyMemory<char> text, TextNormalizerOptions? options = null)
    {
        options ??= new TextNormalizerOptions();
        if (text.IsEmpty)
            return text;
        ReadOnlySpan<char> span = text.Span;
        char[]? repaired = null, composed = null, output = null;
        try
        {
            // 1. Lone surrogates -> U+FFFD (Unicode normalization would throw on them).
            if (span.IndexOfAnyInRange('\uD800', '\uDFFF') >= 0 && HasLoneSurrogate(span))
            {
                repaired = ArrayPool<char>.Shared.Rent(span.Length);
                RepairSurrogates(span, repaired);
                span = repaired.AsSpan(0, span.Length);
            }

            // 2. Unicode normalization (checked without allocation; most text is already NFC).
            if (options.Form != LmNormalizationForm.None)
            {
                var form = options.Form == LmNormalizationForm.Nfkc ? NormalizationForm.FormKC : NormalizationForm.FormC;
                if (!System.Text.Ascii.IsValid(span) && !span.IsNormalized(form))
                {
                    int length = span.GetNormalizedLength(form);
                    composed = ArrayPool<char>.Shared.Rent(length);
                    if (!span.TryNormalize(composed, out int written, form))
                        throw new InvalidOperationException("Unicode normalization did not fit its computed length.");
                    span = composed.AsSpan(0, written);
                }
            }

            // 3. One pass: control/zero-width removal, quote/dash folding, whitespace, lowercasing.
            output = ArrayPool<char>.Shared.Rent(span.Length * 2 + 2);
            int n = Clean(span, output, options);
            var result = output.AsSpan(0, n);
            if (result.SequenceEqual(text.Span))
                return text;
            return new string(result).AsMemory();
        }
        finally
        {
            if (repaired != null)
                ArrayPool<char>.Shared.Return(repaired);
            if (composed != null)
                ArrayPool<char>.Shared.Return(composed);
            if (output != null)
                ArrayPool<char>.Shared.Return(output);
        }
    }

    private static bool HasLoneSurrogate(ReadOnlySpan<char> s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (char.IsHighSurrogate(c))
            {
                if (i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
                { i++; continue; }
                return true;
            }
            if (char.IsLowSurrogate(c))
                return true;
        }
        return false;
    }

    private static void RepairSurrogates(ReadOnlySpan<char> s, Span<char> dst)
    {
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                dst[i] = c;
                dst[i + 1] = s[i + 1];
                i++;
            }
            else
            {
                dst[i] = char.IsSurrogate(c) ? '\uFFFD' : c;
            }
        }
    }

    private static int Clean(ReadOnlySpan<char> s, Span<char> dst, TextNormalizerOptions o)
    {
        byte[] ascii = s_ascii;
        bool collapse = o.CollapseWhitespace, removeControls = o.RemoveControlCharacters;
        bool lower = o.Lowercase, quotes = o.FoldQuotes, dashes = o.FoldDashes;
        int w = 0;
        int pendingNewlines = 0;
        bool pendingSpace = false, atStart = true;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            int cls;
            if (c < 128)
            {
                cls = ascii[c];
                if (cls == 0)
                {
                    if (lower && (uint)(c - 'A') <= 'Z' - 'A')
                        c = (char)(c | 0x20);
                    goto Visible;
                }
            }
            else
            {
                cls = ClassifyNonAscii(ref c, quotes, dashes);
                if (cls == 0)
                {
                    if (lower)
                        c = char.ToLowerInvariant(c);
                    goto Visible;
                }
            }

            if (!collapse)
            {
                if (cls == 4 || cls == 5)
                { if (!removeControls) dst[w++] = c; continue; }
                dst[w++] = c;
                continue;
            }
            switch (cls)
            {
                case 1: // space
                    if (pendingNewlines == 0)
                        pendingSpace = true;
                    continue;
                case 2: // newline
                    pendingNewlines++;
                    pendingSpace = false;
                    continue;
                case 3: // CR (CR LF counts once)
                    if (i + 1 < s.Length && s[i + 1] == '\n')
                        i++;
                    pendingNewlines++;
                    pendingSpace = false;
                    continue;
                case 6: // paragraph separator
                    pendingNewlines += 2;
                    pendingSpace = false;
                    continue;
                default: // 4 control, 5 format/zero-width
                    if (!removeControls)
                        goto Visible;
                    continue;
            }

        Visible:
            if (collapse)
            {
                if (!atStart)
                {
                    if (pendingNewlines > 0)
                    {
                        dst[w++] = '\n';
                        if (pendingNewlines > 1)
                            dst[w++] = '\n';
                    }
                    else if (pendingSpace)
                    {
                        dst[w++] = ' ';
                    }
                }
                pendingNewlines = 0;
                pendingSpace = false;
                atStart = false;
            }
            dst[w++] = c;
        }
        return w;
    }

    // Classes beyond ASCII: 0 visible (c may be folded), 1 space, 2 newline, 4 control, 5 format/zero-width, 6 paragraph.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ClassifyNonAscii(ref char c, bool quotes, bool dashes)
    {
        switch (c)
        {
            case '\u0085':
            case '\u2028':
                return 2;
            case '\u2029':
                return 6;
            case '\u00AD':
            case '\u200B':
            case '\u200E':
            case '\u200F':
            case '\u2060':
            case '\u2061':
            case '\u2062':
            case '\u2063':
            case '\u2064':
            case '\uFEFF':
            case '\u202A':
            case '\u202B':
            case '\u202C':
            case '\u202D':
            case '\u202E':
                return 5;
            case '\u2018':
            case '\u2019':
            case '\u201A':
            case '\u201B':
            case '\u2032':
            case '\u00B4':
                if (quotes)
                    c = '\'';
                return 0;
            case '\u201C':
            case '\u201D':
            case '\u201E':
            case '\u201F':
            case '\u2033':
                if (quotes)
                    c = '"';
                return 0;
            case '\u2010':
            case '\u2011':
            case '\u2012':
            case '\u2013':
            case '\u2014':
            case '\u2015':
            case '\u2212':
            case '\uFE58':
            case '\uFE63':
            case '\uFF0D':
                if (dashes)
                    c = '-';
                return 0;
        }
        if (c <= '\u009F')
            return 4; // C1 controls
        if (char.IsWhiteSpace(c))
            return 1;
        return 0;
    }
}

/// <summary>
/// Estimator of <see cref="TextNormalizerTransformer"/>: <c>mlContext.Transforms.Text.NormalizeForLm(output, input, options)</c>.
/// Needs no training; <see cref="TrivialEstimatorBase{T}.Fit"/> only checks the schema.
/// </summary>
public sealed class TextNormalizerEstimator : TrivialEstimatorBase<TextNormalizerTransformer>
{
    private readonly string _outputColumn;
    private readonly TextNormalizerOptions _options;

    internal TextNormalizerEstimator(TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName, TextNormalizerOptions? options)
        : base(CurationChecks.ColumnName(inputColumnName ?? outputColumnName, "inputColumnName"))
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _outputColumn = CurationChecks.ColumnName(outputColumnName, "outputColumnName");
        _options = (options ?? new TextNormalizerOptions()).Clone();
        _options.Validate();
    }

    private protected override TextNormalizerTransformer Create() => new(_outputColumn, InputColumnName, _options);

    private protected override IReadOnlyList<(string Name, DataViewType Type)> AddedColumns() => [(_outputColumn, TextDataViewType.Instance)];
}

/// <summary>
/// Adds a column holding the normalized text of the input column (see <see cref="LmTextNormalizer"/>). Row-to-row:
/// works in a <c>PredictionEngine</c>; saves into and loads from an ML.NET model zip.
/// </summary>
public sealed class TextNormalizerTransformer : AppendColumnsTransformerBase, IPersistentComponent<TextNormalizerTransformer>
{
    internal const string LoaderSignature = "LlmTextNormalizer";

    internal static readonly ComponentVersion Version =
        new("LMTXNORM", 0x00010002, 0x00010001, LoaderSignature, typeof(TextNormalizerTransformer).Assembly);

    static ComponentVersion IPersistentComponent<TextNormalizerTransformer>.PersistenceVersion => Version;

    internal TextNormalizerTransformer(string outputColumn, string inputColumn, TextNormalizerOptions options)
        : base(Version)
    {
        OutputColumnName = outputColumn;
        InputColumnName = inputColumn;
        Options = options;
    }

    /// <summary>The column written.</summary>
    public string OutputColumnName { get; }

    /// <summary>The text column read.</summary>
    public string InputColumnName { get; }

    internal TextNormalizerOptions Options { get; }

    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        int index = SchemaChecks.TextColumn(inputSchema, InputColumnName).Index;
        var options = Options;
        return new AppendColumnsMapper(inputSchema, index, [new(OutputColumnName, TextDataViewType.Instance)], (row, active) =>
        {
            var source = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[index]);
            ReadOnlyMemory<char> raw = default;
            ValueGetter<ReadOnlyMemory<char>> getter = (ref ReadOnlyMemory<char> value) =>
            {
                source(ref raw);
                value = LmTextNormalizer.Normalize(raw, options);
            };
            return [getter];
        });
    }

    // Binary format (version 0x00010001): OutputColumnName (string), InputColumnName (string), Form (int32),
    // CollapseWhitespace, FoldQuotes, FoldDashes, RemoveControlCharacters, Lowercase (bool each). No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(OutputColumnName);
        w.Write(InputColumnName);
        w.Write((int)Options.Form);
        w.Write(Options.CollapseWhitespace);
        w.Write(Options.FoldQuotes);
        w.Write(Options.FoldDashes);
        w.Write(Options.RemoveControlCharacters);
        w.Write(Options.Lowercase);
    }

    // Binary format: see SaveState.
    static TextNormalizerTransformer IPersistentComponent<TextNormalizerTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string output = r.ReadString();
        string input = r.ReadString();
        var options = new TextNormalizerOptions
        {
            Form = (LmNormalizationForm)r.ReadInt32(),
            CollapseWhitespace = r.ReadBoolean(),
            FoldQuotes = r.ReadBoolean(),
            FoldDashes = r.ReadBoolean(),
            RemoveControlCharacters = r.ReadBoolean(),
            Lowercase = r.ReadBoolean(),
        };
        options.Validate();
        return new TextNormalizerTransformer(output, input, options);
    }
}
