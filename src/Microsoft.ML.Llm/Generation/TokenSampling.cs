using System.Buffers;
using System.Runtime.InteropServices;
using static System.FormattableString;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Chooses the next token from one row of logits, as Hugging Face's <c>generate</c> does with its logits processors.
/// </summary>
/// <remarks>
/// The logits are copied once into a pooled managed buffer and filtered there; only the final uniform draw comes
/// from torch, so that a seeded <see cref="Generator"/> makes sampling reproducible. A step costs O(V) plus a sort of
/// the top-p candidates, small next to a forward step of the model (measured figures: benchmarks/README.md, "Token sampling").
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
        => NextToken(logits, history, promptLength: 0, options, generator);

    /// <summary>
    /// Picks the next token after the logits processors of <paramref name="options"/>: repetition penalty, presence and
    /// frequency penalties (over the generated tokens, those after <paramref name="promptLength"/>), no-repeat n-grams,
    /// bad words, the minimum length (end-of-sequence ids banned before <see cref="GenerationOptions.MinNewTokens"/>);
    /// then greedy choice, or temperature → top-k → top-p → min-p → a draw when sampling.
    /// </summary>
    /// <param name="logits">(V) logits of one sequence, already sliced to the real vocabulary; any floating type, any device.</param>
    /// <param name="history">The tokens so far: the prompt, then the generated ones.</param>
    /// <param name="promptLength">How many tokens of <paramref name="history"/> are the prompt.</param>
    /// <param name="options">The generation options; they are not validated here (call <see cref="GenerationOptions.Validate"/> once).</param>
    /// <param name="generator">The random generator to draw from; null draws from torch's default generator.</param>
    /// <returns>The chosen token id, in [0, V).</returns>
    public static int NextToken(Tensor logits, ReadOnlySpan<int> history, int promptLength, GenerationOptions options, Generator? generator)
    {
        ArgumentNullException.ThrowIfNull(logits);
        ArgumentNullException.ThrowIfNull(options);
        if (logits.dim() != 1 || logits.shape[0] == 0 || !logits.is_floating_point())
        {
            throw new ArgumentException(
                Invariant($"Expected logits of shape (V) with V ≥ 1 and a floating-point type, got shape ({string.Join(", ", logits.shape)}) and type {logits.dtype}."),
                nameof(logits));
        }

        if (promptLength < 0 || promptLength > history.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(promptLength), Invariant($"The prompt length is {promptLength}; expected 0 to the history's length {history.Length}."));
        }

        int vocabulary = checked((int)logits.shape[0]);
        float[] rented = ArrayPool<float>.Shared.Rent(vocabulary);
        try
        {
            var scores = rented.AsSpan(0, vocabulary);
            CopyLogits(logits, scores);
            CheckHistory(history, vocabulary);
            Process(scores, history, promptLength, options);
            return Choose(scores, options, generator);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>Checks that every history token is a valid index into <paramref name="vocabulary"/> logits.</summary>
    internal static void CheckHistory(ReadOnlySpan<int> history, int vocabulary)
    {
        for (int i = 0; i < history.Length; i++)
        {
            if ((uint)history[i] >= (uint)vocabulary)
            {
                throw new ArgumentOutOfRangeException(nameof(history),
                    Invariant($"The history holds token {history[i]} at index {i}; expected token ids in [0, {vocabulary}) for logits of {vocabulary} tokens."));
            }
        }
    }

    /// <summary>
    /// The logits processors, in place, in Hugging Face's order: repetition penalty → presence/frequency penalties →
    /// no-repeat n-grams → bad words → minimum new tokens. Shared by greedy decoding, sampling and beam search.
    /// </summary>
    internal static void Process(Span<float> scores, ReadOnlySpan<int> history, int promptLength, GenerationOptions options)
    {
        ApplyRepetitionPenalty(scores, history, options.RepetitionPenalty);
        ApplyPresenceAndFrequencyPenalties(scores, history[promptLength..], options.PresencePenalty, options.FrequencyPenalty);
        if (options.NoRepeatNgramSize > 0)
        {
            BanRepeatedNgrams(scores, history, options.NoRepeatNgramSize);
        }

        foreach (var word in options.BadWordsIds)
        {
            BanBadWord(scores, history, word);
        }

        if (history.Length - promptLength < options.MinNewTokens)
        {
            foreach (int eos in options.EosTokenIds)
            {
                if ((uint)eos < (uint)scores.Length)
                {
                    scores[eos] = float.NegativeInfinity;
                }
            }
        }
    }

    /// <summary>Greedy choice, or temperature → top-k → top-p → min-p → a draw, on processed scores (modified in place).</summary>
    internal static int Choose(Span<float> scores, GenerationOptions options, Generator? generator)
    {
        if (!options.DoSample)
        {
            return ArgMax(scores);
        }

        Warp(scores, options, minKeep: 1);
        return Sample(scores, generator);
    }

    /// <summary>
    /// The warpers of sampling, in place, in Hugging Face's order: temperature → top-k → top-p → min-p. Each filter keeps
    /// at least <paramref name="minKeep"/> tokens (HF's <c>min_tokens_to_keep</c>: 1 when sampling one sequence; with
    /// beams, one more than the end-of-sequence ids and at least 2, so a beam can always continue).
    /// </summary>
    internal static void Warp(Span<float> scores, GenerationOptions options, int minKeep)
    {
        if (options.Temperature != 1f)
        {
            float inverse = 1f / options.Temperature;
            for (int i = 0; i < scores.Length; i++)
            {
                scores[i] *= inverse;
            }
        }

        int k = Math.Max(options.TopK, minKeep);
        if (options.TopK > 0 && k < scores.Length)
        {
            KeepTopK(scores, k);
        }

        if (options.TopP < 1f)
        {
            KeepTopP(scores, options.TopP, minKeep);
        }

        if (options.MinP > 0f)
        {
            KeepMinP(scores, options.MinP, minKeep);
        }
    }

    /// <summary>
    /// Draws <paramref name="count"/> distinct indices (fewer when fewer scores are finite), each draw from the softmax of
    /// the scores not yet drawn: sampling without replacement, as <c>torch.multinomial(softmax(scores), count)</c>. One
    /// uniform number per draw from <paramref name="generator"/>; returned in draw order.
    /// </summary>
    internal static int[] DrawWithoutReplacement(ReadOnlySpan<double> scores, int count, Generator? generator)
    {
        int n = scores.Length;
        int available = 0;
        foreach (double score in scores)
        {
            available += double.IsNegativeInfinity(score) ? 0 : 1;
        }

        count = Math.Min(count, available);
        if (count == 0)
        {
            return [];
        }

        double[] uniform;
        using (var draws = rand(count, dtype: ScalarType.Float64, generator: generator))
        {
            uniform = draws.data<double>().ToArray();
        }

        double[] rentedWeights = ArrayPool<double>.Shared.Rent(n);
        bool[] rentedTaken = ArrayPool<bool>.Shared.Rent(n);
        try
        {
            var weights = rentedWeights.AsSpan(0, n);            // exp(s − max) of the scores not drawn yet; drawn and −∞: 0
            var taken = rentedTaken.AsSpan(0, n);
            weights.Clear();
            taken.Clear();
            return Draw(scores, weights, taken, uniform);
        }
        finally
        {
            ArrayPool<double>.Shared.Return(rentedWeights);
            ArrayPool<bool>.Shared.Return(rentedTaken);
        }
    }

    /// <summary>The draws of <see cref="DrawWithoutReplacement"/>, one per uniform number, on cleared buffers.</summary>
    private static int[] Draw(ReadOnlySpan<double> scores, Span<double> weights, Span<bool> taken, double[] uniform)
    {
        int n = scores.Length, count = uniform.Length;
        var drawn = new int[count];
        bool first = true;
        for (int d = 0; d < count; d++)
        {
            double total = 0;
            foreach (double weight in weights)
            {
                total += weight;
            }

            // Weights relative to the largest score left, recomputed when what is left has become too small to compare
            // precisely (at the start, and after the likely candidates are drawn from a very peaked distribution).
            if (first || !(total > 1e-200))
            {
                first = false;
                double max = double.NegativeInfinity;
                for (int i = 0; i < n; i++)
                {
                    if (!taken[i] && scores[i] > max)
                    {
                        max = scores[i];
                    }
                }

                total = 0;
                for (int i = 0; i < n; i++)
                {
                    weights[i] = taken[i] || double.IsNegativeInfinity(scores[i]) ? 0 : Math.Exp(scores[i] - max);
                    total += weights[i];
                }
            }

            double u = uniform[d] * total, cumulative = 0;
            int pick = -1;
            for (int i = 0; i < n; i++)
            {
                if (weights[i] == 0)
                {
                    continue;
                }

                cumulative += weights[i];
                pick = i;
                if (u < cumulative)
                {
                    break;
                }
            }

            drawn[d] = pick;                                     // rounding left u at the very top: the last candidate
            taken[pick] = true;
            weights[pick] = 0;
        }

        return drawn;
    }

    /// <summary>
    /// OpenAI's penalties: logit −= count · frequency + (count &gt; 0) · presence, with counts over <paramref name="generated"/>.
    /// </summary>
    internal static void ApplyPresenceAndFrequencyPenalties(Span<float> scores, ReadOnlySpan<int> generated, float presence, float frequency)
    {
        if ((presence == 0f && frequency == 0f) || generated.IsEmpty)
        {
            return;
        }

        var counts = new Dictionary<int, int>();
        foreach (int token in generated)
        {
            counts[token] = counts.GetValueOrDefault(token) + 1;
        }

        foreach (var (token, count) in counts)
        {
            scores[token] -= count * frequency + presence;
        }
    }

    /// <summary>
    /// Hugging Face's <c>NoRepeatNGramLogitsProcessor</c>: bans every token that, appended to the history, would repeat an
    /// n-gram already in it (the last n − 1 tokens are compared with every earlier (n − 1)-gram).
    /// </summary>
    internal static void BanRepeatedNgrams(Span<float> scores, ReadOnlySpan<int> history, int n)
    {
        if (history.Length + 1 < n)
        {
            return;
        }

        var prefix = history[(history.Length - n + 1)..];          // the n − 1 tokens the next one would extend
        for (int start = 0; start + n <= history.Length; start++)
        {
            if (history.Slice(start, n - 1).SequenceEqual(prefix))
            {
                scores[history[start + n - 1]] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>Hugging Face's <c>NoBadWordsLogitsProcessor</c> for one banned sequence.</summary>
    private static void BanBadWord(Span<float> scores, ReadOnlySpan<int> history, IList<int> word)
    {
        int last = word[^1];
        if ((uint)last >= (uint)scores.Length)
        {
            return;
        }

        int before = word.Count - 1;
        if (before > history.Length)
        {
            return;
        }

        for (int i = 0; i < before; i++)
        {
            if (history[history.Length - before + i] != word[i])
            {
                return;
            }
        }

        scores[last] = float.NegativeInfinity;
    }

    /// <summary>log softmax of <paramref name="scores"/> in place (−∞ stays −∞), in double precision for the sum.</summary>
    internal static void LogSoftmax(Span<float> scores)
    {
        float max = scores[ArgMax(scores)];
        double total = 0;
        foreach (float s in scores)
        {
            total += float.IsNegativeInfinity(s) ? 0 : Math.Exp(s - max);
        }

        float logTotal = (float)(max + Math.Log(total));
        for (int i = 0; i < scores.Length; i++)
        {
            scores[i] -= logTotal;
        }
    }

    internal static void CopyLogits(Tensor logits, Span<float> scores)
    {
        using var scope = NewDisposeScope();
        var row = logits.detach().to(ScalarType.Float32).cpu().contiguous();
        MemoryMarshal.Cast<byte, float>(row.bytes).CopyTo(scores);  // one memcpy of the row's storage
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
    internal static int ArgMax(ReadOnlySpan<float> scores)
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
    internal static void KeepTopK(Span<float> scores, int k)
    {
        float threshold = KthLargest(scores, k);
        for (int i = 0; i < scores.Length; i++)
        {
            if (scores[i] < threshold)
            {
                scores[i] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>The k-th largest score (1 ≤ k ≤ length), in O(V); −∞ when k exceeds the length.</summary>
    private static float KthLargest(ReadOnlySpan<float> scores, int k)
    {
        if (k > scores.Length)
        {
            return float.NegativeInfinity;
        }

        float[] rented = ArrayPool<float>.Shared.Rent(scores.Length);
        try
        {
            var copy = rented.AsSpan(0, scores.Length);
            scores.CopyTo(copy);
            return SelectAscending(copy, scores.Length - k);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Quickselect (Hoare): reorders <paramref name="values"/> in place and returns the value that would sit at index
    /// <paramref name="n"/> if they were sorted ascending. O(V) on average, against O(V log V) for a sort.
    /// </summary>
    private static float SelectAscending(Span<float> values, int n)
    {
        int left = 0, right = values.Length - 1;
        while (left < right)
        {
            // Median of three as pivot: robust to already sorted logits.
            int middle = left + (right - left) / 2;
            float a = values[left], b = values[middle], c = values[right];
            float pivot = Math.Max(Math.Min(a, b), Math.Min(Math.Max(a, b), c));
            int i = left, j = right;
            while (i <= j)
            {
                while (values[i] < pivot)
                {
                    i++;
                }

                while (values[j] > pivot)
                {
                    j--;
                }

                if (i <= j)
                {
                    (values[i], values[j]) = (values[j], values[i]);
                    i++;
                    j--;
                }
            }

            // Now values[left..j] ≤ pivot ≤ values[i..right], and anything between equals the pivot.
            if (n <= j)
            {
                right = j;
            }
            else if (n >= i)
            {
                left = i;
            }
            else
            {
                return values[n];
            }
        }

        return values[n];
    }

    /// <summary>
    /// Keeps the smallest set of most likely tokens whose probabilities sum to at least <paramref name="p"/>: the most
    /// likely token always, then the next ones while the running sum is below p; and the <paramref name="minKeep"/> most
    /// likely tokens whatever their mass (ties with the last of them kept too).
    /// </summary>
    /// <remarks>
    /// Sorting all V tokens would cost O(V log V) per generated token, more than the rest of the step. The nucleus is usually
    /// small, so first find a probability cut whose tokens already hold mass p (a few O(V) passes, lowering the cut
    /// 16× each time); the nucleus lies within those tokens, and only they are sorted.
    /// </remarks>
    internal static void KeepTopP(Span<float> scores, float p, int minKeep = 1)
    {
        double[] rentedWeights = ArrayPool<double>.Shared.Rent(scores.Length);
        int[] rentedIndices = ArrayPool<int>.Shared.Rent(scores.Length);
        double[] rentedKeys = ArrayPool<double>.Shared.Rent(scores.Length);
        try
        {
            // Unnormalised probabilities exp(s − max): the top token weighs 1, masked ones 0.
            var weights = rentedWeights.AsSpan(0, scores.Length);
            double total = UnnormalisedSoftmax(scores, weights);

            double target = p * total, cut = 1;
            while (cut > 0)
            {
                double mass = 0;
                foreach (double weight in weights)
                {
                    mass += weight >= cut ? weight : 0;
                }

                if (mass >= target)
                {
                    break;
                }

                cut = cut > 1e-300 ? cut / 16 : 0;
            }

            // Sort the candidates by descending weight and keep the shortest prefix reaching p.
            int count = 0;
            for (int i = 0; i < weights.Length; i++)
            {
                if (weights[i] > 0 && weights[i] >= cut)
                {
                    rentedIndices[count] = i;
                    rentedKeys[count] = -weights[i];
                    count++;
                }
            }

            var indices = rentedIndices.AsSpan(0, count);
            rentedKeys.AsSpan(0, count).Sort(indices);
            double cumulative = 0;
            int kept = 0;
            while (kept < count && cumulative < target)
            {
                cumulative += weights[indices[kept]];
                kept++;
            }

            // Everything outside the kept prefix goes: the sorted tail and every token below the cut.
            var keep = rentedKeys.AsSpan(0, scores.Length);          // reused as a mark per token
            keep.Clear();
            foreach (int index in indices[..kept])
            {
                keep[index] = 1;
            }

            float protect = minKeep > 1 ? KthLargest(scores, minKeep) : float.PositiveInfinity;
            for (int i = 0; i < scores.Length; i++)
            {
                if (keep[i] == 0 && scores[i] < protect)
                {
                    scores[i] = float.NegativeInfinity;
                }
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(rentedWeights);
            ArrayPool<int>.Shared.Return(rentedIndices);
            ArrayPool<double>.Shared.Return(rentedKeys);
        }
    }

    /// <summary>
    /// Masks tokens whose probability is below <paramref name="minP"/> times the top token's. In logits:
    /// pᵢ &lt; minP·pₘₐₓ ⇔ sᵢ &lt; sₘₐₓ + ln(minP), with no softmax needed. The <paramref name="minKeep"/> most likely
    /// tokens always stay.
    /// </summary>
    internal static void KeepMinP(Span<float> scores, float minP, int minKeep = 1)
    {
        float max = scores[ArgMax(scores)];
        double threshold = Math.Min(max + Math.Log(minP), minKeep > 1 ? KthLargest(scores, minKeep) : double.PositiveInfinity);
        for (int i = 0; i < scores.Length; i++)
        {
            if (scores[i] < threshold)
            {
                scores[i] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>
    /// Writes exp(s − max) for every score (computed once; masked tokens, −∞, weigh exactly 0; the top token 1) and
    /// returns their sum: softmax without the division, which sampling never needs.
    /// </summary>
    private static double UnnormalisedSoftmax(ReadOnlySpan<float> scores, Span<double> weights)
    {
        float max = scores[ArgMax(scores)];
        double total = 0;
        for (int i = 0; i < scores.Length; i++)
        {
            weights[i] = float.IsNegativeInfinity(scores[i]) ? 0 : Math.Exp(scores[i] - max);
            total += weights[i];
        }

        return total;
    }

    /// <summary>Draws a token from softmax(scores) by inverting the cumulative distribution at one uniform draw.</summary>
    private static int Sample(ReadOnlySpan<float> scores, Generator? generator)
    {
        double[] rented = ArrayPool<double>.Shared.Rent(scores.Length);
        try
        {
            var weights = rented.AsSpan(0, scores.Length);
            double total = UnnormalisedSoftmax(scores, weights);

            double u;
            using (var draw = rand(1, dtype: ScalarType.Float64, generator: generator))
            {
                u = draw.item<double>() * total;                 // uniform in [0, total)
            }

            int last = 0;
            double cumulative = 0;
            for (int i = 0; i < weights.Length; i++)
            {
                if (weights[i] == 0)
                {
                    continue;
                }

                cumulative += weights[i];
                last = i;
                if (u < cumulative)
                {
                    return i;
                }
            }

            return last;                                          // rounding left u at the very top: the last candidate
        }
        finally
        {
            ArrayPool<double>.Shared.Return(rented);
        }
    }
}
