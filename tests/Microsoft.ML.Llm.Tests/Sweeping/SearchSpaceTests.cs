using Microsoft.ML.Llm.Data;
using Microsoft.ML.SearchSpace;

namespace Microsoft.ML.Llm.Tests.Sweeps;

/// <summary>Search spaces from ML.NET's attributes and from the builder: sampling, mapping, values and the messages of bad spaces.</summary>
public class SearchSpaceTests
{
    public sealed class TrainerSpace
    {
        [Range(1e-4, 1e-2, init: 1e-3, logBase: true)]
        public double LearningRate { get; set; }

        [Range(64, 512, init: 128, logBase: true)]
        public int VocabularySize { get; set; }

        [Range(0, 10, init: 2)]
        public int WarmupSteps { get; set; }

        [Choice(PackingMode.Concatenate, PackingMode.BestFit)]
        public PackingMode Packing { get; set; }

        [BooleanChoice(false)]
        public bool ActivationCheckpointing { get; set; }

        [NestOption]
        public ModelSpace Model { get; set; } = new();

        public string NotSearched { get; set; } = "kept";
    }

    public sealed class ModelSpace
    {
        [Choice(1, 2, 4)]
        public int Layers { get; set; }

        [Range(0.0f, 0.2f, 0.1f)]
        public float Dropout { get; set; }
    }

    public sealed class NothingToSearch
    {
        public int A { get; set; }
    }

    public sealed class MinAboveMax
    {
        [Range(0.5, 0.1)]
        public double Beta2 { get; set; }
    }

    public sealed class LogFromZero
    {
        [Range(0.0, 1.0, logBase: true)]
        public double WeightDecay { get; set; }
    }

    public sealed class EmptyChoice
    {
        [Choice]
        public int BatchSize { get; set; }
    }

    public sealed class InitOutside
    {
        [Range(1, 8, init: 16)]
        public int Heads { get; set; }
    }

    [Fact]
    public void AttributesGiveTheDimensionsDefaultsAndTypedValues()
    {
        var space = new Sweeping.SearchSpace<TrainerSpace>();
        Assert.Equal(["LearningRate", "VocabularySize", "WarmupSteps", "Packing", "ActivationCheckpointing", "Model"], space.Keys);
        Assert.Equal(7, space.FeatureSpaceDim);   // 5 + nested (2)

        var d = space.Default.AsType<TrainerSpace>();
        Assert.Equal(1e-3, d.LearningRate, 12);
        Assert.Equal(128, d.VocabularySize);
        Assert.Equal(2, d.WarmupSteps);
        Assert.Equal(PackingMode.Concatenate, d.Packing);
        Assert.False(d.ActivationCheckpointing);
        Assert.Equal(1, d.Model.Layers);
        Assert.Equal(0.1f, d.Model.Dropout, 6);
        Assert.Equal("kept", d.NotSearched);

        // The corners of the feature space are the ends of the ranges (log ranges included) and the first/last choices.
        var low = space.SampleFromFeatureSpace(new double[7]).AsType<TrainerSpace>();
        Assert.Equal(1e-4, low.LearningRate, 12);
        Assert.Equal(64, low.VocabularySize);
        Assert.Equal(0, low.WarmupSteps);
        Assert.Equal(PackingMode.Concatenate, low.Packing);
        Assert.True(low.ActivationCheckpointing);
        Assert.Equal(1, low.Model.Layers);
        Assert.Equal(0f, low.Model.Dropout);
        var high = space.SampleFromFeatureSpace(Enumerable.Repeat(1.0, 7).ToArray()).AsType<TrainerSpace>();
        Assert.Equal(1e-2, high.LearningRate, 12);
        Assert.Equal(512, high.VocabularySize);
        Assert.Equal(10, high.WarmupSteps);
        Assert.Equal(PackingMode.BestFit, high.Packing);
        Assert.False(high.ActivationCheckpointing);
        Assert.Equal(4, high.Model.Layers);
        Assert.Equal(0.2f, high.Model.Dropout, 6);

        // Log scale: the middle of [1e-4, 1e-2] is 1e-3, of [64, 512] is 181 (√(64·512) = 181.02).
        var mid = space.SampleFromFeatureSpace(Enumerable.Repeat(0.5, 7).ToArray());
        Assert.Equal(1e-3, mid["LearningRate"].AsType<double>(), 12);
        Assert.Equal(181, mid["VocabularySize"].AsType<int>());
        Assert.Equal(2, mid["Model"]["Layers"].AsType<int>());
    }

