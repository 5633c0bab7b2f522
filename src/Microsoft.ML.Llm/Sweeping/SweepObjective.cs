namespace Microsoft.ML.Llm;

/// <summary>
/// What a sweep optimises (AutoML's <c>SetBinaryClassificationMetric</c> and friends, for language models): the
/// validation loss (the default), bits per byte, a user metric of the trainer's validation metrics (reported at every
/// evaluation, so early-stopping tuners can use it), or a user metric of the fitted pipeline (computed once per
/// trial, after training).
/// </summary>
public sealed class SweepObjective
{
    private SweepObjective(string name, bool maximize, Func<LanguageModelMetrics, double>? fromValidation, Func<ITransformer, double>? fromModel)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Name = name;
        Maximize = maximize;
        ReadValidation = fromValidation;
        EvaluateModel = fromModel;
    }

    /// <summary>The validation loss in nats per token (lower is better), read at each of the trainer's evaluations.</summary>
    public static SweepObjective ValidationLoss { get; } = new("validation_loss", false, m => m.Loss, null);

    /// <summary>Validation bits per byte (lower is better; needs a tokenizer on the token column for byte counts).</summary>
    public static SweepObjective BitsPerByte { get; } = new("bits_per_byte", false, m => m.BitsPerByte, null);

    /// <summary>The metric's name (the leaderboard's column).</summary>
    public string Name { get; }

    /// <summary>True when higher is better.</summary>
    public bool Maximize { get; }

    /// <summary>Reads the objective from the trainer's validation metrics (null for a model objective).</summary>
    internal Func<LanguageModelMetrics, double>? ReadValidation { get; }

    /// <summary>Computes the objective on a fitted pipeline (null for a validation objective).</summary>
    internal Func<ITransformer, double>? EvaluateModel { get; }

    /// <summary>A user metric of the validation metrics, read at every evaluation. NaN = not reported at that evaluation.</summary>
    public static SweepObjective FromValidation(string name, Func<LanguageModelMetrics, double> metric, bool maximize = false)
    {
        ArgumentNullException.ThrowIfNull(metric);
        return new(name, maximize, metric, null);
    }

    /// <summary>A user metric of the fitted pipeline, computed after each trial (not seen by early stopping). NaN = not reported.</summary>
    public static SweepObjective FromModel(string name, Func<ITransformer, double> metric, bool maximize = false)
    {
        ArgumentNullException.ThrowIfNull(metric);
        return new(name, maximize, null, metric);
    }

    /// <summary>The value tuners minimise.</summary>
    internal double ToLoss(double metric) => double.IsNaN(metric) ? double.PositiveInfinity : Maximize ? -metric : metric;

    /// <inheritdoc/>
    public override string ToString() => Name;
}
