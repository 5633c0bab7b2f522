using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm.Tests.Sweeps;

/// <summary>Each tuner's proposals, without training: grid, random, ASHA's rung decisions, TPE on a synthetic objective.</summary>
public class TunerTests
{
    private static TrialSettings Settings(int id) => new() { TrialId = id, Seed = id, Directory = "unused" };

    private static TrialResult Result(TrialSettings s, double loss, TrialStatus status = TrialStatus.Completed) => new()
    {
        TrialSettings = s,
        Status = status,
        StopReason = status == TrialStatus.Failed ? "failed" : "completed",
        Metric = loss,
        Loss = status == TrialStatus.Failed ? double.PositiveInfinity : loss,
        Tokens = 0,
        Duration = TimeSpan.Zero,
        Curve = [],
    };

    private static Sweeping.SearchSpace Space() => new()
    {
        ["LearningRate"] = new UniformDoubleOption(1e-4, 1e-2, logBase: true),
        ["Layers"] = new UniformIntOption(1, 2),
        ["Packing"] = new ChoiceOption("Concatenate", "BestFit", "Padded"),
    };

    [Fact]
    public void GridVisitsEveryCombinationOnceThenEnds()
    {
        var grid = new GridSearchTuner(Space(), gridSize: 3);
        Assert.Equal(3 * 2 * 3, grid.Count);
        var seen = new List<Parameter>();
        for (int i = 1; ; i++)
        {
            var s = Settings(i);
            var p = grid.Propose(s);
            if (p is null)
                break;
            seen.Add(p);
            grid.Update(Result(s, 0));
        }

        Assert.Equal(18, seen.Count);
        Assert.Equal(18, seen.Distinct().Count());
        Assert.Equal([1e-4, 1e-3, 1e-2], seen.Select(p => Math.Round(p["LearningRate"].AsType<double>(), 10)).Distinct().Order());
        Assert.Equal([1, 2], seen.Select(p => p["Layers"].AsType<int>()).Distinct().Order());
        Assert.Equal(["BestFit", "Concatenate", "Padded"], seen.Select(p => p["Packing"].AsType<string>()).Distinct().Order());
        // The first option varies slowest.
        Assert.All(seen.Take(6), p => Assert.Equal(1e-4, p["LearningRate"].AsType<double>(), 12));
        Assert.Null(grid.Propose(Settings(20)));
    }

    [Fact]
    public void RandomSearchIsDeterministicGivenItsSeedAndCoversTheSpace()
    {
        List<Parameter> Draw(int seed)
        {
            var tuner = new RandomSearchTuner(Space(), seed);
            return Enumerable.Range(1, 200).Select(i => tuner.Propose(Settings(i))!).ToList();
        }

        var a = Draw(5);
        Assert.Equal(a, Draw(5));
        Assert.NotEqual(a, Draw(6));
        Assert.Equal(3, a.Select(p => p["Packing"].ToString()).Distinct().Count());
        Assert.Equal(2, a.Select(p => p["Layers"].ToString()).Distinct().Count());
        var rates = a.Select(p => p["LearningRate"].AsType<double>()).ToArray();
        Assert.InRange(rates.Min(), 1e-4, 1.3e-4);
        Assert.InRange(rates.Max(), 0.8e-2, 1e-2);
    }

    [Fact]
    public void AshaStopsTheWorstAtEachRung()
    {
        // η = 3, rungs at 100, 300, 900 tokens.
        var asha = new AshaTuner(Space(), minTokens: 100, reductionFactor: 3, seed: 1);
        Assert.Equal([100, 300, 900], Enumerable.Range(0, 3).Select(asha.RungTokens));

        // Trial 1 is alone at every rung: it continues.
        Assert.False(asha.ShouldStop(Settings(1), 50, TimeSpan.Zero, 3.0, out _));        // below the first rung: nothing recorded
        Assert.Empty(asha.RecordedAt(0));
        Assert.False(asha.ShouldStop(Settings(1), 100, TimeSpan.Zero, 2.0, out _));
        Assert.False(asha.ShouldStop(Settings(1), 300, TimeSpan.Zero, 1.5, out _));

        // Trial 2 is worse than trial 1 at rung 0: of 2 values the best ⌊2/3⌋ → 1 continues, so it stops.
        Assert.True(asha.ShouldStop(Settings(2), 100, TimeSpan.Zero, 2.5, out var reason));
        Assert.Equal("stopped at rung 0 (100 tokens): 2.5 is not among the best 1 of 2 (cutoff 2)", reason);

        // Trial 3 is better than both at rung 0, continues; at rung 1 it is worse than trial 1 and stops there.
        Assert.False(asha.ShouldStop(Settings(3), 100, TimeSpan.Zero, 1.8, out _));
        Assert.True(asha.ShouldStop(Settings(3), 300, TimeSpan.Zero, 1.6, out reason));
        Assert.StartsWith("stopped at rung 1 (300 tokens)", reason);
        Assert.Equal(new Dictionary<int, double> { [1] = 2.0, [2] = 2.5, [3] = 1.8 }, asha.RecordedAt(0));

        // With six values at rung 0 the best two continue: 1.8 (trial 3) and 2.0 (trial 1); 1.9 would be second.
        Assert.True(asha.ShouldStop(Settings(4), 100, TimeSpan.Zero, 2.2, out _));
        Assert.True(asha.ShouldStop(Settings(5), 100, TimeSpan.Zero, 2.1, out _));
        Assert.False(asha.ShouldStop(Settings(6), 120, TimeSpan.Zero, 1.9, out _));       // first report past the rung counts
        Assert.False(asha.ShouldStop(Settings(6), 150, TimeSpan.Zero, 5.0, out _));       // rung 0 already decided for trial 6
        Assert.Throws<ArgumentOutOfRangeException>(() => new AshaTuner(Space(), minTokens: 0));
    }

