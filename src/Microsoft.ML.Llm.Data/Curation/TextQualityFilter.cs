using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>What <see cref="TextQualityFilterTransformer"/> does with a row that fails a rule.</summary>
public enum QualityFilterMode
{
    /// <summary>Drop the row (default).</summary>
    Drop = 0,
    /// <summary>Keep every row and write the first failing rule (empty when none) to <see cref="TextQualityFilterOptions.AnnotationColumnName"/>.</summary>
    Annotate = 1,
}

/// <summary>Which published variant of the C4 rules to apply.</summary>
public enum C4Variant
{
    /// <summary>datatrove's C4QualityFilter: lines need ≥ 3 words, documents ≥ 5 sentences, lines may end in ' too.</summary>
    Datatrove = 0,
    /// <summary>The original TFDS C4 code: lines need ≥ 5 words, documents ≥ 3 sentences.</summary>
    OriginalC4 = 1,
}

/// <summary>A threshold on the character fraction of an n-gram statistic (Gopher repetition).</summary>
/// <param name="N">The n-gram size in words.</param>
/// <param name="MaxCharFraction">The largest fraction of the text's characters allowed; 0 turns the check off.</param>
public readonly record struct NGramFraction(int N, double MaxCharFraction);

/// <summary>
/// Options of <see cref="TextQualityFilterEstimator"/> (<c>mlContext.Transforms.Text.FilterByQuality</c>). Every
/// threshold defaults to datatrove's (docs/ARCHITECTURE.md §5); a ratio or count threshold set to 0 turns that one check off,
/// as datatrove's <c>None</c> does. Rule sets run in the order of the FineWeb pipeline: Gopher repetition, Gopher
/// quality, C4, FineWeb; a row is reported under the first rule it fails.
/// </summary>
/// <remarks>
/// Words are tokens as datatrove's English word tokenizer makes them: whitespace separates words and punctuation
/// runs are tokens of their own ("Hello, world." is 4 tokens, 2 of them non-symbol words); unlike NLTK/spaCy, an
/// apostrophe between letters stays inside the word ("don't" is one token). N-grams are compared by 64-bit hashes of
/// their word sequence (datatrove compares joined strings). Sentences (C4) end at '.', '!' or '?' followed by
/// whitespace, without Punkt's abbreviation list. Empty text fails
/// <c>gopher_short_doc</c> (Gopher quality) and <c>empty</c> (FineWeb); with those rule sets off it passes.
/// Where datatrove would divide by zero words or lines, the ratio counts as 0 (the check passes).
/// </remarks>
public sealed class TextQualityFilterOptions
{
    /// <summary>Default values of the options, written once.</summary>
    public static class Defaults
    {
        public const QualityFilterMode Mode = QualityFilterMode.Drop;
        public const string AnnotationColumnName = "QualityRejection";
        public const int GopherMinDocWords = 50;
        public const int GopherMaxDocWords = 100_000;
        public const double GopherMinAvgWordLength = 3;
        public const double GopherMaxAvgWordLength = 10;
        public const double GopherMaxSymbolWordRatio = 0.1;
        public const double GopherMaxBulletLinesRatio = 0.9;
        public const double GopherMaxEllipsisLinesRatio = 0.3;
        public const double GopherMinAlphaWordsRatio = 0.8;
        public const int GopherMinStopWords = 2;
        public static readonly string[] GopherStopWords = ["the", "be", "to", "of", "and", "that", "have", "with"];
        public const double DupLineFraction = 0.3;
        public const double DupParagraphFraction = 0.3;
        public const double DupLineCharFraction = 0.2;
        public const double DupParagraphCharFraction = 0.2;
        public static readonly NGramFraction[] TopNGrams = [new(2, 0.20), new(3, 0.18), new(4, 0.16)];
        public static readonly NGramFraction[] DuplicateNGrams = [new(5, 0.15), new(6, 0.14), new(7, 0.13), new(8, 0.12), new(9, 0.11), new(10, 0.10)];
        public const C4Variant C4Variant = Data.C4Variant.Datatrove;
        public const int C4MaxWordLength = 1000;
        public const double FineWebMinLinePunctuationRatio = 0.12;
        public const double FineWebMaxShortLineRatio = 0.67;
        public const int FineWebShortLineLength = 30;
        public const double FineWebMaxCharDuplicatesRatio = 0.01;
        public const double FineWebMaxNewLineRatio = 0.3;
    }

