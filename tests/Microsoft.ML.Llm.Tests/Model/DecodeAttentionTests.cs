using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Model;

[Collection("Torch")]
public class DecodeAttentionTests
{
    // Keys and values as the KV cache hands them over: the first Tk positions of (B, nkv, capacity, hs) buffers, so the
    // rows and heads are strided, not packed.
    private static (Tensor Q, Tensor K, Tensor V) Inputs(long B, long nh, long nkv, long Tk, long hs, int seed)
    {
        var g = new torch.Generator((ulong)seed);
        var q = randn([B, nh, 1, hs], generator: g);
        var k = randn([B, nkv, Tk + 9, hs], generator: g).narrow(2, 0, Tk);
        var v = randn([B, nkv, Tk + 9, hs], generator: g).narrow(2, 0, Tk);
        return (q, k, v);
    }

    [Theory]
    [InlineData(1, 4, 4, 1, 32)]     // the first generated token after a one-token prompt
    [InlineData(3, 4, 4, 37, 32)]    // Shakespeare's heads, an odd number of keys (the 4-key loop's tail)
    [InlineData(2, 12, 12, 70, 64)]  // GPT-2's heads
    [InlineData(2, 6, 2, 21, 40)]    // grouped-query attention; 40 channels: one 32-wide block and one 8-wide
    [InlineData(2, 2, 1, 5, 8)]
    public void MatchesTheFusedKernel(long B, long nh, long nkv, long Tk, long hs)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (q, k, v) = Inputs(B, nh, nkv, Tk, hs, seed: (int)(B * 1000 + Tk));
        var y = DecodeAttention.TryAttend(q, k, v, mask: null);
        Assert.NotNull(y);
        var expected = nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(nh / nkv, dim: 1), v.repeat_interleave(nh / nkv, dim: 1));
        Assert.Equal(expected.shape, y.shape);
        Assert.True(y.allclose(expected, rtol: 0, atol: 1e-5), $"max difference {(y - expected).abs().max().item<float>()}");
    }

    [Fact]
    public void HiddenKeysGetNoWeight()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (q, k, v) = Inputs(3, 4, 4, 11, 16, seed: 5);
        // Row 0 sees every key, row 1 all but its first three (left padding), row 2 only its last key.
        var visible = ones([3, 1, 1, 11], dtype: ScalarType.Bool);
        visible[1, 0, 0, ..3] = tensor(false);
        visible[2, 0, 0, ..10] = tensor(false);
        var y = DecodeAttention.TryAttend(q, k, v, visible);
        Assert.NotNull(y);
        var expected = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: visible);
        Assert.True(y.allclose(expected, rtol: 0, atol: 1e-5), $"max difference {(y - expected).abs().max().item<float>()}");
        // A row that sees one key returns that key's value exactly.
        Assert.True(y[2, .., 0].allclose(v[2, .., 10], rtol: 0, atol: 1e-6));
        // Garbage behind a hidden key changes nothing.
        k[1, .., 0].fill_(1e4f);
        v[1, .., 0].fill_(-1e4f);
        Assert.True(DecodeAttention.TryAttend(q, k, v, visible)!.allclose(y, rtol: 0, atol: 0));
    }

    [Fact]
    public void DeclinesWhatItDoesNotCover()
    {
        using var scope = NewDisposeScope();
        var (q, k, v) = Inputs(2, 4, 4, 9, 16, seed: 3);
        using (no_grad())
        {
            Assert.Null(DecodeAttention.TryAttend(q.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), v.to(ScalarType.BFloat16), null));
            Assert.Null(DecodeAttention.TryAttend(cat([q, q], dim: 2), k, v, null));           // two query positions
            var (q12, k12, v12) = Inputs(2, 4, 4, 9, 12, seed: 4);
            Assert.Null(DecodeAttention.TryAttend(q12, k12, v12, null));                      // head size not a multiple of 8
            Assert.Null(DecodeAttention.TryAttend(q, k, v, ones([2, 9], dtype: ScalarType.Bool)));   // another mask shape
            Assert.Null(DecodeAttention.TryAttend(q, k, v, zeros([2, 1, 1, 9])));              // an additive (float) mask
        }

        // With gradients on, autograd must see the fused kernel.
        Assert.Null(DecodeAttention.TryAttend(q, k, v, null));
    }

    [Fact]
    public void BatchedDecodingEqualsOneRowAtATime()
    {
        // Rows of one batch go through the kernel together; each must get what it gets alone.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (q, k, v) = Inputs(4, 4, 4, 23, 32, seed: 9);
        var batched = DecodeAttention.TryAttend(q, k, v, null)!;
        for (int r = 0; r < 4; r++)
        {
            var alone = DecodeAttention.TryAttend(q[r..(r + 1)], k[r..(r + 1)], v[r..(r + 1)], null)!;
            Assert.True(alone.allclose(batched[r..(r + 1)], rtol: 0, atol: 0));
        }
    }
}
