namespace Microsoft.ML.Llm.Tests.Model;

public class GptConfigTests
{
    [Fact]
    public void DerivedSizesAreComputedFromThePrimaryOnes()
    {
        var gpt2 = GptConfig.Gpt2Small();
        Assert.Equal(64, gpt2.HeadSize);                 // 768 / 12
        Assert.Equal(50304, gpt2.PaddedVocabularySize);  // nanoGPT: 50257 → 50304 = 786·64
        Assert.Equal(3072, gpt2.IntermediateSize);       // 4·768
        Assert.True(gpt2.UseBias);

        var modern = GptConfig.ModernSmall(50257);
        Assert.Equal(2048, modern.IntermediateSize);     // 8/3·768 = 2048 exactly
        Assert.False(modern.UseBias);
        Assert.Equal(384, (GptConfig.ShakespeareChar(65) with { Style = GptStyle.Modern }).IntermediateSize); // 341.3 → 384
        Assert.Equal(100, (modern with { MlpHiddenSize = 100 }).IntermediateSize);

        Assert.Equal(128, GptConfig.ShakespeareChar(65).PaddedVocabularySize);
        Assert.Equal(64, GptConfig.Tiny(64).PaddedVocabularySize);
        Assert.Equal(128, GptConfig.Tiny(65).PaddedVocabularySize);
        Assert.Equal(64, GptConfig.Tiny(1).PaddedVocabularySize);
    }

    [Fact]
    public void PresetsMatchTheirSources()
    {
        var shakespeare = GptConfig.ShakespeareChar(65);
        Assert.Equal((65, 64, 4, 4, 128, GptStyle.Gpt2, 0.0),
            (shakespeare.VocabularySize, shakespeare.ContextLength, shakespeare.LayerCount, shakespeare.HeadCount, shakespeare.EmbeddingSize, shakespeare.Style, shakespeare.Dropout));
        var gpt2 = GptConfig.Gpt2Small();
        Assert.Equal((50257, 1024, 12, 12, 768), (gpt2.VocabularySize, gpt2.ContextLength, gpt2.LayerCount, gpt2.HeadCount, gpt2.EmbeddingSize));
        var tiny = GptConfig.Tiny(10);
        Assert.Equal((10, 16, 2, 2, 32), (tiny.VocabularySize, tiny.ContextLength, tiny.LayerCount, tiny.HeadCount, tiny.EmbeddingSize));
        Assert.Equal(GptStyle.Modern, GptConfig.ModernSmall(100, 256).Style);
        Assert.Equal(256, GptConfig.ModernSmall(100, 256).ContextLength);
        Assert.Equal(10000, tiny.RopeTheta);
        foreach (var config in new[] { shakespeare, gpt2, tiny, GptConfig.ModernSmall(100) })
        {
            config.Validate();
        }
    }

    [Fact]
    public void AnUnsetVocabularySizeIsNullValidAndRejectedByTheModel()
    {
        // The presets leave the vocabulary size to the trainer, which takes it from the tokenizer.
        Assert.All(new[] { GptConfig.ShakespeareChar(), GptConfig.Tiny(), GptConfig.ModernSmall() }, c => Assert.Null(c.VocabularySize));
        GptConfig.ShakespeareChar().Validate();
        var ex = Assert.Throws<ArgumentException>(() => new GptModel(GptConfig.Tiny()));
        Assert.Equal("GptConfig.VocabularySize is null; a model needs it set (for example GptConfig.Tiny(65)). CausalLmTrainer sets it from the tokenizer. (Parameter 'config')", ex.Message);
        var negative = Assert.Throws<ArgumentOutOfRangeException>(() => GptConfig.Tiny(-3).Validate());
        Assert.Equal("GptConfig.VocabularySize is -3; expected an integer from 1 to 67108864, or null to take the tokenizer's vocabulary size. (Parameter 'VocabularySize')", negative.Message);
    }

    public static TheoryData<GptConfig, string> OutOfRangeValues()
    {
        var ok = GptConfig.Tiny(65);
        return new()
        {
            { ok with { VocabularySize = 0 }, "GptConfig.VocabularySize is 0; expected an integer from 1 to 67108864, or null to take the tokenizer's vocabulary size. (Parameter 'VocabularySize')" },
            { ok with { VocabularySize = int.MaxValue }, "GptConfig.VocabularySize is 2147483647; expected an integer from 1 to 67108864, or null to take the tokenizer's vocabulary size. (Parameter 'VocabularySize')" },
            { ok with { ContextLength = -1 }, "GptConfig.ContextLength is -1; expected an integer from 1 to 67108864. (Parameter 'ContextLength')" },
            { ok with { LayerCount = 0 }, "GptConfig.LayerCount is 0; expected an integer from 1 to 67108864. (Parameter 'LayerCount')" },
            { ok with { HeadCount = 0 }, "GptConfig.HeadCount is 0; expected an integer from 1 to 67108864. (Parameter 'HeadCount')" },
            { ok with { EmbeddingSize = -32 }, "GptConfig.EmbeddingSize is -32; expected an integer from 1 to 67108864. (Parameter 'EmbeddingSize')" },
            { ok with { MlpHiddenSize = 0 }, "GptConfig.MlpHiddenSize is 0; expected an integer from 1 to 67108864. (Parameter 'MlpHiddenSize')" },
            { ok with { VocabularyPaddingMultiple = 0 }, "GptConfig.VocabularyPaddingMultiple is 0; expected an integer from 1 to 65536. (Parameter 'VocabularyPaddingMultiple')" },
            { ok with { Style = (GptStyle)7 }, "GptConfig.Style is 7; expected Gpt2 or Modern. (Parameter 'Style')" },
            { ok with { Dropout = -0.1 }, "GptConfig.Dropout is -0.1; expected a probability in [0, 1). (Parameter 'Dropout')" },
            { ok with { Dropout = 1 }, "GptConfig.Dropout is 1; expected a probability in [0, 1). (Parameter 'Dropout')" },
            { ok with { Dropout = double.NaN }, "GptConfig.Dropout is NaN; expected a probability in [0, 1). (Parameter 'Dropout')" },
            { ok with { RopeTheta = 0 }, "GptConfig.RopeTheta is 0; expected a positive finite number. (Parameter 'RopeTheta')" },
            { ok with { RopeTheta = double.NaN }, "GptConfig.RopeTheta is NaN; expected a positive finite number. (Parameter 'RopeTheta')" },
            { ok with { RopeTheta = double.PositiveInfinity }, "GptConfig.RopeTheta is Infinity; expected a positive finite number. (Parameter 'RopeTheta')" },
        };
    }

