using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using static Microsoft.ML.Llm.Data.Tests.Tokenization.TokenizeForLmTests;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

/// <summary>PackTokens carrying an input loss mask (chat/SFT tokens) through each mode, and the annotations it adds.</summary>
public class PackTokensLossMaskTests
{
    public sealed class MaskedRow
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];

        [VectorType]
        public bool[] Mask { get; set; } = [];
    }

    // Two "conversations": the first token is a prompt (mask false), the rest a response; the second already ends
    // with the end-of-text id 0 (as TokenizeChat's rows do), so the packer adds no second one.
    private static IDataView Conversations(MLContext ml) => ml.Data.LoadFromEnumerable(new[]
    {
        new MaskedRow { Tokens = [1, 2, 3], Mask = [false, true, true] },
        new MaskedRow { Tokens = [4, 5, 0], Mask = [false, true, true] },
    });

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

    private static TokenPackerOptions Options(PackingMode mode, int context, bool padLast = false) => new()
    {
        ContextLength = context,
        Mode = mode,
        EndOfTextId = 0,
        PadId = 9,
        PadLastBlock = padLast,
        InputLossMaskColumnName = "Mask",
    };

    [Fact]
    public void PaddedModeCombinesTheInputMaskWithThePaddingMask()
    {
        var ml = new MLContext(seed: 1);
        var data = Conversations(ml);
        var output = ml.Transforms.Text.PackTokens("Blocks", "Tokens", Options(PackingMode.Padded, 4)).Fit(data).Transform(data);
        Assert.Equal([[1, 2, 3, 0, 9], [4, 5, 0, 9, 9]], ReadTokens(output, "Blocks"));
        // The separator added after the first document takes the mask of its last token (a response token: trained).
        Assert.Equal([[false, true, true, true, false], [false, true, true, false, false]], ReadMask(output, "LossMask"));
        Assert.True(output.Schema["Blocks"].TryGetLossMaskColumn(out var mask));
        Assert.Equal("LossMask", mask);
        Assert.False(output.Schema["Blocks"].TryGetDocumentIdsColumn(out _));
    }

    [Fact]
    public void BestFitKeepsMasksAndDocumentBoundaries()
    {
        var ml = new MLContext(seed: 1);
        var data = Conversations(ml);
        var output = ml.Transforms.Text.PackTokens("Blocks", "Tokens", Options(PackingMode.BestFit, 7)).Fit(data).Transform(data);
        Assert.Equal([[1, 2, 3, 0, 4, 5, 0, 9]], ReadTokens(output, "Blocks"));
        Assert.Equal([[0, 0, 0, 0, 1, 1, 1, -1]], ReadTokens(output, "DocumentIds"));
        Assert.Equal([[false, true, true, true, false, true, true, false]], ReadMask(output, "LossMask"));
        Assert.True(output.Schema["Blocks"].TryGetDocumentIdsColumn(out var ids));
        Assert.Equal("DocumentIds", ids);
        Assert.True(output.Schema["Blocks"].TryGetLossMaskColumn(out var mask));
        Assert.Equal("LossMask", mask);
    }

    [Fact]
    public void ConcatenateCarriesTheMaskAlongTheStream()
    {
        var ml = new MLContext(seed: 1);
        var data = Conversations(ml);
        var packer = ml.Transforms.Text.PackTokens("Blocks", "Tokens", Options(PackingMode.Concatenate, 3, padLast: true));
        var model = packer.Fit(data);
        var output = model.Transform(data);
        Assert.Equal([[1, 2, 3, 0], [4, 5, 0, 9]], ReadTokens(output, "Blocks"));
        Assert.Equal([[false, true, true, true], [false, true, true, false]], ReadMask(output, "LossMask"));
        Assert.Equal(7, model.LastPassStatistics!.InputTokens);   // 3 + separator, 3 (already ends with end-of-text)
    }

    [Fact]
    public void TheInputMaskSurvivesSaveAndLoad()
    {
        var ml = new MLContext(seed: 1);
        var data = Conversations(ml);
        var model = ml.Transforms.Text.PackTokens("Blocks", "Tokens", Options(PackingMode.Padded, 4)).Fit(data);
        using var stream = new MemoryStream();
        ml.Model.Save(model, data.Schema, stream);
        stream.Position = 0;
        var loaded = (TokenPackerTransformer)ml.Model.Load(stream, out _);
        Assert.Equal("Mask", loaded.InputLossMaskColumnName);
        Assert.Equal(ReadMask(model.Transform(data), "LossMask"), ReadMask(loaded.Transform(data), "LossMask"));
    }

    [Fact]
    public void BadMaskColumnsAreReported()
    {
        var ml = new MLContext(seed: 1);
        var data = Conversations(ml);
        var missing = Options(PackingMode.Padded, 4);
        missing.InputLossMaskColumnName = "Nope";
        Assert.Contains("Could not find input column 'Nope'",
            Assert.ThrowsAny<ArgumentException>(() => ml.Transforms.Text.PackTokens("Blocks", "Tokens", missing).Fit(data)).Message);
        var wrongType = Options(PackingMode.Padded, 4);
        wrongType.InputLossMaskColumnName = "Tokens";
        Assert.Contains("Schema mismatch for input column 'Tokens': expected Vector<Boolean>",
            Assert.ThrowsAny<ArgumentException>(() => ml.Transforms.Text.PackTokens("Blocks", "Tokens", wrongType).Fit(data)).Message);

        var ragged = ml.Data.LoadFromEnumerable(new[] { new MaskedRow { Tokens = [1, 2, 3], Mask = [true, true] } });
        var output = ml.Transforms.Text.PackTokens("Blocks", "Tokens", Options(PackingMode.Padded, 4)).Fit(ragged).Transform(ragged);
        Assert.Equal("Row 0 of the input to PackTokens has 2 values in loss-mask column 'Mask' but 3 tokens; the mask needs one value per token.",
            Assert.Throws<InvalidOperationException>(() => ReadTokens(output, "Blocks")).Message);
    }
}
