using System.Buffers;
using System.Globalization;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Chooses the next token from one row of logits, as Hugging Face's <c>generate</c> does with its logits processors.
/// </summary>
/// <remarks>
/// The logits are copied once into a pooled managed buffer and filtered there; only the final uniform draw comes
/// from torch, so that a seeded <see cref="Generator"/> makes sampling reproducible. A step costs O(V) plus a sort of
/// the surviving candidates when top-k or top-p is on (a few milliseconds for V = 50k).
/// </remarks>
public static class TokenSampling
{
    /// <summary>
    /// Picks the next token. Greedy when <see cref="GenerationOptions.DoSample"/> is off: the most likely token after the
    /// repetition penalty (the lowest id among ties). Otherwise, in Hugging Face's order: repetition penalty →
    /// temperature → top-k → top-p → min-p → a draw from the remaining distribution.
    /// </summary>
    /// <param name="logits">(V) logits of one sequence, already sliced to the real vocabulary; any floating type, any device.</param>
    /// <param name="history">The tokens so far (prompt and generated), for the repetition penalty.</param>
    /// <param name="options">The generation options; they are not validated here (call <see cref="GenerationOptions.Validate"/> once).</param>
    /// <param name="generator">The random generator to draw from; null draws from torch's default generator.</param>
    /// <returns>The chosen token id, in [0, V).</returns>
    /// <exception cref="ArgumentException">The logits are not one row of floating-point values, or contain NaN or +∞.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A history token is outside [0, V).</exception>
    public static int NextToken(Tensor logits, ReadOnlySpan<int> history, GenerationOptions options, Generator? generator)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(options);
        if (logits.dim() != 1 || logits.shape[0] == 0 || !logits.is_floating_point())
        {
            throw new ArgumentException(
                Invariant($"Expected logits of shape (V) with V ≥ 1 and a floating-point type, got shape ({string.Join(", ", logits.shape)}) and type {logits.dtype}."),
                nameof(logits));
        }

