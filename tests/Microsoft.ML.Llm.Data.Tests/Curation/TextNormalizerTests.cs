using Microsoft.ML.Data;
using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class TextNormalizerTests
{
    [Theory]
    [InlineData("  Hello \t  world  \r\n\r\n\n  second   line \n third ", "Hello world\n\nsecond line\nthird")]
    [InlineData("a\u00A0\u2003b\u3000c", "a b c")]
    [InlineData("one\u2028two\u2029three", "one\ntwo\n\nthree")]
    [InlineData("\u201CHi\u201D \u2014 it\u2019s \u2018ok\u2019 \u2013 5\u22123", "\"Hi\" - it's 'ok' - 5-3")]
    [InlineData("zero\u200Bwidth\uFEFF soft\u00ADhyphen \u0007bell\u0085end", "zerowidth softhyphen bell\nend")]
    [InlineData("e\u0301t\u00E9", "\u00E9t\u00E9")] // NFC composes
    [InlineData("", "")]
    [InlineData(" \n\t ", "")]
    [InlineData("\u00ABguillemets\u00BB keep \u200Dzwj", "\u00ABguillemets\u00BB keep \u200Dzwj")]
    public void DefaultNormalization(string input, string expected)
    {
        Assert.Equal(expected, LmTextNormalizer.Normalize(input));
    }

    [Fact]
    public void LoneSurrogatesAreRepairedNeverThrown()
    {
        // (built in code: xunit cannot carry invalid UTF-16 in InlineData)
        string text = "a" + '\uD800' + "b" + '\uDC00' + "c\uD83D\uDE00" + '\uD83D';
        Assert.Equal("a\uFFFDb\uFFFDc\uD83D\uDE00\uFFFD", LmTextNormalizer.Normalize(text));
        Assert.Equal("\uFFFD", LmTextNormalizer.Normalize(((char)0xDFFF).ToString(), new TextNormalizerOptions { Form = LmNormalizationForm.Nfkc }));
    }

    [Fact]
    public void NfkcAndLowercaseAreOptions()
    {
        const string text = "\uFB01ne \uFF21BC \u00B2 \u00C9T\u00C9";
        Assert.Equal("\uFB01ne \uFF21BC \u00B2 \u00C9T\u00C9", LmTextNormalizer.Normalize(text));
        Assert.Equal("fine ABC 2 \u00C9T\u00C9", LmTextNormalizer.Normalize(text, new TextNormalizerOptions { Form = LmNormalizationForm.Nfkc }));
        Assert.Equal("fine abc 2 \u00E9t\u00E9", LmTextNormalizer.Normalize(text, new TextNormalizerOptions { Form = LmNormalizationForm.Nfkc, Lowercase = true }));
    }

    [Fact]
    public void OptionsTurnFoldingOff()
    {
        var options = new TextNormalizerOptions { FoldQuotes = false, FoldDashes = false, CollapseWhitespace = false, RemoveControlCharacters = false };
        const string text = "\u201Ca\u201D \u2014  b\u200B\n\n\n";
        Assert.Equal(text, LmTextNormalizer.Normalize(text, options));
    }

    [Fact]
    public void CleanTextIsReturnedWithoutCopy()
    {
        var memory = "Already clean text.\n\nSecond paragraph.".AsMemory();
        var result = LmTextNormalizer.Normalize(memory);
        Assert.True(result.Equals(memory));
    }

    [Fact]
    public void PipelineSaveLoadAndPredictionEngine()
    {
        var ml = new MLContext(seed: 1);
        var data = Load(ml, "  A  \u201Cquote\u201D  ", "x\u00A0\u00A0y\r\nz");
        var model = ml.Transforms.Text.NormalizeForLm("Clean", "Text", new TextNormalizerOptions { Lowercase = true }).Fit(data);
        var output = model.Transform(data);
        Assert.Equal(["a \"quote\"", "x y\nz"], Column(output, "Clean"));
        Assert.Equal(["  A  \u201Cquote\u201D  ", "x\u00A0\u00A0y\r\nz"], Column(output, "Text"));

        string path = TempPath("normalizer.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out var schema);
            Assert.Equal("Text", schema[0].Name);
            Assert.Equal(["a \"quote\"", "x y\nz"], Column(loaded.Transform(data), "Clean"));
            var engine = ml.Model.CreatePredictionEngine<TextRow, CleanRow>(loaded);
            Assert.Equal("hello world", engine.Predict(new TextRow { Text = " Hello\t\tWORLD " }).Clean);
        }
        finally
        {
            File.Delete(path);
        }
    }

    public sealed class CleanRow
    {
        public string Clean { get; set; } = "";
    }

    [Fact]
    public void BadInputGetsClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable([new { Number = 1f }]);
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.NormalizeForLm("Out", "Text").Fit(data));
        Assert.StartsWith("Could not find input column 'Text'", missing.Message);
        var wrongType = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.NormalizeForLm("Out", "Number").Fit(data));
        Assert.StartsWith("Schema mismatch for input column 'Number': expected String, got Single", wrongType.Message);
        var form = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.NormalizeForLm("Out", "Text", new TextNormalizerOptions { Form = (LmNormalizationForm)7 }));
        Assert.StartsWith("Option 'Form' must be one of None, Nfc, Nfkc; got 7.", form.Message);
    }
}
