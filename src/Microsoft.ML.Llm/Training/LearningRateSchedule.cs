namespace Microsoft.ML.Llm;

/// <summary>Shape of the learning rate over training steps.</summary>
public enum LearningRateScheduleKind
{
    /// <summary>Linear warmup, then constant.</summary>
    Constant,
    /// <summary>Linear warmup, then linear decay to the minimum learning rate.</summary>
    Linear,
    /// <summary>Linear warmup, then cosine decay to the minimum learning rate (nanoGPT, GPT-3).</summary>
    Cosine,
    /// <summary>Warmup-stable-decay (MiniCPM, Hu et al. 2024): warmup, constant, then linear decay over the last
    /// <see cref="CausalLmTrainerOptions.DecayFraction"/> of training.</summary>
    WarmupStableDecay,
}

/// <summary>The learning-rate schedule: a small pure function of the step (nanoGPT <c>get_lr</c>).</summary>
public static class LearningRateSchedule
{
    /// <summary>Learning rate for the 0-based <paramref name="step"/>.</summary>
    /// <param name="kind">Schedule shape.</param>
    /// <param name="step">0-based optimizer step.</param>
    /// <param name="maxLr">Peak learning rate.</param>
    /// <param name="minLr">Floor reached at the end of the decay.</param>
    /// <param name="warmupSteps">Steps of linear warmup.</param>
    /// <param name="decaySteps">Step at which the decay ends (nanoGPT <c>lr_decay_iters</c>); null = unknown horizon, hold the peak.</param>
    /// <param name="decayFraction">For warmup-stable-decay: the fraction of <paramref name="decaySteps"/> spent decaying.</param>
    public static double At(LearningRateScheduleKind kind, long step, double maxLr, double minLr, int warmupSteps, long? decaySteps, double decayFraction = 0.2)
    {
        // 1) linear warmup for warmupSteps steps; nanoGPT uses (it + 1) / (warmup + 1) so step 0 is not zero.
        if (step < warmupSteps)
            return maxLr * (step + 1) / (warmupSteps + 1);
        if (kind == LearningRateScheduleKind.Constant || decaySteps is null)
            return maxLr;
        long end = decaySteps.Value;
        // 2) past the decay horizon, hold the minimum.
        if (step > end)
            return minLr;
        long decayStart = kind == LearningRateScheduleKind.WarmupStableDecay
            ? Math.Max(warmupSteps, end - (long)Math.Round(decayFraction * end))
            : warmupSteps;
        if (step < decayStart)
            return maxLr;
        double ratio = end == decayStart ? 1.0 : (double)(step - decayStart) / (end - decayStart);
        // 3) decay from maxLr to minLr.
        double coeff = kind == LearningRateScheduleKind.Cosine
            ? 0.5 * (1.0 + Math.Cos(Math.PI * ratio))   // ranges 1 → 0
            : 1.0 - ratio;
        return minLr + coeff * (maxLr - minLr);
    }
}
