using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Generation;

[Collection("Torch")]
public class TokenSamplingTests
{
    // Probabilities 0.5, 0.3, 0.15, 0.05 as logits.
    private static Tensor FourTokens() => tensor(new[] { MathF.Log(0.5f), MathF.Log(0.3f), MathF.Log(0.15f), MathF.Log(0.05f) });

    private static int[] Histogram(Tensor logits, GenerationOptions options, int draws, long seed)
    {
        var counts = new int[logits.shape[0]];
        var generator = new torch.Generator((ulong)seed);
        for (int i = 0; i < draws; i++)
        {
            counts[TokenSampling.NextToken(logits, [], options, generator)]++;
        }

        return counts;
    }

    [Fact]
    public void GreedyIsTheArgmax()
    {
        using var scope = NewDisposeScope();
        var greedy = new GenerationOptions { DoSample = false };
        Assert.Equal(1, TokenSampling.NextToken(tensor(new[] { 0.1f, 2.0f, -1f, 2.0f }), [], greedy, null)); // first of the ties
        var generator = new torch.Generator(1);
        for (int row = 0; row < 20; row++)
        {
            var logits = randn(1000, generator: generator);
            Assert.Equal(logits.argmax().item<long>(), TokenSampling.NextToken(logits, [], greedy, null));
        }
    }

    [Fact]
    public void TopKOfOneAndATinyTopPAreGreedy()
    {
        using var scope = NewDisposeScope();
        var generator = new torch.Generator(2);
        var topK1 = new GenerationOptions { TopK = 1, Temperature = 5f };
        var tinyTopP = new GenerationOptions { TopP = 1e-6f, Temperature = 5f };
        for (int row = 0; row < 20; row++)
        {
            var logits = randn(500, generator: generator);
            int argmax = (int)logits.argmax().item<long>();
            Assert.Equal(argmax, TokenSampling.NextToken(logits, [], topK1, generator));
            Assert.Equal(argmax, TokenSampling.NextToken(logits, [], tinyTopP, generator));
        }
    }

    [Fact]
    public void SamplingFollowsTheDistribution()
    {
        using var scope = NewDisposeScope();
        var counts = Histogram(FourTokens(), new GenerationOptions(), 4000, seed: 3);
        double[] expected = [0.5, 0.3, 0.15, 0.05];
        for (int i = 0; i < 4; i++)
        {
            Assert.InRange(counts[i] / 4000.0, expected[i] - 0.03, expected[i] + 0.03);
        }
    }

    [Fact]
    public void TemperatureReshapesTheDistribution()
    {
        using var scope = NewDisposeScope();
        // T = 2: p ∝ pᵢ^(1/2) = 0.7071, 0.5477, 0.3873, 0.2236 (sum 1.8657) → 0.379, 0.294, 0.208, 0.120.
        var counts = Histogram(FourTokens(), new GenerationOptions { Temperature = 2f }, 4000, seed: 4);
        double[] expected = [0.379, 0.294, 0.208, 0.120];
        for (int i = 0; i < 4; i++)
        {
            Assert.InRange(counts[i] / 4000.0, expected[i] - 0.03, expected[i] + 0.03);
        }

        // T = 0.01 makes 0.5 vs 0.3 a gap of 51 in logits: always the top token.
        Assert.Equal([500, 0, 0, 0], Histogram(FourTokens(), new GenerationOptions { Temperature = 0.01f }, 500, seed: 5));
    }

    [Fact]
    public void TopKTopPAndMinPKeepTheHandComputedSets()
    {
        using var scope = NewDisposeScope();
        // Top-k 2 keeps tokens 0 and 1, renormalised to 0.625 / 0.375.
        var topK = Histogram(FourTokens(), new GenerationOptions { TopK = 2 }, 2000, seed: 6);
        Assert.Equal(0, topK[2] + topK[3]);
        Assert.InRange(topK[0] / 2000.0, 0.59, 0.66);

        // Top-p 0.75: 0.5 < 0.75, 0.5 + 0.3 = 0.8 ≥ 0.75 → tokens 0 and 1. Top-p 0.81 needs token 2 as well (0.95).
        var topP = Histogram(FourTokens(), new GenerationOptions { TopP = 0.75f }, 2000, seed: 7);
        Assert.Equal(0, topP[2] + topP[3]);
        Assert.InRange(topP[0] / 2000.0, 0.59, 0.66);
        var wider = Histogram(FourTokens(), new GenerationOptions { TopP = 0.81f }, 2000, seed: 8);
        Assert.Equal(0, wider[3]);
        Assert.True(wider[2] > 0);

        // Min-p 0.35: threshold 0.35·0.5 = 0.175 → tokens 0 (0.5) and 1 (0.3); 0.15 and 0.05 go.
        var minP = Histogram(FourTokens(), new GenerationOptions { MinP = 0.35f }, 2000, seed: 9);
        Assert.Equal(0, minP[2] + minP[3]);
        Assert.True(minP[1] > 0);

        // Top-k applies before top-p: top-k 3 renormalises to 0.526, 0.316, 0.158, so top-p 0.82 is reached by two
        // tokens (0.842), while on the original distribution it needs three (0.5 + 0.3 = 0.8 < 0.82).
        var both = Histogram(FourTokens(), new GenerationOptions { TopK = 3, TopP = 0.82f }, 2000, seed: 10);
        Assert.Equal(0, both[2] + both[3]);
        var topPOnly = Histogram(FourTokens(), new GenerationOptions { TopP = 0.82f }, 2000, seed: 10);
        Assert.True(topPOnly[2] > 0);
        Assert.Equal(0, topPOnly[3]);
    }