    /// <summary>Drop failing rows (default) or annotate them.</summary>
    public QualityFilterMode Mode { get; set; } = Defaults.Mode;

    /// <summary>Name of the column added in <see cref="QualityFilterMode.Annotate"/> mode.</summary>
    public string AnnotationColumnName { get; set; } = Defaults.AnnotationColumnName;

    /// <summary>Apply the Gopher quality rules (MassiveText, Rae et al. 2021).</summary>
    public bool GopherQuality { get; set; } = true;
    /// <summary>Apply the Gopher repetition rules.</summary>
    public bool GopherRepetition { get; set; } = true;
    /// <summary>Apply the C4 rules (line removals and document drops).</summary>
    public bool C4 { get; set; } = true;
    /// <summary>Apply the FineWeb rules.</summary>
    public bool FineWeb { get; set; } = true;

    /// <summary>Fewest non-symbol words.</summary>
    public int GopherMinDocWords { get; set; } = Defaults.GopherMinDocWords;
    /// <summary>Most non-symbol words.</summary>
    public int GopherMaxDocWords { get; set; } = Defaults.GopherMaxDocWords;
    /// <summary>Smallest mean length of non-symbol words.</summary>
    public double GopherMinAvgWordLength { get; set; } = Defaults.GopherMinAvgWordLength;
    /// <summary>Largest mean length of non-symbol words.</summary>
    public double GopherMaxAvgWordLength { get; set; } = Defaults.GopherMaxAvgWordLength;
    /// <summary>Largest count of '#', and of ellipses ("..." or '…'), per word.</summary>
    public double GopherMaxSymbolWordRatio { get; set; } = Defaults.GopherMaxSymbolWordRatio;
    /// <summary>Largest fraction of lines starting with '•' or '-'.</summary>
    public double GopherMaxBulletLinesRatio { get; set; } = Defaults.GopherMaxBulletLinesRatio;
    /// <summary>Largest fraction of lines ending with an ellipsis.</summary>
    public double GopherMaxEllipsisLinesRatio { get; set; } = Defaults.GopherMaxEllipsisLinesRatio;
    /// <summary>Smallest fraction of words with an alphabetic character (datatrove's max_non_alpha_words_ratio).</summary>
    public double GopherMinAlphaWordsRatio { get; set; } = Defaults.GopherMinAlphaWordsRatio;
    /// <summary>Fewest occurrences of stop words.</summary>
    public int GopherMinStopWords { get; set; } = Defaults.GopherMinStopWords;
    /// <summary>The stop words (case-sensitive, as datatrove).</summary>
    public IReadOnlyList<string> GopherStopWords { get; set; } = Defaults.GopherStopWords;

    /// <summary>Largest fraction of duplicate lines.</summary>
    public double DupLineFraction { get; set; } = Defaults.DupLineFraction;
    /// <summary>Largest fraction of duplicate paragraphs.</summary>
    public double DupParagraphFraction { get; set; } = Defaults.DupParagraphFraction;
    /// <summary>Largest fraction of characters in duplicate lines.</summary>
    public double DupLineCharFraction { get; set; } = Defaults.DupLineCharFraction;
    /// <summary>Largest fraction of characters in duplicate paragraphs.</summary>
    public double DupParagraphCharFraction { get; set; } = Defaults.DupParagraphCharFraction;
    /// <summary>Largest character fraction of the most frequent n-gram, per n.</summary>
    public IReadOnlyList<NGramFraction> TopNGrams { get; set; } = Defaults.TopNGrams;
    /// <summary>Largest character fraction of duplicated n-grams, per n.</summary>
    public IReadOnlyList<NGramFraction> DuplicateNGrams { get; set; } = Defaults.DuplicateNGrams;

