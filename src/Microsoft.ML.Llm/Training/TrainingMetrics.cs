namespace Microsoft.ML.Llm;

/// <summary>One row of the training history kept on <see cref="CausalLmTransformer.History"/> and written to metrics.csv.</summary>
/// <param name="Step">Optimizer steps completed (1-based: the first row is step 1).</param>
/// <param name="Epoch">Passes over the training data so far (fractional).</param>
/// <param name="Tokens">Training tokens (inputs) processed so far.</param>
/// <param name="Loss">Training loss (nats/token) of this step.</param>
/// <param name="LearningRate">Learning rate used by this step.</param>
/// <param name="GradientNorm">Global gradient L2 norm before clipping.</param>
/// <param name="TokensPerSecond">Training throughput since the previous report.</param>
/// <param name="ElapsedSeconds">Wall time since training started (across resumes).</param>
/// <param name="ValidationLoss">Validation loss, on steps with an evaluation.</param>
/// <param name="ValidationPerplexity">exp(<paramref name="ValidationLoss"/>), on steps with an evaluation.</param>
/// <param name="ValidationBitsPerByte">Validation bits per byte, on steps with an evaluation (NaN without byte counts).</param>
public sealed record TrainingMetrics(long Step, double Epoch, long Tokens, double Loss, double LearningRate, double GradientNorm,
    double TokensPerSecond, double ElapsedSeconds, double? ValidationLoss, double? ValidationPerplexity, double? ValidationBitsPerByte)
{
    /// <summary>Model flops utilisation at <see cref="TokensPerSecond"/>: flops/token (6N + 12·L·H·Q·T) × tokens/s over
    /// the matmul peak of the training precision (<see cref="CausalLmTrainerOptions.PeakFlops"/>, or measured once per
    /// process). A fraction (0.5 = 50%); NaN when unknown, as in histories read from a model zip, which keeps only the
    /// columns above.</summary>
    public double Mfu { get; init; } = double.NaN;

    /// <summary>The process's peak resident memory so far, in bytes; 0 when unknown (histories read from a model zip).</summary>
    public long PeakMemoryBytes { get; init; }
}
