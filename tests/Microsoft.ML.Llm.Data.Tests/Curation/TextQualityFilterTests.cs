using Microsoft.ML.Llm.Data.Curation;
using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class TextQualityFilterTests
{
    private static TextQualityFilterOptions Only(bool gopherQuality = false, bool repetition = false, bool c4 = false, bool fineWeb = false) =>
        new() { GopherQuality = gopherQuality, GopherRepetition = repetition, C4 = c4, FineWeb = fineWeb };

    private static string? Evaluate(TextQualityFilterOptions options, string text) => new QualityEvaluator(options).Evaluate(text.AsMemory());

    private static string Repeat(string word, int count) => string.Join(' ', Enumerable.Repeat(word, count));

    [Fact]
    public void GoodDocumentPassesEveryRuleSet()
    {
        Assert.Null(Evaluate(new TextQualityFilterOptions(), GoodDocument));
    }

    [Fact]
    public void WordsAreSplitLikeDatatrove()
    {
        var e = new QualityEvaluator(new TextQualityFilterOptions());
        Assert.Equal(4, e.Tokenize("Hello, world."));
        Assert.Equal([true, false, true, false], e.Tokens.ToArray().Select(t => t.IsWord));
        Assert.Equal(3, e.Tokenize("don't  stop ..."));
        Assert.Equal(0, e.Tokenize(" \n\t"));
    }

    [Theory]
    [InlineData("", "gopher_short_doc")]                 // empty text
    [InlineData("!!! ??? ... ,,, ;;", "gopher_short_doc")] // only punctuation: no non-symbol words
    [InlineData("the", "gopher_short_doc")]               // one line, one word
    public void GopherQualityEdgeCases(string text, string rule) => Assert.Equal(rule, Evaluate(Only(gopherQuality: true), text));

    [Fact]
    public void GopherQualityRulesWithHandComputedValues()
    {
        var o = Only(gopherQuality: true);
        Assert.Equal("gopher_short_doc", Evaluate(o, Repeat("the", 49)));              // 49 < 50
        Assert.Null(Evaluate(o, Repeat("the", 50)));                                  // 50 words, mean 3.0, 50 stop words
        Assert.Equal("gopher_long_doc", Evaluate(new TextQualityFilterOptions { GopherRepetition = false, C4 = false, FineWeb = false, GopherMaxDocWords = 60 }, Repeat("the", 61)));
        Assert.Equal("gopher_below_avg_threshold", Evaluate(o, Repeat("ab", 50) + " the the")); // (100 + 6) / 52 = 2.04 < 3
        Assert.Equal("gopher_above_avg_threshold", Evaluate(o, Repeat("abcdefghijk", 50) + " the the")); // (550 + 6) / 52 = 10.7 > 10
        Assert.Equal("gopher_too_many_hashes", Evaluate(o, Repeat("the", 50) + " " + Repeat("#", 6)));   // 6 / 56 = 0.107 > 0.1
        Assert.Null(Evaluate(o, Repeat("the", 50) + " " + Repeat("#", 5)));                                // 5 / 55 = 0.091
        Assert.Equal("gopher_too_many_ellipsis", Evaluate(o, Repeat("the", 50) + " " + Repeat("...", 6))); // 6 / 56
        Assert.Equal("gopher_too_many_ellipsis", Evaluate(o, Repeat("the", 50) + " " + Repeat("\u2026", 6)));
        string bullets = string.Join('\n', Enumerable.Repeat("- the the the the the", 10));                // 10 / 10 lines > 0.9
        Assert.Equal("gopher_too_many_bullets", Evaluate(o, bullets));
        string nineBullets = string.Join('\n', Enumerable.Repeat("\u2022 the the the the the", 9)) + "\nthe the the the the"; // 9 / 10 = 0.9, not > 0.9
        Assert.Null(Evaluate(o, nineBullets));
        string ellipsisLines = string.Join('\n', Enumerable.Range(0, 10).Select(i => Repeat("the", 10) + (i < 4 ? "..." : ""))); // 4 / 10 > 0.3; 4 / 104 per word
        Assert.Equal("gopher_too_many_end_ellipsis", Evaluate(o, ellipsisLines));
        Assert.Equal("gopher_below_alpha_threshold", Evaluate(o, Repeat("the", 50) + " " + Repeat("123", 13))); // 50 / 63 = 0.794 < 0.8
        Assert.Null(Evaluate(o, Repeat("the", 50) + " " + Repeat("123", 12)));                                   // 50 / 62 = 0.806
        Assert.Equal("gopher_enough_stop_words", Evaluate(o, Repeat("cat", 50)));
        Assert.Equal("gopher_enough_stop_words", Evaluate(o, Repeat("cat", 49) + " the"));                      // 1 < 2
        Assert.Null(Evaluate(o, Repeat("cat", 48) + " the and"));
        Assert.Equal("gopher_enough_stop_words", Evaluate(o, Repeat("cat", 48) + " The AND"));                  // case-sensitive, as datatrove
    }

    [Fact]
    public void GopherRepetitionRulesWithHandComputedValues()
    {
        var o = Only(repetition: true);
        Assert.Null(Evaluate(o, ""));                                         // empty text: nothing repeated
        Assert.Equal("dup_line_frac", Evaluate(o, "a\na\nb"));               // 1 / 3 lines > 0.3
        Assert.Equal("dup_para_frac", Evaluate(o, "x y\n\nx y\n\nz w"));      // 1 / 3 paragraphs > 0.3
        const string p = "long paragraph text here";                          // 24 chars
        Assert.Equal("dup_para_char_frac", Evaluate(o, $"{p}\n\n{p}\n\na\n\nb")); // 1 / 4 paragraphs; 24 / 56 chars > 0.2
        const string l = "long line text here";                               // 19 chars
        Assert.Equal("dup_line_char_frac", Evaluate(o, $"{l}\n{l}\na\nb"));   // 1 / 4 lines; 19 / 43 chars > 0.2
        Assert.Equal("top_2_gram", Evaluate(o, "aa bb aa bb cc dd ee ff gg hh")); // "aa bb" × 2 = 10 / 29 > 0.2
        // Every n-gram occurs once: the first one is the "most common" (Counter.most_common), 11 / 59 > 0.16 for n = 4.
        Assert.Equal("top_4_gram", Evaluate(o, "aa bb cc dd aa bb ee ff gg hh ii jj kk ll mm nn oo pp qq rr"));
        var noTop = Only(repetition: true);
        noTop.TopNGrams = [];
        Assert.Equal("duplicated_5_n_grams", Evaluate(noTop, "a1 a2 a3 a4 a5 a1 a2 a3 a4 a5")); // 10 chars ("".join) / 29 > 0.15
        Assert.Null(Evaluate(noTop, "a1 a2 a3 a4 a5 a6 a1 a2 a3 a4"));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    [InlineData(10)]
    public void EveryDuplicatedNGramSize(int n)
    {
        // n one-letter words twice: n repeated characters of 4n - 1 (n / (4n - 1) > 0.15 ... 0.10); one size enabled at a time
        var o = Only(repetition: true);
        o.TopNGrams = [];
        o.DuplicateNGrams = [new(n, TextQualityFilterOptions.Defaults.DuplicateNGrams.Single(t => t.N == n).MaxCharFraction)];
        string half = string.Join(' ', "bcdefghijk".Take(n).Select(c => c.ToString()));
        Assert.Equal($"duplicated_{n}_n_grams", Evaluate(o, half + " " + half));
        Assert.Null(Evaluate(o, half + " " + string.Join(' ', "lmnopqrstu".Take(n).Select(c => c.ToString()))));
    }

    [Fact]
    public void TopThreeGram()
    {
        // "aa bb cc" (8 chars) × 2 = 16 / 68 = 0.235 > 0.18; the 2-gram check is off
        var o = Only(repetition: true);
        o.TopNGrams = [new(3, 0.18)];
        o.DuplicateNGrams = [];
        Assert.Equal("top_3_gram", Evaluate(o, "aa bb cc aa bb cc dd ee ff gg hh ii jj kk ll mm nn oo pp qq rr ss tt"));
        o.TopNGrams = [new(3, 0.24)];
        Assert.Null(Evaluate(o, "aa bb cc aa bb cc dd ee ff gg hh ii jj kk ll mm nn oo pp qq rr ss tt"));
    }

    [Fact]
    public void C4RulesDropDocumentsAndRemoveLines()
    {
        var o = Only(c4: true);
        Assert.Equal("lorem_ipsum", Evaluate(o, GoodDocument + "\nLorem ipsum dolor sit amet."));
        Assert.Equal("curly_bracket", Evaluate(o, GoodDocument + "\nThe function f { returns } a value."));
        Assert.Equal("too_few_sentences", Evaluate(o, "One short sentence is here.\nAnother one is here."));
        Assert.Equal("too_few_sentences", Evaluate(o, ""));

        const string threeSentences = "This is a fine sentence with words.\nThis is another one with more words.\nAnd here is the third of them all.";
        Assert.Equal("too_few_sentences", Evaluate(o, threeSentences));           // datatrove: 3 < 5
        Assert.Null(Evaluate(new TextQualityFilterOptions { GopherQuality = false, GopherRepetition = false, FineWeb = false, C4Variant = C4Variant.OriginalC4 }, threeSentences));

        Assert.Equal(3, QualityEvaluator.CountSentences("Hello there. How are you? Fine!"));
        Assert.Equal(2, QualityEvaluator.CountSentences("Dr. Who is here."));   // no abbreviation list (Punkt says 1)
        Span<char> buffer = stackalloc char[64];
        Assert.Equal("A citation ends here.", buffer[..QualityEvaluator.RemoveCitations("A citation[12] ends here[edit].", buffer)].ToString());
        Assert.Equal("x [a1] y", buffer[..QualityEvaluator.RemoveCitations("x [a1] y[citation needed]", buffer)].ToString());
    }

    [Fact]
    public void C4LineRemovalRewritesTheTextInDropMode()
    {
        var ml = new MLContext(seed: 1);
        string text = GoodDocument + "\nno terminal punctuation here\nPlease enable JavaScript to view the page.\nThis site uses cookies to improve things.\nToo short.\nA line with a citation[1] ends here[edit].\nThis line has a " + new string('x', 1001) + " word.";
        var data = Load(ml, text);
        var model = ml.Transforms.Text.FilterByQuality("Text", Only(c4: true)).Fit(data);
        Assert.Equal([GoodDocument + "\nA line with a citation ends here."], Column(model.Transform(data)));
        var annotate = Only(c4: true);
        annotate.Mode = QualityFilterMode.Annotate;
        var annotated = ml.Transforms.Text.FilterByQuality("Text", annotate).Fit(data).Transform(data);
        Assert.Equal([text], Column(annotated));  // annotate mode never changes the text
        Assert.Equal([""], Column(annotated, "QualityRejection"));
    }

    [Fact]
    public void FineWebRulesWithHandComputedValues()
    {
        var o = Only(fineWeb: true);
        Assert.Equal("empty", Evaluate(o, ""));
        Assert.Equal("empty", Evaluate(o, "\n  \n\t"));
        Assert.Equal("line_punct_ratio", Evaluate(o, "abc def ghi\njkl mno"));                 // 0 / 2 < 0.12
        var excludeZero = Only(fineWeb: true);
        excludeZero.FineWebLinePunctuationExcludeZero = true;
        Assert.Equal("short_line_ratio", Evaluate(excludeZero, "abc def ghi\njkl mno"));       // 2 / 2 > 0.67
        Assert.Equal("short_line_ratio", Evaluate(o, "First line.\nSecond line.\nThird line.\nA long line that certainly exceeds thirty characters.")); // 3 / 4
        const string line = "This is a long line of text that ends well."; // 43 chars
        Assert.Equal("char_dup_ratio", Evaluate(o, $"{line}\n{line}\nAnd one more line of text is here too.")); // 43 / 124 > 0.01
        string list = string.Join('\n', "abcd".Select(c => "Supercalifragilisticexpialidocious" + c + "."));
        Assert.Equal("list_ratio", Evaluate(o, list));                                          // 3 newlines / 8 words > 0.3
        Assert.Null(Evaluate(o, GoodDocument));
    }

    [Fact]
    public void DropModeReportsCountsPerRule()
    {
        var ml = new MLContext(seed: 1);
        var data = LoadWithIds(ml, [GoodDocument, "", "Lorem ipsum.", GoodDocument + "\n" + GoodDocument, "x" + GoodDocument]);
        var model = ml.Transforms.Text.FilterByQuality("Text").Fit(data);
        Assert.Null(model.LastReport);
        var output = model.Transform(data);
        Assert.Equal([0, 4], Ids(output));
        var report = model.LastReport!;
        Assert.Equal(5, report.RowsIn);
        Assert.Equal(2, report.RowsOut);
        // "" has no words; "Lorem ipsum." is one 2-gram covering 11 / 12 characters (repetition runs first, as in
        // FineWeb's pipeline); the doubled document is one paragraph whose 6 of 12 lines are duplicates.
        Assert.Equal(new Dictionary<string, long> { ["gopher_short_doc"] = 1, ["top_2_gram"] = 1, ["dup_line_frac"] = 1 }, report.RejectedByRule);
        Assert.False(model.IsRowToRowMapper);
        Assert.Null(output.GetRowCount());
    }

    [Fact]
    public void AnnotateModeKeepsEveryRow()
    {
        var ml = new MLContext(seed: 1);
        var data = LoadWithIds(ml, [GoodDocument, "", GoodDocument + "\n" + GoodDocument]);
        var model = ml.Transforms.Text.FilterByQuality("Text", new TextQualityFilterOptions { Mode = QualityFilterMode.Annotate, AnnotationColumnName = "Why" }).Fit(data);
        var output = model.Transform(data);
        Assert.Equal([0, 1, 2], Ids(output));
        Assert.Equal(["", "gopher_short_doc", "dup_line_frac"], Column(output, "Why"));
        Assert.Equal(3, model.LastReport!.RowsIn);
        Assert.Equal(1, model.LastReport.RowsOut);
    }

    [Fact]
    public void CursorSetsEvaluateInParallelAndYieldTheSameRows()
    {
        var ml = new MLContext(seed: 1);
        var texts = Enumerable.Range(0, 400).Select(i => i % 3 == 0 ? "short " + i : GoodDocument.Replace("city", "city" + i)).ToArray();
        var data = ml.Data.Cache(LoadWithIds(ml, texts));
        var model = ml.Transforms.Text.FilterByQuality("Text").Fit(data);
        var output = model.Transform(data);
        var expected = Enumerable.Range(0, 400).Where(i => i % 3 != 0).ToList();
        Assert.Equal(expected, Ids(output));
        Assert.Equal(expected, Ids(output)); // every cursor, same rows

        var cursors = output.GetRowCursorSet([output.Schema["Id"]], 2);
        var seen = new List<int>[cursors.Length];
        Parallel.For(0, cursors.Length, k =>
        {
            seen[k] = [];
            var getter = cursors[k].GetGetter<int>(output.Schema["Id"]);
            int id = 0;
            while (cursors[k].MoveNext())
            { getter(ref id); seen[k].Add(id); }
            cursors[k].Dispose();
        });
        Assert.Equal(expected, seen.SelectMany(s => s).Order());
        Assert.Equal(400, model.LastReport!.RowsIn);
        Assert.Equal(expected.Count, model.LastReport.RowsOut);
    }

    [Fact]
    public void SavesAndLoadsWithOptions()
    {
        var ml = new MLContext(seed: 1);
        var data = LoadWithIds(ml, [GoodDocument, Repeat("the", 40)]);
        var options = new TextQualityFilterOptions { Mode = QualityFilterMode.Annotate, GopherMinDocWords = 30, C4 = false, FineWeb = false, TopNGrams = [] };
        var model = ml.Transforms.Text.FilterByQuality("Text", options).Fit(data);
        string path = TempPath("quality.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            // 40 words pass the 30-word minimum; then the duplicated 5-grams of "the the ..." fail.
            Assert.Equal(["", "duplicated_5_n_grams"], Column(loaded.Transform(data), "QualityRejection"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BadOptionsAndColumnsGetClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var nan = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Text", new TextQualityFilterOptions { DupLineFraction = double.NaN }));
        Assert.StartsWith("Option 'DupLineFraction' must be between 0 and 1; got NaN.", nan.Message);
        var negative = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Text", new TextQualityFilterOptions { GopherMinDocWords = -1 }));
        Assert.StartsWith("Option 'GopherMinDocWords' must be at least 0; got -1.", negative.Message);
        var order = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Text", new TextQualityFilterOptions { GopherMinAvgWordLength = 12 }));
        Assert.StartsWith("Option 'GopherMinAvgWordLength' (12) must not exceed option 'GopherMaxAvgWordLength' (10).", order.Message);
        var ngram = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Text", new TextQualityFilterOptions { TopNGrams = [new(2, 1.5)] }));
        Assert.StartsWith("Option 'TopNGrams[2]' must be between 0 and 1; got 1.5.", ngram.Message);
        var data = ml.Data.LoadFromEnumerable([new { Text = 3 }]);
        var wrong = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Text").Fit(data));
        Assert.StartsWith("Schema mismatch for input column 'Text': expected String, got Int32", wrong.Message);
        var shape = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByQuality("Body").Fit(data));
        Assert.StartsWith("Could not find input column 'Body'", shape.Message);
    }
}
