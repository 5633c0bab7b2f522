using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Evaluations at token counts (<see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>) and training times
/// (<see cref="CausalLmTrainerOptions.EvaluateAtTimes"/>) besides the regular interval.</summary>
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

    [Fact]
    public void EvaluateAtTimesEvaluatesOnceAtTheFirstStepReachingEachTime()
    {
        var ml = new MLContext(seed: 1);
        var data = TestData.Blocks(ml, Tok, 17, repeats: 2);
        var o = TestData.TinyOptions(16, maxSteps: 6);
        o.Tokenizer = Tok;
        o.ValidationSet = data;
        o.EvaluationInterval = 1000;
        // One tick is reached by the first step; ten hours by none. Both ticks are crossed at step 1: one evaluation.
        o.EvaluateAtTimes = [TimeSpan.FromHours(10), TimeSpan.FromTicks(1), TimeSpan.FromTicks(2)];
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.Equal([1L, 6], h.Where(r => r.ValidationLoss is not null).Select(r => r.Step));

        // A time reached mid-run: the evaluation lands on the first step whose recorded time is at or past it. The time is
        // the first run's third step; this run has 40 steps, so the time falls long before its last step (where the
        // crossing's evaluation and the last step's would be one) even when this run is several times faster.
        double third = h[2].ElapsedSeconds;
        o.EvaluateAtTimes = [TimeSpan.FromSeconds(third)];
        o.MaxSteps = 40;
        var timed = ml.Llm().Trainers.CausalLm(o).Fit(data).History.ToList();
        var evaluated = timed.Where(r => r.ValidationLoss is not null).ToList();
        Assert.Equal(2, evaluated.Count);
        Assert.Equal(40, evaluated[1].Step);
        Assert.True(evaluated[0].ElapsedSeconds >= third, $"evaluated at {evaluated[0].ElapsedSeconds} s, before {third} s");
        int at = timed.IndexOf(evaluated[0]);
        Assert.True(at == 0 || timed[at - 1].ElapsedSeconds < third, "the evaluation came later than the first step past the time");

        o.EvaluateAtTimes = [TimeSpan.FromSeconds(1), TimeSpan.Zero];
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(o).Fit(data));
        Assert.StartsWith("Option 'EvaluateAtTimes' must hold positive times; got 00:00:00.", e.Message);
    }
}