    [Fact]
    public void MappingToTheFeatureSpaceInvertsSampling()
    {
        var space = new Sweeping.SearchSpace<TrainerSpace>();
        var random = new Random(3);
        for (int i = 0; i < 50; i++)
        {
            var x = Enumerable.Range(0, space.FeatureSpaceDim).Select(_ => random.NextDouble()).ToArray();
            var p = space.SampleFromFeatureSpace(x);
            var back = space.SampleFromFeatureSpace(space.MappingToFeatureSpace(p));
            Assert.Equal(p, back);
            Assert.Equal(p, Sweeping.Parameter.FromJson(p.ToString()));   // the JSON form the sweep directory records
        }
    }

    [Fact]
    public void LogRangeSamplesAreUniformInLogValue()
    {
        var option = new Sweeping.UniformDoubleOption(1e-5, 1e-1, logBase: true);
        var space = new Sweeping.SearchSpace { ["lr"] = option };
        var random = new Random(11);
        int perDecade0 = 0;
        const int n = 4000;
        for (int i = 0; i < n; i++)
        {
            double v = space.SampleFromFeatureSpace([random.NextDouble()])["lr"].AsType<double>();
            Assert.InRange(v, 1e-5, 1e-1);
            if (v < 1e-4)
                perDecade0++;
        }

        // Four decades: a quarter of the draws land in the first (binomial σ ≈ 27 for n = 4000).
        Assert.InRange(perDecade0, n / 4 - 100, n / 4 + 100);
    }

    [Fact]
    public void IntegerRangeGivesEveryValueEqually()
    {
        var space = new Sweeping.SearchSpace { ["layers"] = new Sweeping.UniformIntOption(1, 4) };
        var counts = new int[5];
        for (int i = 0; i < 400; i++)
            counts[space.SampleFromFeatureSpace([(i + 0.5) / 400])["layers"].AsType<int>()]++;
        Assert.Equal([0, 100, 100, 100, 100], counts);
    }

    [Fact]
    public void BuilderNestsSpacesAndFlattensParameters()
    {
        var trainer = new Sweeping.SearchSpace
        {
            ["LearningRate"] = new Sweeping.UniformDoubleOption(1e-4, 1e-2, logBase: true, defaultValue: 6e-4),
            ["BatchSize"] = new Sweeping.ChoiceOption(8, 16),
        };
        var space = new Sweeping.SearchSpace
        {
            ["Trainer"] = trainer,
            ["Packing"] = new Sweeping.ChoiceOption("Concatenate", "BestFit"),
        };
        Assert.Equal(3, space.FeatureSpaceDim);
        var p = space.Default;
        Assert.Equal("{\"Trainer\":{\"LearningRate\":0.0006,\"BatchSize\":8},\"Packing\":\"Concatenate\"}", p.ToString());
        Assert.Equal(
            [new("Trainer.LearningRate", "0.0006"), new("Trainer.BatchSize", "8"), new KeyValuePair<string, string>("Packing", "Concatenate")],
            p.Flatten().ToArray());
        Assert.Equal(PackingMode.BestFit, Sweeping.Parameter.FromString("BestFit").AsType<PackingMode>());
    }

