using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Model;

[Collection("Torch")]
public class KvCacheTests
{
    private static GptModel NewModel(GptStyle style)
    {
        torch.manual_seed(99);
        var model = new GptModel(GptConfig.Tiny(50) with { Style = style });
        model.eval();
        return model;
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void IncrementalDecodingGivesTheFullForwardLogits(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(style);
        var idx = randint(0, 50, [2, 16], dtype: ScalarType.Int64, generator: new torch.Generator(1));
        var full = model.forward(idx);

        // A prompt of 5, a chunk of 4, then one token at a time up to the full context.
        using var cache = new KvCache(model);
        var pieces = new List<Tensor> { model.forward(idx[.., ..5], cache) };
        Assert.Equal(5, cache.Length);
        pieces.Add(model.forward(idx[.., 5..9], cache));
        for (int t = 9; t < 16; t++)
        {
            pieces.Add(model.forward(idx[.., t..(t + 1)], cache));
        }

        Assert.Equal(16, cache.Length);
        var incremental = cat(pieces, dim: 1);
        Assert.Equal(full.shape, incremental.shape);
        Assert.True(incremental.allclose(full, rtol: 0, atol: 1e-5));
        Assert.False(incremental.requires_grad);

        // Reset starts a new sequence in the same buffers.
        cache.Reset();
        Assert.True(model.forward(idx[.., ..3], cache).allclose(full[.., ..3], rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void TheCacheOutlivesTheDisposeScopeThatFilledIt()
    {
        using var model = NewModel(GptStyle.Gpt2);
        using var cache = new KvCache(model);
        var idx = randint(0, 50, [1, 8], dtype: ScalarType.Int64, generator: new torch.Generator(2));
        Tensor expected;
        using (var scope = NewDisposeScope())
        {
            expected = model.forward(idx)[.., 7].MoveToOuterDisposeScope();
            model.forward(idx[.., ..7], cache);
        }

        using (var scope = NewDisposeScope())
        {
            Assert.True(model.forward(idx[.., 7..8], cache)[.., 0].allclose(expected, rtol: 0, atol: 1e-5));
        }

        expected.Dispose();
        idx.Dispose();
    }

    [Fact]
    public void MisuseIsRejectedWithClearMessages()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptStyle.Gpt2);
        using var cache = new KvCache(model);
        model.forward(zeros(1, 10, dtype: ScalarType.Int64), cache);

        var ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(1, 7, dtype: ScalarType.Int64), cache));
        Assert.Equal("The KV cache holds 10 positions and 7 more would exceed the context length 16; call Reset() and run the last tokens again. (Parameter 'cache')", ex.Message);
        Assert.Equal(10, cache.Length);

        ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(2, 1, dtype: ScalarType.Int64), cache));
        Assert.Equal("The KV cache holds a batch of 1 sequences, got 2; create another cache for another batch size. (Parameter 'cache')", ex.Message);

        using var other = NewModel(GptStyle.Modern);
        ex = Assert.Throws<ArgumentException>(() => other.forward(zeros(1, 1, dtype: ScalarType.Int64), cache));
        Assert.Equal("The KV cache was made for a model with another configuration; create one with new KvCache(model). (Parameter 'cache')", ex.Message);

        cache.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.forward(zeros(1, 1, dtype: ScalarType.Int64), cache));
    }
}

[Collection("Torch")]
public class GroupedQueryAttentionTests
{
    [Fact]
    public void GqaWithAnUntiedHeadDecodesIncrementallyAsTheFullForward()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(7);
        using var model = new GptModel(GptConfig.Tiny(50) with { Style = GptStyle.Modern, HeadCount = 4, KeyValueHeadCount = 2, TiedEmbeddings = false });
        model.eval();
        // k/v projections are 2 heads of 8 channels: c_attn maps 32 → 32 + 2·16, and lm_head is its own (64, 32) weight.
        var state = model.state_dict();
        Assert.Equal(new long[] { 64, 32 }, state["h.0.attn.c_attn.weight"].shape);
        Assert.Equal(new long[] { 64, 32 }, state["lm_head.weight"].shape);
        var idx = randint(0, 50, [2, 12], dtype: ScalarType.Int64, generator: new torch.Generator(3));
        var full = model.forward(idx);
        using var cache = new KvCache(model);
        var pieces = new List<Tensor> { model.forward(idx[.., ..4], cache) };
        for (int t = 4; t < 12; t++)
            pieces.Add(model.forward(idx[.., t..(t + 1)], cache));
        Assert.True(cat(pieces, dim: 1).allclose(full, rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void NewConfigFieldsRoundTripAndAreValidated()
    {
        var config = GptConfig.Tiny(50) with { Style = GptStyle.Modern, HeadCount = 4, KeyValueHeadCount = 2, TiedEmbeddings = false, NormEpsilon = 1e-6 };
        using var stream = new MemoryStream();
        config.Save(new BinaryWriter(stream));
        stream.Position = 0;
        Assert.Equal(config, GptConfig.Load(new BinaryReader(stream)));
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => (GptConfig.Tiny(50) with { KeyValueHeadCount = 3 }).Validate());
        Assert.Equal("GptConfig.KeyValueHeadCount is 3; expected a divisor of HeadCount (2) from 1 to 2, or null for one key/value head per query head. (Parameter 'KeyValueHeadCount')", ex.Message);
        var eps = Assert.Throws<ArgumentOutOfRangeException>(() => (GptConfig.Tiny(50) with { NormEpsilon = 0 }).Validate());
        Assert.Equal("GptConfig.NormEpsilon is 0; expected a number in (0, 1). (Parameter 'NormEpsilon')", eps.Message);
    }
}