    /// <summary>datatrove's or the original C4 variant; selects the defaults of the next two options.</summary>
    public C4Variant C4Variant { get; set; } = Defaults.C4Variant;
    /// <summary>Fewest words in a kept line; null: 3 (datatrove) or 5 (original C4).</summary>
    public int? C4MinWordsPerLine { get; set; }
    /// <summary>Fewest sentences in a kept document; null: 5 (datatrove) or 3 (original C4).</summary>
    public int? C4MinSentences { get; set; }
    /// <summary>Drop lines with a word longer than this; 0 turns it off.</summary>
    public int C4MaxWordLength { get; set; } = Defaults.C4MaxWordLength;
    /// <summary>Remove "[1]", "[edit]", "[citation needed]".</summary>
    public bool C4RemoveCitations { get; set; } = true;
    /// <summary>Drop lines that do not end in terminal punctuation (or end in "...").</summary>
    public bool C4FilterNoTerminalPunctuation { get; set; } = true;
    /// <summary>Drop documents containing "lorem ipsum".</summary>
    public bool C4FilterLoremIpsum { get; set; } = true;
    /// <summary>Drop lines containing "javascript".</summary>
    public bool C4FilterJavascript { get; set; } = true;
    /// <summary>Drop documents containing '{'.</summary>
    public bool C4FilterCurlyBracket { get; set; } = true;
    /// <summary>Drop lines with cookie/terms/privacy-policy phrases.</summary>
    public bool C4FilterPolicy { get; set; } = true;
    /// <summary>
    /// In drop mode, replace the text of a kept row with its C4-kept lines (as datatrove does). Annotate mode never
    /// changes the text.
    /// </summary>
    public bool C4RemoveLines { get; set; } = true;

    /// <summary>Smallest fraction of non-blank lines ending in terminal punctuation.</summary>
    public double FineWebMinLinePunctuationRatio { get; set; } = Defaults.FineWebMinLinePunctuationRatio;
    /// <summary>Let a document whose ratio is exactly 0 pass the punctuation check.</summary>
    public bool FineWebLinePunctuationExcludeZero { get; set; }
    /// <summary>Largest fraction of short lines.</summary>
    public double FineWebMaxShortLineRatio { get; set; } = Defaults.FineWebMaxShortLineRatio;
    /// <summary>A line of at most this many characters is short.</summary>
    public int FineWebShortLineLength { get; set; } = Defaults.FineWebShortLineLength;
    /// <summary>Largest fraction of characters (newlines excluded) in duplicated lines.</summary>
    public double FineWebMaxCharDuplicatesRatio { get; set; } = Defaults.FineWebMaxCharDuplicatesRatio;
    /// <summary>Largest number of newlines per word.</summary>
    public double FineWebMaxNewLineRatio { get; set; } = Defaults.FineWebMaxNewLineRatio;

