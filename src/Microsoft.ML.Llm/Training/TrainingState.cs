using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Everything a run carries from one step to the next besides the weights, the optimizer moments and torch's global
/// RNG: the one object a checkpoint writes and reads back (<see cref="Checkpoint"/>), so resuming restores it whole.
/// </summary>
internal sealed class TrainingState : IDisposable
{
    /// <summary>The seed of the data order and of the validation sample (the run's seed; kept across resumes).</summary>
    public required int Seed { get; init; }

    /// <summary>Optimizer steps completed; the learning rate is a pure function of it.</summary>
    public long Step { get; set; }

    /// <summary>Rows read so far: the data position (the order is a pure function of seed and position) and the epoch.</summary>
    public long RowsConsumed { get; set; }

    /// <summary>Training tokens (inputs) processed.</summary>
    public long TokensSeen { get; set; }

    /// <summary>Wall time of the run up to the last checkpoint, across resumes.</summary>
    public double ElapsedSeconds { get; set; }

    /// <summary>The best validation loss so far (+∞ before the first evaluation).</summary>
    public double BestValidationLoss { get; set; } = double.PositiveInfinity;

    /// <summary>The step of <see cref="BestValidationLoss"/>; −1 before the first evaluation.</summary>
    public long BestStep { get; set; } = -1;

    /// <summary>Evaluations since the last improvement: the early-stopping patience counter.</summary>
    public int EvaluationsWithoutImprovement { get; set; }

    /// <summary>The precision the run trains in; a resumed run must use the same.</summary>
    public TrainingPrecision Precision { get; init; }

    /// <summary>The fp16 loss scale and its growth tracker (PyTorch's GradScaler state); unused by Fp32 and Bf16Mixed.</summary>
    public GradScaler LossScaler { get; init; } = new();

    /// <summary>One row per step.</summary>
    public List<TrainingMetrics> History { get; init; } = [];

    /// <summary>Copies of the weights at <see cref="BestStep"/> (with KeepBestWeights), owned by this state.</summary>
    public Dictionary<string, Tensor>? BestWeights { get; private set; }

    /// <summary>Replaces <see cref="BestWeights"/> with copies of <paramref name="model"/>'s current weights.</summary>
    public void KeepBestWeights(nn.Module model)
    {
        DisposeBestWeights();
        using var scope = NewDisposeScope();   // detach() makes a handle per tensor: keep only the clones
        BestWeights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().MoveToOuterDisposeScope());
    }

    /// <summary>Takes ownership of best weights read from a checkpoint.</summary>
    public void RestoreBestWeights(Dictionary<string, Tensor>? weights)
    {
        DisposeBestWeights();
        BestWeights = weights;
    }

    /// <summary>Releases the best-weight copies.</summary>
    public void Dispose() => DisposeBestWeights();

    private void DisposeBestWeights()
    {
        if (BestWeights is null)
            return;
        foreach (var t in BestWeights.Values)
            t.Dispose();
        BestWeights = null;
    }
}