    [Theory]
    [MemberData(nameof(OutOfRangeValues))]
    public void ValidateRejectsOutOfRangeValuesNamingPropertyValueAndRange(GptConfig config, string message)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(config.Validate);
        Assert.Equal(message, ex.Message);
    }

    [Fact]
    public void ValidateRejectsInconsistentSizes()
    {
        var ex = Assert.Throws<ArgumentException>(() => (GptConfig.Tiny(65) with { HeadCount = 3 }).Validate());
        Assert.Equal("GptConfig.EmbeddingSize is 32; expected a multiple of HeadCount (3) so that every head has the same size. (Parameter 'EmbeddingSize')", ex.Message);
        Assert.Equal("EmbeddingSize", ex.ParamName);

        // 36 / 4 = 9: fine for learned positions, but RoPE needs channel pairs.
        (GptConfig.Tiny(65) with { EmbeddingSize = 36, HeadCount = 4 }).Validate();
        ex = Assert.Throws<ArgumentException>(() => (GptConfig.Tiny(65) with { EmbeddingSize = 36, HeadCount = 4, Style = GptStyle.Modern }).Validate());
        Assert.Equal("GptConfig.EmbeddingSize / HeadCount is 9; the Modern style's rotary embedding rotates pairs of channels and needs an even head size. (Parameter 'EmbeddingSize')", ex.Message);
    }

    [Fact]
    public void SaveAndLoadRoundTripExactly()
    {
        var configs = new[]
        {
            GptConfig.Gpt2Small(),
            GptConfig.ModernSmall(32000, 2048) with { RopeTheta = 500000, MlpHiddenSize = 1000, Dropout = 0.1 },
            GptConfig.Tiny(7, 3) with { Dropout = 0.123456789 },
            GptConfig.ShakespeareChar(65) with { Bias = false, VocabularyPaddingMultiple = 1 },
            GptConfig.Tiny(7, 3) with { Style = GptStyle.Modern, Bias = true },
            GptConfig.ShakespeareChar(),   // vocabulary size not chosen yet (null)
        };
        foreach (var config in configs)
        {
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
            {
                config.Save(writer);
            }

            stream.Position = 0;
            using var reader = new BinaryReader(stream);
            var loaded = GptConfig.Load(reader);
            Assert.Equal(config, loaded);
            Assert.Equal(stream.Length, stream.Position);
        }
    }

    [Fact]
    public void LoadRejectsAnUnknownVersionAndInvalidContent()
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(99);
        }

        stream.Position = 0;
        var ex = Assert.Throws<InvalidDataException>(() => GptConfig.Load(new BinaryReader(stream)));
        Assert.Equal("GptConfig was saved in format version 99; this version of Microsoft.ML.Llm reads versions 1 to 4.", ex.Message);

        using var bad = new MemoryStream();
        using (var writer = new BinaryWriter(bad, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            (GptConfig.Tiny(65) with { LayerCount = 0 }).Save(writer);
        }

        bad.Position = 0;
        var rangeEx = Assert.Throws<ArgumentOutOfRangeException>(() => GptConfig.Load(new BinaryReader(bad)));
        Assert.Equal("LayerCount", rangeEx.ParamName);

        var gelu = Assert.Throws<ArgumentOutOfRangeException>(() => (GptConfig.Tiny(65) with { GeluApproximation = (GeluApproximation)7 }).Validate());
        Assert.StartsWith("GptConfig.GeluApproximation is 7; expected Tanh or None.", gelu.Message);
    }

    [Fact]
    public void AVersion3FileLoadsWithGpt2sTanhGeluAndShakespeareCharUsesNanoGptsExactGelu()
    {
        Assert.Equal(GeluApproximation.None, GptConfig.ShakespeareChar().GeluApproximation);
        Assert.Equal(GeluApproximation.Tanh, GptConfig.Gpt2Small().GeluApproximation);

        // A version-3 file is a version-4 file without the last int32 (the GELU) and with 3 in front.
        var config = GptConfig.ShakespeareChar(65);
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            config.Save(writer);
        }

        byte[] v3 = stream.ToArray()[..^4];
        BitConverter.GetBytes(3).CopyTo(v3, 0);
        var loaded = GptConfig.Load(new BinaryReader(new MemoryStream(v3)));
        Assert.Equal(config with { GeluApproximation = GeluApproximation.Tanh }, loaded);
    }
}