    internal TextQualityFilterOptions Clone()
    {
        var c = (TextQualityFilterOptions)MemberwiseClone();
        c.GopherStopWords = GopherStopWords.ToArray();
        c.TopNGrams = TopNGrams.ToArray();
        c.DuplicateNGrams = DuplicateNGrams.ToArray();
        return c;
    }

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode))
            throw new ArgumentOutOfRangeException(nameof(Mode), Mode, $"Option '{nameof(Mode)}' must be Drop or Annotate; got {(int)Mode}.");
        if (!Enum.IsDefined(C4Variant))
            throw new ArgumentOutOfRangeException(nameof(C4Variant), C4Variant, $"Option '{nameof(C4Variant)}' must be Datatrove or OriginalC4; got {(int)C4Variant}.");
        if (Mode == QualityFilterMode.Annotate)
            CurationChecks.ColumnName(AnnotationColumnName, nameof(AnnotationColumnName));
        CurationChecks.AtLeast(GopherMinDocWords, 0, nameof(GopherMinDocWords));
        CurationChecks.AtLeast(GopherMaxDocWords, 0, nameof(GopherMaxDocWords));
        if (GopherMaxDocWords > 0)
            CurationChecks.Ordered(GopherMinDocWords, GopherMaxDocWords, nameof(GopherMinDocWords), nameof(GopherMaxDocWords));
        CurationChecks.InRange(GopherMinAvgWordLength, 0, double.MaxValue, nameof(GopherMinAvgWordLength));
        CurationChecks.InRange(GopherMaxAvgWordLength, 0, double.MaxValue, nameof(GopherMaxAvgWordLength));
        if (GopherMaxAvgWordLength > 0)
            CurationChecks.Ordered(GopherMinAvgWordLength, GopherMaxAvgWordLength, nameof(GopherMinAvgWordLength), nameof(GopherMaxAvgWordLength));
        CurationChecks.InRange(GopherMaxSymbolWordRatio, 0, double.MaxValue, nameof(GopherMaxSymbolWordRatio));
        CurationChecks.InRange(GopherMaxBulletLinesRatio, 0, 1, nameof(GopherMaxBulletLinesRatio));
        CurationChecks.InRange(GopherMaxEllipsisLinesRatio, 0, 1, nameof(GopherMaxEllipsisLinesRatio));
        CurationChecks.InRange(GopherMinAlphaWordsRatio, 0, 1, nameof(GopherMinAlphaWordsRatio));
        CurationChecks.AtLeast(GopherMinStopWords, 0, nameof(GopherMinStopWords));
        if (GopherStopWords is null)
            throw new ArgumentNullException(nameof(GopherStopWords), $"Option '{nameof(GopherStopWords)}' must be a list of words; got null.");
        CurationChecks.InRange(DupLineFraction, 0, 1, nameof(DupLineFraction));
        CurationChecks.InRange(DupParagraphFraction, 0, 1, nameof(DupParagraphFraction));
        CurationChecks.InRange(DupLineCharFraction, 0, 1, nameof(DupLineCharFraction));
        CurationChecks.InRange(DupParagraphCharFraction, 0, 1, nameof(DupParagraphCharFraction));
        foreach (var (list, name) in new[] { (TopNGrams, nameof(TopNGrams)), (DuplicateNGrams, nameof(DuplicateNGrams)) })
        {
            if (list is null)
                throw new ArgumentNullException(name, $"Option '{name}' must be a list of (N, MaxCharFraction); got null.");
            foreach (var t in list)
            {
                if (t.N < 1)
                    throw new ArgumentOutOfRangeException(name, t.N, $"Option '{name}' must have n-gram sizes of at least 1; got {t.N}.");
                CurationChecks.InRange(t.MaxCharFraction, 0, 1, $"{name}[{t.N}]");
            }
        }
        if (C4MinWordsPerLine is int mw)
            CurationChecks.AtLeast(mw, 0, nameof(C4MinWordsPerLine));
        if (C4MinSentences is int ms)
            CurationChecks.AtLeast(ms, 0, nameof(C4MinSentences));
        CurationChecks.AtLeast(C4MaxWordLength, 0, nameof(C4MaxWordLength));
        CurationChecks.InRange(FineWebMinLinePunctuationRatio, 0, 1, nameof(FineWebMinLinePunctuationRatio));
        CurationChecks.InRange(FineWebMaxShortLineRatio, 0, 1, nameof(FineWebMaxShortLineRatio));
        CurationChecks.AtLeast(FineWebShortLineLength, 0, nameof(FineWebShortLineLength));
        CurationChecks.InRange(FineWebMaxCharDuplicatesRatio, 0, 1, nameof(FineWebMaxCharDuplicatesRatio));
        CurationChecks.InRange(FineWebMaxNewLineRatio, 0, double.MaxValue, nameof(FineWebMaxNewLineRatio));
    }

    // Binary format (version 0x00010001), one field per line below, in this order: Mode (int32), AnnotationColumnName (string),
    // GopherQuality, GopherRepetition, C4, FineWeb (bool each), GopherMinDocWords, GopherMaxDocWords (int32),
    // GopherMinAvgWordLength, GopherMaxAvgWordLength, GopherMaxSymbolWordRatio, GopherMaxBulletLinesRatio,
    // GopherMaxEllipsisLinesRatio, GopherMinAlphaWordsRatio (double each), GopherMinStopWords (int32),
    // GopherStopWords (int32 count, then strings), DupLineFraction, DupParagraphFraction, DupLineCharFraction,
    // DupParagraphCharFraction (double each), TopNGrams then DuplicateNGrams (each: int32 count, then per entry N int32
    // and MaxCharFraction double), C4Variant (int32), C4MinWordsPerLine, C4MinSentences (int32, -1 for null),
    // C4MaxWordLength (int32), C4RemoveCitations, C4FilterNoTerminalPunctuation, C4FilterLoremIpsum, C4FilterJavascript,
    // C4FilterCurlyBracket, C4FilterPolicy, C4RemoveLines (bool each), FineWebMinLinePunctuationRatio (double),
    // FineWebLinePunctuationExcludeZero (bool), FineWebMaxShortLineRatio (double), FineWebShortLineLength (int32),
    // FineWebMaxCharDuplicatesRatio, FineWebMaxNewLineRatio (double each).
    internal void Write(BinaryWriter w)
    {
        w.Write((int)Mode);
        w.Write(AnnotationColumnName);
        w.Write(GopherQuality);
        w.Write(GopherRepetition);
        w.Write(C4);
        w.Write(FineWeb);
        w.Write(GopherMinDocWords);
        w.Write(GopherMaxDocWords);
        w.Write(GopherMinAvgWordLength);
        w.Write(GopherMaxAvgWordLength);
        w.Write(GopherMaxSymbolWordRatio);
        w.Write(GopherMaxBulletLinesRatio);
        w.Write(GopherMaxEllipsisLinesRatio);
        w.Write(GopherMinAlphaWordsRatio);
        w.Write(GopherMinStopWords);
        w.Write(GopherStopWords.Count);
        foreach (var s in GopherStopWords)
            w.Write(s);
        w.Write(DupLineFraction);
        w.Write(DupParagraphFraction);
        w.Write(DupLineCharFraction);
        w.Write(DupParagraphCharFraction);
        foreach (var list in new[] { TopNGrams, DuplicateNGrams })
        {
            w.Write(list.Count);
            foreach (var t in list)
            {
                w.Write(t.N);
                w.Write(t.MaxCharFraction);
            }
        }
        w.Write((int)C4Variant);
        w.Write(C4MinWordsPerLine ?? -1);
        w.Write(C4MinSentences ?? -1);
        w.Write(C4MaxWordLength);
        w.Write(C4RemoveCitations);
        w.Write(C4FilterNoTerminalPunctuation);
        w.Write(C4FilterLoremIpsum);
        w.Write(C4FilterJavascript);
        w.Write(C4FilterCurlyBracket);
        w.Write(C4FilterPolicy);
        w.Write(C4RemoveLines);
        w.Write(FineWebMinLinePunctuationRatio);
        w.Write(FineWebLinePunctuationExcludeZero);
        w.Write(FineWebMaxShortLineRatio);
        w.Write(FineWebShortLineLength);
        w.Write(FineWebMaxCharDuplicatesRatio);
        w.Write(FineWebMaxNewLineRatio);
    }

    // Binary format: see Write (the same fields in the same order).
    internal static TextQualityFilterOptions Read(BinaryReader r)
    {
        var o = new TextQualityFilterOptions();
        o.Mode = (QualityFilterMode)r.ReadInt32();
        o.AnnotationColumnName = r.ReadString();
        o.GopherQuality = r.ReadBoolean();
        o.GopherRepetition = r.ReadBoolean();
        o.C4 = r.ReadBoolean();
        o.FineWeb = r.ReadBoolean();
        o.GopherMinDocWords = r.ReadInt32();
        o.GopherMaxDocWords = r.ReadInt32();
        o.GopherMinAvgWordLength = r.ReadDouble();
        o.GopherMaxAvgWordLength = r.ReadDouble();
        o.GopherMaxSymbolWordRatio = r.ReadDouble();
        o.GopherMaxBulletLinesRatio = r.ReadDouble();
        o.GopherMaxEllipsisLinesRatio = r.ReadDouble();
        o.GopherMinAlphaWordsRatio = r.ReadDouble();
        o.GopherMinStopWords = r.ReadInt32();
        var stop = new string[r.ReadInt32()];
        for (int i = 0; i < stop.Length; i++)
            stop[i] = r.ReadString();
        o.GopherStopWords = stop;
        o.DupLineFraction = r.ReadDouble();
        o.DupParagraphFraction = r.ReadDouble();
        o.DupLineCharFraction = r.ReadDouble();
        o.DupParagraphCharFraction = r.ReadDouble();
        o.TopNGrams = ReadNGramFractions(r);
        o.DuplicateNGrams = ReadNGramFractions(r);
        o.C4Variant = (C4Variant)r.ReadInt32();
        int minWords = r.ReadInt32();
        o.C4MinWordsPerLine = minWords < 0 ? null : minWords;
        int minSentences = r.ReadInt32();
        o.C4MinSentences = minSentences < 0 ? null : minSentences;
        o.C4MaxWordLength = r.ReadInt32();
        o.C4RemoveCitations = r.ReadBoolean();
        o.C4FilterNoTerminalPunctuation = r.ReadBoolean();
        o.C4FilterLoremIpsum = r.ReadBoolean();
        o.C4FilterJavascript = r.ReadBoolean();
        o.C4FilterCurlyBracket = r.ReadBoolean();
        o.C4FilterPolicy = r.ReadBoolean();
        o.C4RemoveLines = r.ReadBoolean();
        o.FineWebMinLinePunctuationRatio = r.ReadDouble();
        o.FineWebLinePunctuationExcludeZero = r.ReadBoolean();
        o.FineWebMaxShortLineRatio = r.ReadDouble();
        o.FineWebShortLineLength = r.ReadInt32();
        o.FineWebMaxCharDuplicatesRatio = r.ReadDouble();
        o.FineWebMaxNewLineRatio = r.ReadDouble();
        o.Validate();
        return o;
    }

    private static NGramFraction[] ReadNGramFractions(BinaryReader r)
    {
        var list = new NGramFraction[r.ReadInt32()];
        for (int i = 0; i < list.Length; i++)
            list[i] = new NGramFraction(r.ReadInt32(), r.ReadDouble());
        return list;
    }
}

