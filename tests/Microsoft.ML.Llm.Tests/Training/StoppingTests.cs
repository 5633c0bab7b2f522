using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Training stops at whichever limit comes first; cancellation ends at a step boundary.</summary>
[Collection("Torch")]
public class StoppingTests
{
    private static readonly LmTokenizer Tok = TestData.CharTokenizer();

    private static (MLContext Ml, IDataView Data, CausalLmTrainerOptions Options) Setup()
    {
        var ml = new MLContext(seed: 1);
        var options = TestData.TinyOptions(16, maxSteps: 1000);
        options.Tokenizer = Tok;
        options.LogInterval = 1000;
        return (ml, TestData.Blocks(ml, Tok, 17, repeats: 2), options);   // 254 characters → 14 blocks of 17
    }

    [Fact]
    public void MaxTokensStopsAtTheFirstStepReachingIt()
    {
        var (ml, data, o) = Setup();
        o.MaxTokens = 200;   // 4 blocks × 16 tokens = 64 per step → 4 steps reach 256 ≥ 200
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.Equal(4, h.Count);
        Assert.Equal(256, h[^1].Tokens);
    }

    [Fact]
    public void MaxEpochsCountsPassesOverTheRows()
    {
        var (ml, data, o) = Setup();
        o.MaxEpochs = 1.5;   // 14 rows × 1.5 = 21 rows at 4 per step → 6 steps (24 rows)
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.Equal(6, h.Count);
        Assert.Equal(24.0 / 14, h[^1].Epoch, 12);
    }

    [Fact]
    public void WithNoLimitOneEpochIsTrained()
    {
        var (ml, data, o) = Setup();
        o.MaxSteps = null;
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.Equal(4, h.Count);   // ceil(14 / 4)
    }

    [Fact]
    public void TimeBudgetEndsTraining()
    {
        var (ml, data, o) = Setup();
        o.MaxSteps = 1_000_000;
        o.TimeBudget = TimeSpan.FromSeconds(1.5);
        var h = ml.Llm().Trainers.CausalLm(o).Fit(data).History;
        Assert.InRange(h[^1].ElapsedSeconds, 1.5, 30);
        Assert.True(h[^2].ElapsedSeconds < 1.5);
    }

    [Fact]
    public void MLContextCancellationStopsAtAStepBoundary()
    {
        var (ml, data, o) = Setup();
        o.LogInterval = 1;
        o.Progress = new CausalLmTrainerTests.SyncProgress(p => { if (p.Step == 3) ml.Llm().CancelExecution(); });
        var ex = Assert.Throws<OperationCanceledException>(() => ml.Llm().Trainers.CausalLm(o).Fit(data));
        Assert.Equal("Training was cancelled at step 3.", ex.Message);
    }
}
