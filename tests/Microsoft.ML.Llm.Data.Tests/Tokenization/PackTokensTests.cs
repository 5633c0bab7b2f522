using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using static Microsoft.ML.Llm.Data.Tests.Tokenization.TokenizeForLmTests;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

public class PackTokensTests
{
    private static IDataView Documents(MLContext ml, params int[][] documents)
        => ml.Data.LoadFromEnumerable(documents.Select(d => new TokensRow { Tokens = d }));

    private static List<bool[]> ReadMask(IDataView data, string column)
    {
        var result = new List<bool[]>();
        var col = data.Schema[column];
        using var cursor = data.GetRowCursor([col]);
        var getter = cursor.GetGetter<VBuffer<bool>>(col);
        VBuffer<bool> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    [Fact]
    public void ConcatenateJoinsWithEosAndDropsTheLastPartialBlock()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3], [4, 5], [6, 7, 8, 9]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 3, endOfTextId: 0).Fit(data);
        var output = model.Transform(data);
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32, 4), output.Schema["Blocks"].Type);
        Assert.False(model.IsRowToRowMapper);
        // Stream: 1 2 3 0 4 5 0 6 7 8 9 0 → blocks of 4.
        Assert.Equal([[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]], ReadTokens(output, "Blocks"));
        // A second cursor yields the same rows.
        Assert.Equal(ReadTokens(output, "Blocks"), ReadTokens(output, "Blocks"));
        var stats = model.LastPassStatistics!;
        Assert.Equal(3, stats.Documents);
        Assert.Equal(12, stats.InputTokens);
        Assert.Equal(3, stats.Blocks);
        Assert.Equal(0, stats.PaddingFraction);
        Assert.Equal(0, stats.TruncatedFraction);

        var dropped = ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 4, endOfTextId: 0).Fit(data);
        Assert.Equal([[1, 2, 3, 0, 4], [5, 0, 6, 7, 8]], ReadTokens(dropped.Transform(data), "Blocks"));
        Assert.Equal(2.0 / 12, dropped.LastPassStatistics!.TruncatedFraction, 12);
    }

    [Fact]
    public void ConcatenateCanPadTheLastBlockWithALossMask()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3], [4, 5], [6, 7, 8, 9]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new PackingOptions { ContextLength = 4, EndOfTextId = 0, PadId = 99, PadLastBlock = true }).Fit(data);
        var output = model.Transform(data);
        Assert.Equal([[1, 2, 3, 0, 4], [5, 0, 6, 7, 8], [9, 0, 99, 99, 99]], ReadTokens(output, "Blocks"));
        Assert.Equal([true, true, false, false, false], ReadMask(output, "LossMask")[2]);
        Assert.Equal(3.0 / 15, model.LastPassStatistics!.PaddingFraction, 12);
        Assert.Equal(0, model.LastPassStatistics!.TruncatedFraction);
    }

    [Fact]
    public void EndOfTextDefaultsFromTheTokenizerAnnotation()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "ab", "cd");
        var pipeline = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Bytes)
            .Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 2));
        var model = pipeline.Fit(data);
        Assert.Equal(256, model.LastTransformer.EndOfTextId);
        var output = model.Transform(data);
        Assert.Equal([[97, 98, 256], [99, 100, 256]], ReadTokens(output, "Blocks"));
        Assert.True(output.Schema["Blocks"].TryGetTokenizer(out var tokenizer));
        Assert.Equal(257, tokenizer.VocabularySize);
    }

    [Fact]
    public void CharacterTokenizerWithoutEosPacksASingleDocument()
    {
        var ml = new MLContext(seed: 1);
        string text = File.ReadAllText(TestData.TinyShakespearePath);
        var data = Texts(ml, text);
        var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Character)
            .Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 256)).Fit(data);
        Assert.Null(model.LastTransformer.EndOfTextId);
        var blocks = ReadTokens(model.Transform(data), "Blocks");
        Assert.Equal(text.Length / 257, blocks.Count);
        var tokenizer = ((LmTokenizingTransformer)model.First()).Tokenizer;
        Assert.Equal(text[..257], tokenizer.Decode(blocks[0]));
        Assert.Equal(text[257..514], tokenizer.Decode(blocks[1]));
    }

    [Fact]
    public void ContextLengthBelowTwoIsRejected()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 1));
        Assert.Equal("PackingOptions.ContextLength must be at least 2; got 1. (Parameter 'ContextLength')\nActual value was 1.", e.Message.Replace("\r\n", "\n"));
    }

    [Fact]
    public void NonTokenInputColumnIsReported()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.PackTokens("Blocks", "Text", contextLength: 8).Fit(Texts(ml, "a")));
        Assert.Equal("Schema mismatch for input column 'Text': expected Vector<Int32>, got String. (Parameter 'inputSchema')", e.Message);
    }
}