    [Fact]
    public void RepetitionPenaltyChangesTheChoiceAsComputedByHand()
    {
        using var scope = NewDisposeScope();
        var greedy = new GenerationOptions { DoSample = false, RepetitionPenalty = 1.2f };

        // Positive logits are divided: token 0 seen, 2.0 / 1.2 = 1.667 < 1.8 → token 1 wins.
        var logits = tensor(new[] { 2.0f, 1.8f, -0.5f, -0.4f });
        Assert.Equal(0, TokenSampling.NextToken(logits, [], greedy, null));
        Assert.Equal(1, TokenSampling.NextToken(logits, [0, 3], greedy, null));

        // Negative logits are multiplied: token 1 seen, −0.9 · 1.2 = −1.08 < −1.0 → token 0 wins.
        var negative = tensor(new[] { -1.0f, -0.9f, -3f });
        Assert.Equal(1, TokenSampling.NextToken(negative, [], greedy, null));
        Assert.Equal(0, TokenSampling.NextToken(negative, [1], greedy, null));

        // Applied once per distinct token: 2.0 / 1.2 = 1.667 > 1.5 keeps token 0 (three times would give 1.157).
        Assert.Equal(0, TokenSampling.NextToken(tensor(new[] { 2.0f, 1.5f }), [0, 0, 0], greedy, null));

        // A penalty below 1 rewards repetition: 1.8 / 0.8 = 2.25 > 2.0.
        Assert.Equal(1, TokenSampling.NextToken(logits, [1], new GenerationOptions { DoSample = false, RepetitionPenalty = 0.8f }, null));
    }

    [Fact]
    public void TheSameSeedGivesTheSameTokensAndDifferentSeedsDiffer()
    {
        using var scope = NewDisposeScope();
        var logits = randn(300, generator: new torch.Generator(11));
        var options = new GenerationOptions { Temperature = 1.5f, TopK = 100, TopP = 0.95f, MinP = 0.01f, RepetitionPenalty = 1.1f };

        int[] Run(torch.Generator? generator)
        {
            var tokens = new List<int>();
            for (int i = 0; i < 40; i++)
            {
                tokens.Add(TokenSampling.NextToken(logits, tokens.ToArray(), options, generator));
            }

            return tokens.ToArray();
        }

        var first = Run(new torch.Generator(42));
        Assert.Equal(first, Run(new torch.Generator(42)));
        Assert.NotEqual(first, Run(new torch.Generator(43)));

        // Without a generator, torch's default generator is used: seeding it reproduces the draws.
        torch.manual_seed(7);
        var global = Run(null);
        torch.manual_seed(7);
        Assert.Equal(global, Run(null));
    }

    [Fact]
    public void AcceptsOtherFloatingTypes()
    {
        using var scope = NewDisposeScope();
        var logits = tensor(new[] { 0.5f, 3f, 1f }).to(ScalarType.BFloat16);
        Assert.Equal(1, TokenSampling.NextToken(logits, [], new GenerationOptions { DoSample = false }, null));
        Assert.Equal(1, TokenSampling.NextToken(logits.to(ScalarType.Float64), [], new GenerationOptions { TopK = 1 }, null));
        // −∞ marks tokens that must never be chosen.
        var masked = tensor(new[] { float.NegativeInfinity, -50f, float.NegativeInfinity });
        Assert.Equal([0, 100, 0], Histogram(masked, new GenerationOptions(), 100, seed: 12));
    }

    [Fact]
    public void BadInputsAreRejectedWithClearMessages()
    {
        using var scope = NewDisposeScope();
        var options = new GenerationOptions();
        var ex = Assert.Throws<ArgumentException>(() => TokenSampling.NextToken(zeros(2, 3), [], options, null));
        Assert.Equal("Expected logits of shape (V) with V ≥ 1 and a floating-point type, got shape (2, 3) and type Float32. (Parameter 'logits')", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => TokenSampling.NextToken(zeros(3, dtype: ScalarType.Int64), [], options, null));
        Assert.Equal("Expected logits of shape (V) with V ≥ 1 and a floating-point type, got shape (3) and type Int64. (Parameter 'logits')", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => TokenSampling.NextToken(tensor(new[] { 1f, float.NaN }), [], options, null));
        Assert.Equal("The logits contain NaN at token 1; expected finite values or −∞ for masked tokens. (Parameter 'logits')", ex.Message);
        ex = Assert.Throws<ArgumentException>(() => TokenSampling.NextToken(full(3, float.NegativeInfinity), [], options, null));
        Assert.Equal("The logits are −∞ for every token; expected at least one finite value. (Parameter 'logits')", ex.Message);
        var range = Assert.Throws<ArgumentOutOfRangeException>(() => TokenSampling.NextToken(zeros(3), [0, 3], options, null));
        Assert.Equal("The history holds token 3 at index 1; expected token ids in [0, 3) for logits of 3 tokens. (Parameter 'history')", range.Message);
    }
}
