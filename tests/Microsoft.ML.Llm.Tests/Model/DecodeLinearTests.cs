using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Model;

[Collection("Torch")]
public class DecodeLinearTests
{
    private static (Tensor X, Tensor W, Tensor B) Inputs(long[] xShape, long N, long K, int seed)
    {
        var g = new torch.Generator((ulong)seed);
        return (randn(xShape, generator: g), randn([N, K], generator: g) * 0.1, randn([N], generator: g));
    }

    [Theory]
    [InlineData(1, 384, 128)]    // one decoding row, the Shakespeare model's q/k/v
    [InlineData(8, 128, 512)]    // eight rows, its MLP's output
    [InlineData(3, 5, 8)]        // an odd row (the one-row tail) and a last block of one feature
    [InlineData(6, 65, 136)]     // a four-row block then a pair; 65 features (a three-feature tail)
    [InlineData(32, 7, 40)]      // the most rows taken
    [InlineData(2, 1, 16)]       // a single output feature
    public void MatchesLibtorch(long M, long N, long K)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, w, b) = Inputs([M, K], N, K, seed: (int)(M * 1000 + N));
        foreach (var bias in new[] { b, null })
        {
            var y = DecodeLinear.TryLinear(x, w, bias);
            Assert.NotNull(y);
            var expected = nn.functional.linear(x, w, bias);
            Assert.Equal(expected.shape, y.shape);
            Assert.True(y.allclose(expected, rtol: 1e-5, atol: 1e-5), $"max difference {(y - expected).abs().max().item<float>()}");
        }
    }

    [Fact]
    public void KeepsLeadingDimensions()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, w, b) = Inputs([4, 1, 24], 10, 24, seed: 2);                               // (B, T, C) of a decoding step
        var y = DecodeLinear.TryLinear(x, w, b);
        Assert.NotNull(y);
        Assert.Equal(new long[] { 4, 1, 10 }, y.shape);
        Assert.True(y.allclose(nn.functional.linear(x, w, b), rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void ARowOfABatchEqualsThatRowAlone()
    {
        // Every row is summed in the same order, whichever block form (four rows, two, one) computed it: bit for bit.
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, w, b) = Inputs([7, 128], 131, 128, seed: 3);
        var batch = DecodeLinear.TryLinear(x, w, b)!;
        for (int r = 0; r < 7; r++)
        {
            var alone = DecodeLinear.TryLinear(x[r..(r + 1)], w, b)!;
            Assert.True(alone[0].allclose(batch[r], rtol: 0, atol: 0), $"row {r} differs by {(alone[0] - batch[r]).abs().max().item<float>()}");
        }
    }

    [Fact]
    public void SeveralThreadsGiveTheSameBits()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (x, w, b) = Inputs([8, 512], 1030, 512, seed: 4);                               // 4.2M multiply-adds: split
        Assert.True(8L * 1030 * 512 >= DecodeLinear.ParallelThreshold);
        int threads = get_num_threads();
        try
        {
            set_num_threads(1);
            var one = DecodeLinear.TryLinear(x, w, b)!;
            set_num_threads(3);
            var three = DecodeLinear.TryLinear(x, w, b)!;
            Assert.True(one.allclose(three, rtol: 0, atol: 0));
            Assert.True(one.allclose(nn.functional.linear(x, w, b), rtol: 1e-5, atol: 1e-4));
        }
        finally
        {
            set_num_threads(threads);
        }
    }

    [Fact]
    public void DeclinesWhatItDoesNotCover()
    {
        using var scope = NewDisposeScope();
        var (x, w, b) = Inputs([4, 16], 6, 16, seed: 5);
        using (no_grad())
        {
            Assert.Null(DecodeLinear.TryLinear(x.to(ScalarType.BFloat16), w.to(ScalarType.BFloat16), null));
            Assert.Null(DecodeLinear.TryLinear(randn(DecodeLinear.MaxRows + 1, 16), w, b));     // a prefill's rows: MKL
            Assert.Null(DecodeLinear.TryLinear(randn(4, 12), randn(6, 12), null));              // K not a multiple of 8
            Assert.Null(DecodeLinear.TryLinear(randn(16, 4).t(), w, b));                        // x not contiguous
            Assert.Null(DecodeLinear.TryLinear(x, randn(16, 6).t(), null));                     // weight not contiguous
            Assert.Null(DecodeLinear.TryLinear(x, w, randn(7)));                                // bias of another length
            Assert.Null(DecodeLinear.TryLinear(x, randn(16), null));                            // a weight that is not (N, K)
        }

        // With gradients to record, autograd must see libtorch's op; without any input needing one, the loop is fine.
        var trained = w.clone().requires_grad_(true);
        Assert.Null(DecodeLinear.TryLinear(x, trained, b));
        Assert.NotNull(DecodeLinear.TryLinear(x, w, b));
    }

    [Fact]
    public void GenerationAgreesWithLibtorchsLinear()
    {
        // The Shakespeare-shaped model, 8 prompts batched and one alone, greedy: the same tokens on either path, and the
        // logits of a decoding step within float rounding.
        torch.manual_seed(7);
        using var model = new GptModel(GptConfig.ShakespeareChar(65) with { LayerCount = 2 });
        model.eval();
        var generator = new TextGenerator(model, LmTokenizer.Bytes());
        var random = new Random(7);
        var prompts = Enumerable.Range(0, 8).Select(_ => Enumerable.Range(0, 5 + random.Next(20)).Select(_ => random.Next(65)).ToArray()).ToArray();
        var options = new GenerationOptions { DoSample = false, MaxNewTokens = 24 };
        var kernel = generator.GenerateTokens(prompts, options);
        var single = generator.GenerateTokens(prompts[3], options);
        Tensor stepKernel, stepLibtorch;
        using (var scope = NewDisposeScope())
        {
            stepKernel = Step(model).MoveToOuterDisposeScope();
        }

        try
        {
            DecodeLinear.Enabled = false;
            var libtorch = generator.GenerateTokens(prompts, options);
            Assert.Equal(libtorch, kernel);
            using var scope = NewDisposeScope();
            stepLibtorch = Step(model).MoveToOuterDisposeScope();
        }
        finally
        {
            DecodeLinear.Enabled = true;
        }

        Assert.Equal(kernel[3], single);
        Assert.True(stepKernel.allclose(stepLibtorch, rtol: 1e-4, atol: 1e-4), $"max difference {(stepKernel - stepLibtorch).abs().max().item<float>()}");
        stepKernel.Dispose();
        stepLibtorch.Dispose();

        static Tensor Step(GptModel model)
        {
            using var cache = new KvCache(model);
            model.forward(arange(0, 24, dtype: ScalarType.Int64).view(3, 8), cache);
            return model.forward(tensor(new long[] { 1, 2, 3 }).view(3, 1), cache);        // (3, 1, V)
        }
    }
    [Fact]
    public void DecodingStepsRunLibtorchOnOneThreadAndRestoreIt()
    {
        int threads = get_num_threads();
        try
        {
            set_num_threads(2);
            using (var first = DecodeThreads.Serial())
            {
                Assert.Equal(1, get_num_threads());
                Assert.Equal(2, DecodeThreads.Count);                 // the kernels still split over two
                using (var second = DecodeThreads.Serial())          // another step in flight
                    Assert.Equal(1, get_num_threads());
                Assert.Equal(1, get_num_threads());                   // the first still holds it
            }

            Assert.Equal(2, get_num_threads());
            Assert.Equal(2, DecodeThreads.Count);

            // Generation on two threads gives the tokens it gives on one.
            torch.manual_seed(3);
            using var model = new GptModel(GptConfig.ShakespeareChar(65) with { LayerCount = 2 });
            model.eval();
            var generator = new TextGenerator(model, LmTokenizer.Bytes());
            var prompts = new[] { new[] { 1, 2, 3, 4 }, new[] { 5, 6 }, new[] { 7, 8, 9 } };
            var options = new GenerationOptions { DoSample = false, MaxNewTokens = 12 };
            var two = generator.GenerateTokens(prompts, options);
            Assert.Equal(2, get_num_threads());
            set_num_threads(1);
            Assert.Equal(generator.GenerateTokens(prompts, options), two);
            set_num_threads(1);
            Assert.Null(DecodeThreads.Serial());                        // one thread: nothing to switch
        }
        finally
        {
            set_num_threads(threads);
        }
    }
}
