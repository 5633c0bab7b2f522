namespace Microsoft.ML.Llm.Tests;

public class LearningRateScheduleTests
{
    private const double Max = 1e-3, Min = 1e-4;

    [Theory]
    [InlineData(0, 1e-3 * 1 / 11)]          // nanoGPT warmup: lr · (it + 1) / (warmup + 1)
    [InlineData(9, 1e-3 * 10 / 11)]
    [InlineData(10, 1e-3)]                  // decay starts at the peak
    [InlineData(55, 1e-4 + 0.5 * 9e-4)]     // halfway: cos(π/2) = 0 → midpoint
    [InlineData(100, 1e-4)]                 // end of decay
    [InlineData(150, 1e-4)]                 // past the horizon: the floor
    public void CosineMatchesNanoGpt(long step, double expected) =>
        Assert.Equal(expected, LearningRateSchedule.At(LearningRateScheduleKind.Cosine, step, Max, Min, warmupSteps: 10, decaySteps: 100), 15);

    [Theory]
    [InlineData(10, 1e-3)]
    [InlineData(55, 1e-4 + 0.5 * 9e-4)]
    [InlineData(82, 1e-4 + 0.2 * 9e-4)]     // (82 − 10) / 90 = 0.8 of the way down
    public void LinearDecaysLinearly(long step, double expected) =>
        Assert.Equal(expected, LearningRateSchedule.At(LearningRateScheduleKind.Linear, step, Max, Min, 10, 100), 15);

    [Fact]
    public void ConstantHoldsThePeakAfterWarmup()
    {
        Assert.Equal(Max / 11, LearningRateSchedule.At(LearningRateScheduleKind.Constant, 0, Max, Min, 10, 100), 15);
        Assert.Equal(Max, LearningRateSchedule.At(LearningRateScheduleKind.Constant, 500, Max, Min, 10, 100));
    }

    [Fact]
    public void WarmupStableDecayDecaysOverTheLastFraction()
    {
        // decaySteps 100, fraction 0.2: stable until step 80, then linear to the floor at step 100.
        Assert.Equal(Max, LearningRateSchedule.At(LearningRateScheduleKind.WarmupStableDecay, 79, Max, Min, 10, 100, 0.2));
        Assert.Equal(Max, LearningRateSchedule.At(LearningRateScheduleKind.WarmupStableDecay, 80, Max, Min, 10, 100, 0.2));
        Assert.Equal(Min + 0.5 * (Max - Min), LearningRateSchedule.At(LearningRateScheduleKind.WarmupStableDecay, 90, Max, Min, 10, 100, 0.2), 15);
        Assert.Equal(Min, LearningRateSchedule.At(LearningRateScheduleKind.WarmupStableDecay, 100, Max, Min, 10, 100, 0.2), 15);
    }

    [Fact]
    public void UnknownHorizonHoldsThePeak() =>
        Assert.Equal(Max, LearningRateSchedule.At(LearningRateScheduleKind.Cosine, 1000, Max, Min, 10, decaySteps: null));
}
