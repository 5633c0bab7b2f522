namespace Microsoft.ML.Llm;

/// <summary>A progress report from <see cref="CausalLmTrainer"/>.</summary>
/// <param name="Step">Optimizer steps completed.</param>
/// <param name="Epoch">Passes over the training data so far (fractional).</param>
/// <param name="Loss">Training loss (nats/token) of the last step.</param>
/// <param name="LearningRate">Learning rate used by the last step.</param>
/// <param name="GradientNorm">Global gradient L2 norm before clipping.</param>
/// <param name="TokensPerSecond">Training throughput over the last reporting interval.</param>
/// <param name="Elapsed">Wall time since training started (across resumes).</param>
/// <param name="EstimatedRemaining">Time left to the step limit at the current speed, if known.</param>
/// <param name="Validation">The evaluation done at this step, if any.</param>
public sealed record TrainingProgress(long Step, double Epoch, double Loss, double LearningRate, double GradientNorm,
    double TokensPerSecond, TimeSpan Elapsed, TimeSpan? EstimatedRemaining, LanguageModelMetrics? Validation)
{
    /// <summary>Model flops utilisation over the last reporting interval, a fraction of the matmul peak of the training
    /// precision (see <see cref="TrainingMetrics.Mfu"/>); NaN when the peak is unknown.</summary>
    public double Mfu { get; init; } = double.NaN;

    /// <summary>Training tokens (inputs) processed so far (across resumes).</summary>
    public long Tokens { get; init; }

    /// <summary>The process's peak resident memory so far, in bytes.</summary>
    public long PeakMemoryBytes { get; init; }
}
