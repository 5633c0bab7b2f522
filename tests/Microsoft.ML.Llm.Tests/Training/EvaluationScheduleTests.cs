using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Evaluations at token counts (<see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>) besides the regular interval.</summary>
[Collection("Torch")]
public class EvaluationScheduleTests
{
    private static readonly LmTokenizer Tok = TestData.CharTokenizer();

    [Fact]
    public void EvaluateAtTokensEvaluatesAtTheFirstStepReachingEachCount()
    {
        var ml = new MLContext(seed: 1);
        var data = TestData.Blocks(ml, Tok, 17, repeats: 2);
        var o = TestData.TinyOptions(16, maxSteps: 8);   // 4 blocks × 16 tokens = 64 tokens a step
        o.Tokenizer = Tok;
        o.ValidationSet = data;
        o.EvaluationInterval = 1000;                      // no regular evaluation before the last step
        o.EvaluateAtTokens = [300, 100, 128];             // steps 2 (128 ≥ 100 and ≥ 128, once) and 5 (320 ≥ 300)
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.Equal([2L, 5, 8], h.Where(r => r.ValidationLoss is not null).Select(r => r.Step));

        o.EvaluateAtTokens = [64, 0];
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(o).Fit(data));
        Assert.StartsWith("Option 'EvaluateAtTokens' must hold positive token counts; got 0.", e.Message);
    }
}