    [Fact]
    public void BadSpacesAreRejectedNamingTheParameterAndTheValue()
    {
        var empty = Assert.Throws<ArgumentException>(() => new Sweeping.SearchSpace<NothingToSearch>());
        Assert.Equal("The search space of NothingToSearch is empty: none of its public properties has [Range], [Choice], [BooleanChoice] or [NestOption].", empty.Message);

        var minMax = Assert.Throws<ArgumentOutOfRangeException>(() => new Sweeping.SearchSpace<MinAboveMax>());
        Assert.StartsWith("Range parameter 'Beta2' has min 0.5 greater than max 0.1; give min ≤ max.", minMax.Message);

        var log = Assert.Throws<ArgumentOutOfRangeException>(() => new Sweeping.SearchSpace<LogFromZero>());
        Assert.StartsWith("Range parameter 'WeightDecay' is on a log scale but its min is 0; a log range needs min > 0 (or set logBase: false).", log.Message);

        var choice = Assert.Throws<ArgumentException>(() => new Sweeping.SearchSpace<EmptyChoice>());
        Assert.StartsWith("Choice parameter 'BatchSize' has no values; give at least one value to choose from.", choice.Message);

        var init = Assert.Throws<ArgumentOutOfRangeException>(() => new Sweeping.SearchSpace<InitOutside>());
        Assert.StartsWith("Range parameter 'Heads' has the initial value 16, outside [1, 8].", init.Message);

        // The builder checks as options are added, with the nested path.
        var outer = new Sweeping.SearchSpace { ["Trainer"] = new Sweeping.SearchSpace { ["Beta2"] = new Sweeping.UniformDoubleOption(0.9, 0.999) } };
        var nested = Assert.Throws<ArgumentOutOfRangeException>(() => ((Sweeping.SearchSpace)outer["Trainer"])["WarmupSteps"] = new Sweeping.UniformIntOption(100, 10));
        Assert.StartsWith("Range parameter 'Trainer.WarmupSteps' has min 100 greater than max 10; give min ≤ max.", nested.Message);

        var builderEmpty = Assert.Throws<ArgumentException>(() => new RandomSearchTuner(new Sweeping.SearchSpace()));
        Assert.StartsWith("The search space given to RandomSearchTuner is empty", builderEmpty.Message);
        var ml = new MLContext(seed: 1);
        var pipelineEmpty = Assert.Throws<ArgumentException>(() => ml.Llm().CreateSweepableEstimator((_, _) => ml.Llm().Trainers.CausalLm(), new Sweeping.SearchSpace()));
        Assert.StartsWith("The search space given to SweepableEstimator is empty", pipelineEmpty.Message);
    }

    [Fact]
    public void TheReadySpaceCoversTheIssuesOptionsAndEveryPointIsAValidPipeline()
    {
        var space = new Sweeping.SearchSpace<Sweeping.CausalLmSearchSpace>();
        Assert.Equal(
            ["LearningRate", "MinLearningRateRatio", "WarmupSteps", "WeightDecay", "BatchSize", "GradientAccumulationSteps", "Beta2", "Precision",
             "LayerCount", "EmbeddingSize", "HeadCount", "ContextLength", "Dropout", "VocabularySize", "Packing"],
            space.Keys);
        var defaults = space.Default.AsType<Sweeping.CausalLmSearchSpace>();
        Assert.Equal((6e-4, 12, 4, 128, TrainingPrecision.Fp32), (defaults.LearningRate, defaults.BatchSize, defaults.LayerCount, defaults.EmbeddingSize, defaults.Precision));

        var random = new Random(2);
        var ml = new MLContext(seed: 1);
        for (int i = 0; i < 200; i++)
        {
            var x = Enumerable.Range(0, space.FeatureSpaceDim).Select(_ => random.NextDouble()).ToArray();
            var point = space.SampleFromFeatureSpace(x).AsType<Sweeping.CausalLmSearchSpace>();
            var options = point.ApplyTo(new CausalLmTrainerOptions());
            options.Model!.Validate();                           // width divisible by heads at every point
            _ = ml.Llm().Trainers.CausalLm(options);            // the trainer's option checks pass
            Assert.Equal(point.LearningRate * point.MinLearningRateRatio, options.MinLearningRate!.Value, 15);
            Assert.Equal(point.ContextLength, point.PackerOptions().ContextLength);
            Assert.InRange(point.TokenizerOptions().VocabularySize, 256, 16384);
        }
    }
}