        int vocabulary = checked((int)logits.shape[0]);
        float[] rented = ArrayPool<float>.Shared.Rent(vocabulary);
        try
        {
            var scores = rented.AsSpan(0, vocabulary);
            CopyLogits(logits, scores);
            ApplyRepetitionPenalty(scores, history, options.RepetitionPenalty);
            if (!options.DoSample)
            {
                return ArgMax(scores);
            }

            if (options.Temperature != 1f)
            {
                float inverse = 1f / options.Temperature;
                for (int i = 0; i < scores.Length; i++)
                {
                    scores[i] *= inverse;
                }
            }

            if (options.TopK > 0 && options.TopK < vocabulary)
            {
                KeepTopK(scores, options.TopK);
            }

            if (options.TopP < 1f)
            {
                KeepTopP(scores, options.TopP);
            }

            if (options.MinP > 0f)
            {
                KeepMinP(scores, options.MinP);
            }

            return Sample(scores, generator);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    private static void CopyLogits(Tensor logits, Span<float> scores)
    {
        using var scope = NewDisposeScope();
        var row = logits.detach().to(ScalarType.Float32).cpu().contiguous();
        row.data<float>().CopyTo(scores, 0, 0);
        bool anyFinite = false;
        for (int i = 0; i < scores.Length; i++)
        {
            anyFinite |= float.IsFinite(scores[i]);
            // −∞ is a legitimate "never" (a masked token); NaN and +∞ would poison the softmax.
            if (float.IsNaN(scores[i]) || float.IsPositiveInfinity(scores[i]))
            {
                throw new ArgumentException(
                    Invariant($"The logits contain {scores[i]} at token {i}; expected finite values or −∞ for masked tokens."),
                    nameof(logits));
            }
        }

        if (!anyFinite)
        {
            throw new ArgumentException("The logits are −∞ for every token; expected at least one finite value.", nameof(logits));
        }
    }

    /// <summary>
    /// CTRL's repetition penalty as Hugging Face applies it: once per distinct token of the history, divide a positive
    /// logit by the penalty and multiply a negative one, so the token always becomes less likely.
    /// </summary>
    private static void ApplyRepetitionPenalty(Span<float> scores, ReadOnlySpan<int> history, float penalty)
    {
        for (int i = 0; i < history.Length; i++)
        {
            if ((uint)history[i] >= (uint)scores.Length)
            {
                throw new ArgumentOutOfRangeException(nameof(history),
                    Invariant($"The history holds token {history[i]} at index {i}; expected token ids in [0, {scores.Length}) for logits of {scores.Length} tokens."));
            }
        }

        if (penalty == 1f || history.IsEmpty)
        {
            return;
        }

        bool[] seen = ArrayPool<bool>.Shared.Rent(scores.Length);
        try
        {
            Array.Clear(seen, 0, scores.Length);
            foreach (int token in history)
            {
                if (!seen[token])
                {
                    seen[token] = true;
                    float score = scores[token];
                    scores[token] = score < 0 ? score * penalty : score / penalty;
                }
            }
        }
        finally
        {
            ArrayPool<bool>.Shared.Return(seen);
        }
    }

    /// <summary>The index of the largest score; the first one among ties, as torch.argmax.</summary>
    private static int ArgMax(ReadOnlySpan<float> scores)
    {
        int best = 0;
        for (int i = 1; i < scores.Length; i++)
        {
            if (scores[i] > scores[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>Masks every score below the k-th largest (ties with it survive, as in Hugging Face's TopKLogitsWarper).</summary>
    private static void KeepTopK(Span<float> scores, int k)
    {
        float[] rented = ArrayPool<float>.Shared.Rent(scores.Length);
        try
        {
            var sorted = rented.AsSpan(0, scores.Length);
            scores.CopyTo(sorted);
            sorted.Sort();                                        // ascending
            float threshold = sorted[scores.Length - k];
            for (int i = 0; i < scores.Length; i++)
            {
                if (scores[i] < threshold)
                {
                    scores[i] = float.NegativeInfinity;
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Keeps the smallest set of most likely tokens whose probabilities sum to at least <paramref name="p"/>: the most
    /// likely token always, then the next ones while the running sum is below p.
    /// </summary>
    private static void KeepTopP(Span<float> scores, float p)
    {
        int[] rentedIndices = ArrayPool<int>.Shared.Rent(scores.Length);
        float[] rentedKeys = ArrayPool<float>.Shared.Rent(scores.Length);
        try
        {
            // Only tokens that survived earlier filters take part; sort them by descending score.
            int count = 0;
            for (int i = 0; i < scores.Length; i++)
            {
                if (!float.IsNegativeInfinity(scores[i]))
                {
                    rentedIndices[count] = i;
                    rentedKeys[count] = -scores[i];
                    count++;
                }
            }

            var indices = rentedIndices.AsSpan(0, count);
            var keys = rentedKeys.AsSpan(0, count);
            keys.Sort(indices);                                   // most likely first

            double max = -keys[0], total = 0;
            foreach (float key in keys)
            {
                total += Math.Exp(-key - max);
            }

            double cumulative = 0;
            int kept = 0;
            while (kept < count && cumulative < p)
            {
                cumulative += Math.Exp(-keys[kept] - max) / total;
                kept++;
            }

            for (int i = kept; i < count; i++)
            {
                scores[indices[i]] = float.NegativeInfinity;
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(rentedIndices);
            ArrayPool<float>.Shared.Return(rentedKeys);
        }
    }

    /// <summary>
    /// Masks tokens whose probability is below <paramref name="minP"/> times the top token's. In logits:
    /// pᵢ &lt; minP·pₘₐₓ ⇔ sᵢ &lt; sₘₐₓ + ln(minP), with no softmax needed.
    /// </summary>
    private static void KeepMinP(Span<float> scores, float minP)
    {
        float max = scores[ArgMax(scores)];
        double threshold = max + Math.Log(minP);
        for (int i = 0; i < scores.Length; i++)
        {
            if (scores[i] < threshold)
            {
                scores[i] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>Draws a token from softmax(scores) by inverting the cumulative distribution at one uniform draw.</summary>
    private static int Sample(ReadOnlySpan<float> scores, Generator? generator)
    {
        double max = scores[ArgMax(scores)];
        double total = 0;
        foreach (float score in scores)
        {
            total += Math.Exp(score - max);                      // exp(−∞) = 0: masked tokens weigh nothing
        }

        double u;
        using (var draw = rand(1, dtype: ScalarType.Float64, generator: generator))
        {
            u = draw.item<double>() * total;                     // uniform in [0, total)
        }

        int last = 0;
        double cumulative = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            double weight = Math.Exp(scores[i] - max);
            if (weight == 0)
            {
                continue;
            }

            cumulative += weight;
            last = i;
            if (u < cumulative)
            {
                return i;
            }
        }

        return last;                                              // rounding left u at the very top: the last candidate
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
