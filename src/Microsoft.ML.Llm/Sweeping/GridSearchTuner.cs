using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Grid search: every combination of the options' grid values, in order (the first option varies slowest), then
/// nothing (<see cref="Propose"/> returns null and the sweep ends). A choice contributes each value; a numeric range
/// <c>gridSize</c> points spread evenly on its scale (an integer range at most that many distinct integers).
/// AutoML's <c>GridSearchTuner</c> with a step count per range.
/// </summary>
public sealed class GridSearchTuner : ITuner
{
    private readonly Sweeping.SearchSpace _space;
    private readonly double[][] _axes;
    private long _next;

    /// <summary>A grid over <paramref name="searchSpace"/>.</summary>
    /// <param name="searchSpace">The space (not empty).</param>
    /// <param name="gridSize">Points per numeric range (at least 1).</param>
    public GridSearchTuner(Sweeping.SearchSpace searchSpace, int gridSize = 3)
    {
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(GridSearchTuner));
        if (gridSize < 1)
            throw new ArgumentOutOfRangeException(nameof(gridSize), gridSize, $"Parameter 'gridSize' must be at least 1; got {gridSize}.");
        _space = searchSpace;
        _axes = searchSpace.GridCoordinates(gridSize).ToArray();
        long count = 1;
        foreach (var axis in _axes)
            count = checked(count * axis.Length);
        Count = count;
    }

    /// <summary>Number of points in the grid.</summary>
    public long Count { get; }

    /// <inheritdoc/>
    public Parameter? Propose(TrialSettings settings)
    {
        if (_next >= Count)
            return null;
        long index = _next++;
        var x = new double[_axes.Length];
        for (int d = _axes.Length - 1; d >= 0; d--)
        {
            x[d] = _axes[d][index % _axes[d].Length];
            index /= _axes[d].Length;
        }

        return _space.SampleFromFeatureSpace(x);
    }

    /// <inheritdoc/>
    public void Update(TrialResult result)
    {
    }
}
