using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Random search (Bergstra and Bengio 2012): each trial draws every coordinate of the search space uniformly (so a
/// log range is uniform in log(value)). Seeded: the same seed proposes the same sequence (AutoML's
/// <c>RandomSearchTuner</c>).
/// </summary>
public sealed class RandomSearchTuner : ITuner
{
    private readonly Sweeping.SearchSpace _space;
    private readonly Random _random;

    /// <summary>A random search over <paramref name="searchSpace"/>.</summary>
    /// <param name="searchSpace">The space to draw from (not empty).</param>
    /// <param name="seed">Seed of the draws.</param>
    public RandomSearchTuner(Sweeping.SearchSpace searchSpace, int seed = 0)
    {
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(RandomSearchTuner));
        _space = searchSpace;
        _random = new Random(seed);
    }

    /// <inheritdoc/>
    public Parameter? Propose(TrialSettings settings)
    {
        var x = new double[_space.FeatureSpaceDim];
        for (int i = 0; i < x.Length; i++)
            x[i] = _random.NextDouble();
        return _space.SampleFromFeatureSpace(x);
    }

    /// <inheritdoc/>
    public void Update(TrialResult result)
    {
    }
}