/// <summary>Estimator of <see cref="TextQualityFilterTransformer"/>; needs no training.</summary>
public sealed class TextQualityFilterEstimator : TrivialEstimatorBase<TextQualityFilterTransformer>
{
    private readonly TextQualityFilterOptions _options;

    internal TextQualityFilterEstimator(TransformsCatalog.TextTransforms catalog, string inputColumnName, TextQualityFilterOptions? options)
        : base(CurationChecks.ColumnName(inputColumnName, nameof(inputColumnName)))
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _options = (options ?? new TextQualityFilterOptions()).Clone();
        _options.Validate();
    }

    private protected override TextQualityFilterTransformer Create() => new(InputColumnName, _options);

    private protected override IReadOnlyList<(string Name, DataViewType Type)> AddedColumns() =>
        _options.Mode == QualityFilterMode.Annotate ? [(_options.AnnotationColumnName, TextDataViewType.Instance)] : [];
}

/// <summary>
/// Filters rows by the Gopher quality, Gopher repetition, C4 and FineWeb rules (see <see cref="TextQualityFilterOptions"/>).
/// Streams: memory per cursor is the scratch of the largest row seen, independent of the corpus size. A cursor set
/// asked for by the consumer evaluates the rows in parallel. Not a row-to-row mapper (it changes the row count).
/// After a cursor (or every cursor of a cursor set) has reached the end, <see cref="LastReport"/> holds the counts of
/// that pass: rows in, rows out, rows per rejecting rule.
/// </summary>
public sealed class TextQualityFilterTransformer : RowCountChangingTransformerBase, IPersistentComponent<TextQualityFilterTransformer>
{
    internal const string LoaderSignature = "LlmTextQualityFilter";