    [Fact]
    public void AshaWithRungsInTimeJudgesTrialsAfterTheSameTrainingTime()
    {
        // η = 3, rungs at 2, 6, 18 s of each trial's training time; tokens play no part.
        var asha = new AshaTuner(Space(), minTime: TimeSpan.FromSeconds(2), reductionFactor: 3, seed: 1);
        Assert.Equal([2.0, 6, 18], Enumerable.Range(0, 3).Select(k => asha.RungTime(k).TotalSeconds));
        Assert.Null(asha.MinTokens);
        Assert.Equal("This AshaTuner's rungs are in training time (MinTime); use RungTime.",
            Assert.Throws<InvalidOperationException>(() => asha.RungTokens(0)).Message);
        var settings = new TrialSettings { TrialId = 1, Seed = 0, MaxTime = TimeSpan.FromSeconds(10), MaxTokens = 1000, Directory = "t" };
        Assert.Equal([TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(6)], asha.DecisionTimes(settings));
        Assert.Empty(asha.DecisionTokens(settings));
        Assert.Empty(new AshaTuner(Space(), minTokens: 100).DecisionTimes(settings));

        // A slow trial with many tokens is not judged before its time: 1.9 s is below the first rung.
        Assert.False(asha.ShouldStop(Settings(1), 1_000_000, TimeSpan.FromSeconds(1.9), 3.0, out _));
        Assert.Empty(asha.RecordedAt(0));
        Assert.False(asha.ShouldStop(Settings(1), 500, TimeSpan.FromSeconds(2.1), 2.0, out _));
        // Trial 2 reached fewer tokens in the same time and a worse loss: stopped at rung 0.
        Assert.True(asha.ShouldStop(Settings(2), 200, TimeSpan.FromSeconds(2.0), 2.4, out var reason));
        Assert.Equal("stopped at rung 0 (2 s): 2.4 is not among the best 1 of 2 (cutoff 2)", reason);
        // Trial 3 is better at rung 0 and continues; one report past two rungs records both.
        Assert.False(asha.ShouldStop(Settings(3), 900, TimeSpan.FromSeconds(6.5), 1.5, out _));
        Assert.Equal([1, 2, 3], asha.RecordedAt(0).Keys.Order());
        Assert.Equal([3], asha.RecordedAt(1).Keys);
        Assert.StartsWith("Parameter 'minTime' (the first rung's budget) must be a positive time; got 00:00:00.",
            Assert.Throws<ArgumentOutOfRangeException>(() => new AshaTuner(Space(), minTime: TimeSpan.Zero)).Message);
    }

    [Fact]
    public void TreeParzenMovesTowardTheBetterRegion()
    {
        // Synthetic objective over x ∈ [0, 1] and a choice: minimum at x = 0.8 with the choice "b".
        var space = new Sweeping.SearchSpace
        {
            ["x"] = new UniformDoubleOption(0, 1),
            ["c"] = new ChoiceOption("a", "b", "c"),
        };
        static double Objective(Parameter p) => Math.Pow(p["x"].AsType<double>() - 0.8, 2) + (p["c"].AsType<string>() == "b" ? 0 : 0.3);

        double MeanOfLast(ITuner tuner, int trials, int last)
        {
            var losses = new List<double>();
            for (int i = 1; i <= trials; i++)
            {
                var s = Settings(i);
                s.Parameter = tuner.Propose(s)!;
                double loss = Objective(s.Parameter);
                losses.Add(loss);
                tuner.Update(Result(s, loss));
            }

            return losses.TakeLast(last).Average();
        }

        double tpe = 0;
        double random = 0;
        for (int seed = 0; seed < 5; seed++)
        {
            tpe += MeanOfLast(new TreeParzenTuner(space, seed, startupTrials: 8), 40, 15) / 5;
            random += MeanOfLast(new RandomSearchTuner(space, seed), 40, 15) / 5;
        }

        // Random search's expected loss is E[(x-0.8)²] + 0.2 = 0.213 + 0.2; TPE's later proposals sit near the optimum.
        Assert.InRange(random, 0.3, 0.55);
        Assert.True(tpe < random / 3, $"TPE's mean loss over its last 15 proposals is {tpe:F4}; random search's {random:F4}.");

        // Failed trials count as the worst, and the tuner stays deterministic.
        var t1 = new TreeParzenTuner(space, 3, startupTrials: 2);
        var t2 = new TreeParzenTuner(space, 3, startupTrials: 2);
        for (int i = 1; i <= 6; i++)
        {
            var s1 = Settings(i);
            var s2 = Settings(i);
            s1.Parameter = t1.Propose(s1)!;
            s2.Parameter = t2.Propose(s2)!;
            Assert.Equal(s1.Parameter, s2.Parameter);
            t1.Update(Result(s1, 0, i % 2 == 0 ? TrialStatus.Failed : TrialStatus.Completed));
            t2.Update(Result(s2, 0, i % 2 == 0 ? TrialStatus.Failed : TrialStatus.Completed));
        }
    }
}
