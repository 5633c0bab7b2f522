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
        Assert.True(model.IsRowToRowMapper);   // at inference time only (ThePackersRowToRowMapper...); Transform packs
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

    public sealed class BlocksRow
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];

        [VectorType]
        public int[] Blocks { get; set; } = [];
    }

    [Theory]
    [InlineData(PackingMode.Concatenate)]
    [InlineData(PackingMode.BestFit)]
    [InlineData(PackingMode.Padded)]
    public void ThePackersRowToRowMapperGivesEachRowItsOwnTokensWhileTransformStillPacks(PackingMode mode)
    {
        // Inference time (a PredictionEngine, GetRowToRowMapper): one row in, the same row out, its own tokens unpadded and
        // without an end-of-text id; the input columns pass through. Transform (training, evaluation) packs as before.
        var ml = new MLContext(seed: 1);
        int[][] documents = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]];
        var data = Documents(ml, documents);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 3, EndOfTextId = 0, Mode = mode }).Fit(data);
        Assert.True(model.IsRowToRowMapper);

        var mapper = model.GetRowToRowMapper(data.Schema);
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32), mapper.OutputSchema["Blocks"].Type);
        Assert.Equal(["Tokens", "Blocks"], mapper.OutputSchema.Select(c => c.Name));
        var engine = ml.Model.CreatePredictionEngine<TokensRow, BlocksRow>(model);
        foreach (var document in documents)
        {
            var row = engine.Predict(new TokensRow { Tokens = document });
            Assert.Equal(document, row.Blocks);
            Assert.Equal(document, row.Tokens);
        }

        // Transform is unchanged: blocks of ContextLength + 1 = 4.
        var packed = model.Transform(data);
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32, 4), packed.Schema["Blocks"].Type);
        Assert.All(ReadTokens(packed, "Blocks"), block => Assert.Equal(4, block.Length));
        if (mode == PackingMode.Concatenate)
        {
            // Stream: 1 2 3 0 4 5 0 6 7 8 9 10 11 0 → three blocks of 4, the last partial one dropped.
            Assert.Equal([[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 10]], ReadTokens(packed, "Blocks"));
        }

        // A missing token column is reported by name.
        var missing = Assert.ThrowsAny<ArgumentException>(() => model.GetRowToRowMapper(ml.Data.LoadFromEnumerable(new[] { new { Other = 1 } }).Schema));
        Assert.Contains("'Tokens'", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ConcatenateCanPadTheLastBlockWithALossMask()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3], [4, 5], [6, 7, 8, 9]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 4, EndOfTextId = 0, PadId = 99, PadLastBlock = true }).Fit(data);
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
        var tokenizer = ((LmTokenizerTransformer)model.First()).Tokenizer;
        Assert.Equal(text[..257], tokenizer.Decode(blocks[0]));
        Assert.Equal(text[257..514], tokenizer.Decode(blocks[1]));
    }

    [Fact]
    public void ContextLengthBelowTwoIsRejected()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.PackTokens("Blocks", "Tokens", contextLength: 1));
        Assert.Equal("TokenPackerOptions.ContextLength must be at least 2; got 1. (Parameter 'ContextLength')\nActual value was 1.", e.Message.Replace("\r\n", "\n"));
    }

    [Fact]
    public void NonTokenInputColumnIsReported()
    {
        var ml = new MLContext(seed: 1);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.PackTokens("Blocks", "Text", contextLength: 8).Fit(Texts(ml, "a")));
        Assert.Equal("Schema mismatch for input column 'Text': expected Vector<Int32>, got String (Parameter 'inputSchema')", e.Message);
    }

    [Fact]
    public void StrideMakesBlocksOverlap()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3, 4, 5, 6, 7]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 3, Stride = 2, EndOfTextId = 0 }).Fit(data);
        // Stream 1..7 0: blocks start every 2 tokens.
        Assert.Equal([[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 0]], ReadTokens(model.Transform(data), "Blocks"));
        Assert.Equal(0, model.LastPassStatistics!.TruncatedTokens);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 3, Stride = 5 }));
        Assert.Equal("TokenPackerOptions.Stride must be between 1 and ContextLength + 1 = 4; got 5. (Parameter 'Stride')\nActual value was 5.", e.Message.Replace("\r\n", "\n"));
    }

    [Fact]
    public void PaddedModeGivesOneDocumentPerRowWithALossMask()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2], [], [3, 4, 5, 6, 7, 8]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 3, Mode = PackingMode.Padded, EndOfTextId = 0, PadId = 9 }).Fit(data);
        var output = model.Transform(data);
        Assert.Equal([[1, 2, 0, 9], [3, 4, 5, 6]], ReadTokens(output, "Blocks"));
        Assert.Equal([[true, true, true, false], [true, true, true, true]], ReadMask(output, "LossMask"));
        Assert.Null(output.Schema.GetColumnOrNull("DocumentIds"));
        var stats = model.LastPassStatistics!;
        Assert.Equal(2, stats.Documents);
        Assert.Equal(10, stats.InputTokens);             // 3 + 7 with end-of-text
        Assert.Equal(1.0 / 8, stats.PaddingFraction, 12);
        Assert.Equal(3.0 / 10, stats.TruncatedFraction, 12); // 7, 8 and the end-of-text of the long document
    }

    [Fact]
    public void BestFitPacksChunksWithoutTruncationAndMarksDocuments()
    {
        var ml = new MLContext(seed: 1);
        // Block length 6. Documents (with EOS 0): A=5 tokens, B=2, C=9 → chunks 6 + 3, D=3.
        var data = Documents(ml, [11, 12, 13, 14], [21], [31, 32, 33, 34, 35, 36, 37, 38], [41, 42]);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 5, Mode = PackingMode.BestFit, EndOfTextId = 0, PadId = 99 }).Fit(data);
        var output = model.Transform(data);
        // Decreasing: C1(6) → bin1; A(5) → bin2; C2(3) → bin3; D(3) → bin3 (3 free, best fit); B(2) → no bin with ≥ 2 free but bin2 has 1 → new bin4.
        Assert.Equal(
        [
            [31, 32, 33, 34, 35, 36],
            [11, 12, 13, 14, 0, 99],
            [37, 38, 0, 41, 42, 0],
            [21, 0, 99, 99, 99, 99],
        ], ReadTokens(output, "Blocks"));
        Assert.Equal(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, -1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, -1, -1, -1, -1],
        ], ReadTokens(output, "DocumentIds"));
        Assert.Equal([true, true, false, false, false, false], ReadMask(output, "LossMask")[3]);
        var stats = model.LastPassStatistics!;
        Assert.Equal(0, stats.TruncatedTokens);
        Assert.Equal(19, stats.InputTokens);
        Assert.Equal(5.0 / 24, stats.PaddingFraction, 12);
        // Deterministic: a second pass gives the same blocks.
        Assert.Equal(ReadTokens(output, "Blocks"), ReadTokens(output, "Blocks"));
    }

    [Fact]
    public void BestFitWastesLessThanPaddedOnRealDocuments()
    {
        var ml = new MLContext(seed: 1);
        var lines = File.ReadAllText(TestData.TinyShakespearePath).Split("\n\n").Take(2000).ToArray();
        var data = Texts(ml, lines);
        var tokenize = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Bytes);
        var bestFit = tokenize.Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 255, Mode = PackingMode.BestFit, BestFitWindow = 500 })).Fit(data);
        var padded = tokenize.Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 255, Mode = PackingMode.Padded })).Fit(data);
        int bestFitBlocks = ReadTokens(bestFit.Transform(data), "Blocks").Count;
        int paddedBlocks = ReadTokens(padded.Transform(data), "Blocks").Count;
        var b = bestFit.LastTransformer.LastPassStatistics!;
        var p = padded.LastTransformer.LastPassStatistics!;
        Assert.Equal(0, b.TruncatedFraction);
        Assert.True(p.TruncatedFraction > 0);
        Assert.True(b.PaddingFraction < 0.05, $"best-fit padding {b.PaddingFraction}");
        Assert.True(p.PaddingFraction > 0.3, $"padded padding {p.PaddingFraction}");
        Assert.True(bestFitBlocks < paddedBlocks);
        // Every input token is in exactly one block.
        Assert.Equal(b.InputTokens, b.Blocks * 256 - b.PaddingTokens);
    }

    [Fact]
    public void PackerModesSurviveTheModelZip()
    {
        var ml = new MLContext(seed: 1);
        var data = Texts(ml, "to be or not to be", "that is the question", "whether tis nobler in the mind to suffer");
        var pipeline = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", LmTokenizerKind.Bytes)
            .Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 15, Mode = PackingMode.BestFit, DocumentIdsColumnName = "Docs" }));
        var model = pipeline.Fit(data);
        string path = TestData.TempPath(".zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out _).Transform(data);
            var expected = model.Transform(data);
            Assert.Equal(ReadTokens(expected, "Blocks"), ReadTokens(loaded, "Blocks"));
            Assert.Equal(ReadTokens(expected, "Docs"), ReadTokens(loaded, "Docs"));
            Assert.Equal(ReadMask(expected, "LossMask"), ReadMask(loaded, "LossMask"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