    internal static readonly ComponentVersion Version =
        new("LMQUALFL", 0x00010002, 0x00010001, LoaderSignature, typeof(TextQualityFilterTransformer).Assembly);

    static ComponentVersion IPersistentComponent<TextQualityFilterTransformer>.PersistenceVersion => Version;

    private readonly TextQualityFilterOptions _options;
    private volatile FilterReport? _lastReport;

    internal TextQualityFilterTransformer(string inputColumn, TextQualityFilterOptions options)
        : base(Version)
    {
        InputColumnName = inputColumn;
        _options = options;
    }

    /// <summary>The text column the rules read (and, with C4 line removal in drop mode, rewrite).</summary>
    public string InputColumnName { get; }

    /// <summary>Counts of the last completed pass over an output of this transformer; null before the first.</summary>
    public FilterReport? LastReport => _lastReport;

    /// <summary>Evaluates one text; returns null when it passes, else the name of the first failing rule.</summary>
    public string? Evaluate(string text) => new QualityEvaluator(_options).Evaluate(text.AsMemory());

    private protected override IDataView MakeDataView(IDataView input)
    {
        int index = SchemaChecks.TextColumn(input.Schema, InputColumnName).Index;
        var options = _options;
        return new FilterDataView(input, index, () => new QualityEvaluator(options),
            options.Mode == QualityFilterMode.Annotate ? options.AnnotationColumnName : null, r => _lastReport = r);
    }

    // Binary format (version 0x00010001): InputColumnName (string), then the options as TextQualityFilterOptions.Write
    // lists them. No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        writer.Writer.Write(InputColumnName);
        _options.Write(writer.Writer);
    }

    // Binary format: see SaveState.
    static TextQualityFilterTransformer IPersistentComponent<TextQualityFilterTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        string input = reader.Reader.ReadString();
        return new TextQualityFilterTransformer(input, TextQualityFilterOptions.Read(reader.Reader));
    }
}
