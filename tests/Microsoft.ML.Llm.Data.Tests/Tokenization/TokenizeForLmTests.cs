using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

public class TokenizeForLmTests
{
    public sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    public sealed class TokensRow
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];
    }

    internal static IDataView Texts(MLContext ml, params string[] texts) => ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t }));

    internal static List<int[]> ReadTokens(IDataView data, string column)
    {
        var result = new List<int[]>();
        var col = data.Schema[column];
        using var cursor = data.GetRowCursor([col]);
        var getter = cursor.GetGetter<VBuffer<int>>(col);
        VBuffer<int> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    [Fact]
    public void CharacterKindBuildsTheVocabularyInFitAndTokenizes()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "hello", "world");
        var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Character).Fit(data);
        Assert.Equal(7, model.Tokenizer.VocabularySize);   // d e h l o r w
        var output = model.Transform(data);
        var column = output.Schema["Tokens"];
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32), column.Type);
        Assert.True(column.TryGetTokenizer(out var annotated));
        Assert.Same(model.Tokenizer, annotated);
        var tokens = ReadTokens(output, "Tokens");
        Assert.Equal([[2, 1, 3, 3, 4], [6, 4, 5, 3, 0]], tokens);
        // The text column passes through.
        Assert.Equal(["hello", "world"], output.GetColumn<string>("Text").ToArray());
    }

    [Fact]
    public void PredictionEngineUsesTheRowMapper()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "abc");
        var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Bytes).Fit(data);
        Assert.True(model.IsRowToRowMapper);
        var engine = ml.Model.CreatePredictionEngine<TextRow, TokensRow>(model);
        Assert.Equal([104, 105, 33], engine.Predict(new TextRow { Text = "hi!" }).Tokens);
    }

    [Fact]
    public void SuppliedTokenizerIsUsed()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "Hello world");
        var tiktoken = LmTokenizer.Tiktoken("o200k_base");
        var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", new LmTokenizerOptions { Tokenizer = tiktoken }).Fit(data);
        Assert.Same(tiktoken, model.Tokenizer);
        Assert.Equal(tiktoken.Encode("Hello world"), ReadTokens(model.Transform(data), "Tokens").Single());
    }

    [Theory]
    [InlineData(LmTokenizerKind.Character)]
    [InlineData(LmTokenizerKind.Bytes)]
    [InlineData(LmTokenizerKind.Tiktoken)]
    public void ModelZipRoundTripGivesTheSameTokensAndTokenizer(LmTokenizerKind kind)
    {
        var ml = new MLContext(seed: 1);
        string text = File.ReadAllText(TestData.TinyShakespearePath)[..3000];
        var data = Texts(ml, text[..1500], text[1500..]);
        var pipeline = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", kind)
            .Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 64));
        var model = pipeline.Fit(data);
        string path = TestData.TempPath(".zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = new MLContext(seed: 2).Model.Load(path, out var schema);
            Assert.Equal("Text", schema.Single().Name);
            var expected = model.Transform(data);
            var actual = loaded.Transform(data);
            Assert.Equal(ReadTokens(expected, "Blocks"), ReadTokens(actual, "Blocks"));
            Assert.NotEmpty(ReadTokens(actual, "Blocks"));
            Assert.True(actual.Schema["Blocks"].TryGetTokenizer(out var tokenizer));
            Assert.Equal(kind, tokenizer.Kind);
            Assert.Equal(model.LastTransformer.Transform(model.First().Transform(data)).Schema["Blocks"].Type, actual.Schema["Blocks"].Type);
            Assert.Equal(text[..100], tokenizer.Decode(tokenizer.Encode(text[..100])));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void MissingInputColumnIsReported()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "a");
        var estimator = ml.Transforms.Text.TokenizeForLm("Tokens", "Body", LmTokenizerKind.Bytes);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data));
        Assert.Equal("Could not find input column 'Body' (Parameter 'inputSchema')", e.Message);
    }

    [Fact]
    public void NonTextInputColumnIsReported()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new TokensRow { Tokens = [1, 2] } });
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.TokenizeForLm("Out", "Tokens", LmTokenizerKind.Bytes).Fit(data));
        Assert.Equal("Schema mismatch for input column 'Tokens': expected String, got Vector<Int32> (Parameter 'inputSchema')", e.Message);
    }

    [Fact]
    public void EmptyCorpusForCharacterKindIsReported()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<InvalidOperationException>(() => ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Character).Fit(Texts(ml, "", "")));
        Assert.Equal("The input column 'Text' holds no text (an empty corpus); a character tokenizer needs at least one character to build its vocabulary.", e.Message);
    }

    [Fact]
    public void UnknownTiktokenEncodingOptionIsReported()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Tiktoken, tiktokenEncoding: "p50k_base"));
        Assert.Equal("LmTokenizerOptions.TiktokenEncoding 'p50k_base' is not available; accepted values are 'o200k_base', 'cl100k_base', 'gpt2'. (Parameter 'options')", e.Message);
    }

    [Theory]
    [InlineData(LmTokenizerKind.Tiktoken)]
    [InlineData(LmTokenizerKind.Bpe)]      // per-worker copies with their own pre-tokenization regex
    public void ParallelBatchCursorYieldsTheSameRowsAsTheSerialCursor(LmTokenizerKind kind)
    {
        var ml = new MLContext(seed: 1);
        var lines = File.ReadAllLines(TestData.TinyShakespearePath).Take(9000).ToArray();   // > 2 batches of 4096 rows
        var data = Texts(ml, lines);
        var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", kind).Fit(data);
        model.MaxDegreeOfParallelism = 1;
        var serial = ReadTokens(model.Transform(data), "Tokens");
        model.MaxDegreeOfParallelism = 4;
        var output = model.Transform(data);
        var parallel = ReadTokens(output, "Tokens");
        Assert.Equal(serial, parallel);
        Assert.Equal(lines.Length, parallel.Count);
        Assert.Equal(lines[8999], model.Tokenizer.Decode(parallel[8999]));
        // Row ids match the input's.
        using var cursor = output.GetRowCursor([output.Schema["Tokens"]]);
        var id = cursor.GetIdGetter();
        DataViewRowId value = default;
        using var inputCursor = data.GetRowCursor([]);
        var inputId = inputCursor.GetIdGetter();
        DataViewRowId expected = default;
        while (cursor.MoveNext() && inputCursor.MoveNext())
        {
            id(ref value);
            inputId(ref expected);
            Assert.Equal(expected, value);
        }
    }
}
