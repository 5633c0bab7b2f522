using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Model;

/// <summary>The linear layers and the token embedding add their weight gradients straight into <c>.grad</c>
/// (<see cref="AccumulatingLinear"/>, <see cref="AccumulatingEmbedding"/>): the gradients must be autograd's.</summary>
[Collection("Torch")]
public class GradientAccumulationTests
{
    /// <summary>Two forward/backward passes (so the second accumulates onto the first) with the accumulating functions and
    /// with autograd's own ops; every parameter's gradient agrees.</summary>
    [Theory]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Fp32, 1e-5)]
    [InlineData(GptStyle.Modern, TrainingPrecision.Fp32, 1e-5)]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Bf16Mixed, 2e-3)]
    [InlineData(GptStyle.Modern, TrainingPrecision.Bf16Mixed, 2e-3)]
    public void GradientsEqualAutogradsAndAccumulate(GptStyle style, TrainingPrecision precision, double tolerance)
    {
        using var scope = NewDisposeScope();
        var fused = Gradients(style, precision, fusedAccumulation: true);
        var reference = Gradients(style, precision, fusedAccumulation: false);
        Assert.Equal(reference.Keys.Order(), fused.Keys.Order());
        foreach (var (name, g) in reference)
        {
            double scale = Math.Max(1.0, g.abs().max().item<float>());
            double difference = (fused[name] - g).abs().max().item<float>();
            Assert.True(difference <= tolerance * scale, $"{name}: max |difference| {difference} > {tolerance * scale}");
        }
    }

    [Fact]
    public void FrozenWeightsGetNoGradientAndInferenceUsesAutogradsOps()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(3);
        var weight = nn.Parameter(randn(4, 3), requires_grad: false);
        var x = randn(2, 3).requires_grad_(true);
        Autocast.Linear(x, weight).sum().backward();
        Assert.Null(weight.grad);
        Assert.NotNull(x.grad);

        var trained = nn.Parameter(randn(4, 3));
        using (no_grad())
        {
            Assert.False(Autocast.Linear(randn(2, 3), trained).requires_grad);   // no graph, no custom function
        }

        Assert.False(AccumulatingLinear.Applies(weight));
        Assert.True(AccumulatingLinear.Applies(trained));
    }

    [Fact]
    public void GradientsAddIntoAnExistingBufferInPlace()
    {
        using var scope = NewDisposeScope();
        torch.manual_seed(4);
        var weight = nn.Parameter(randn(5, 3));
        var buffer = ones(5, 3);
        weight.grad = buffer;
        var x = randn(7, 3);
        Autocast.Linear(x, weight).sum().backward();

        // d/dW Σ x·Wᵀ = 1ᵀ·x for every row of W; added onto the ones already there, in the same storage.
        var expected = ones(5, 3) + x.sum([0]).unsqueeze(0).expand(5, 3);
        Assert.True((buffer - expected).abs().max().item<float>() < 1e-5);
        buffer.add_(1);                                                   // the same storage: .grad sees the change
        Assert.True((weight.grad! - buffer).abs().max().item<float>() == 0);
    }

    private static Dictionary<string, Tensor> Gradients(GptStyle style, TrainingPrecision precision, bool fusedAccumulation)
    {
        torch.manual_seed(11);
        var model = new GptModel(GptConfig.Tiny(50) with { Style = style });
        model.train();
        var generator = new torch.Generator(12);
        var idx = randint(0, 50, [3, 16], dtype: ScalarType.Int64, generator: generator);
        GradientBuffers.Fused = fusedAccumulation;
        try
        {
            for (int pass = 0; pass < 2; pass++)
            {
                using (Autocast.Enable(precision))
                {
                    var logits = model.forward(idx[.., ..15]);
                    nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), idx[.., 1..].reshape(-1)).backward();
                }
            }
        }
        finally
        {
            GradientBuffers.Fused = true;
        }

        return model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
    }
}
