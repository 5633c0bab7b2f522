using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests;

/// <summary>
/// TorchSharp must initialise on a fresh Debian 12 machine with no manual step (docs/ARCHITECTURE.md §3): the build marks
/// libLibTorchSharp.so's GLIBCXX_3.4.32 requirement weak where the system libstdc++ lacks it.
/// </summary>
[Collection("Torch")]
public class TorchRuntimeTests
{
    [Fact]
    public void TorchInitialisesAndComputesAMatmul()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4 }, 2, 2);
        var b = tensor(new float[] { 5, 6, 7, 8 }, 2, 2);
        var c = a.matmul(b);
        Assert.Equal(new float[] { 19, 22, 43, 50 }, c.data<float>().ToArray());
        Assert.StartsWith("2.", torch.__version__);
    }

    [Fact]
    public void Bf16AndScaledDotProductAttentionAreAvailable()
    {
        using var scope = NewDisposeScope();
        var q = ones(1, 1, 3, 4, dtype: ScalarType.BFloat16);
        var y = nn.functional.scaled_dot_product_attention(q, q, q, is_casual: true);
        Assert.Equal(new long[] { 1, 1, 3, 4 }, y.shape);
        Assert.Equal(ScalarType.BFloat16, y.dtype);
        Assert.Equal(1.0f, y.to(ScalarType.Float32).mean().item<float>(), 3);
    }
}
