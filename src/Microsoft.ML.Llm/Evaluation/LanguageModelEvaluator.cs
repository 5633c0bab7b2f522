using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>Loss, perplexity and bits per byte of a model on token blocks (validation in Fit, and Evaluate).</summary>
internal static class LanguageModelEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="rows"/> (null = every row, in order) in batches, in eval mode without gradients, on the
    /// model's device, in the model's <see cref="GptModel.Precision"/>.
    /// Bits per byte = total nats / (ln 2 · total UTF-8 bytes of the predicted tokens) (The Pile; lm-evaluation-harness).
    /// </summary>
    public static LanguageModelMetrics Evaluate(GptModel model, TokenBlocks blocks, int batchSize, IReadOnlyList<int>? rows,
        LmTokenizer? tokenizer, bool documentMasking) =>
        Metrics(Sums(model, blocks, batchSize, rows, tokenizer, documentMasking), tokenizer is not null);

    /// <summary>The metrics of summed nats, targets and target bytes (bytes unused without a tokenizer).</summary>
    public static LanguageModelMetrics Metrics(EvaluationSums sums, bool withBytes)
    {
        var (nats, tokens, bytes) = sums;
        double mean = tokens == 0 ? double.NaN : nats / tokens;
        double bpb = !withBytes || bytes == 0 ? double.NaN : nats / (Math.Log(2) * bytes);
        return new LanguageModelMetrics(mean, Math.Exp(mean), bpb, (long)tokens);
    }

    /// <summary>
    /// The total nats, predicted targets and their UTF-8 bytes over <paramref name="rows"/>: what data-parallel
    /// validation sums across ranks before <see cref="Metrics"/> (each rank evaluates its share of the rows).
    /// </summary>
    public static EvaluationSums Sums(GptModel model, TokenBlocks blocks, int batchSize, IReadOnlyList<int>? rows,
        LmTokenizer? tokenizer, bool documentMasking)
    {
        bool wasTraining = model.training;
        model.eval();
        var device = model.Device;
        try
        {
            using var noGrad = torch.no_grad();
            using var autocast = Autocast.Enable(model.Precision);   // the model's precision; logits come back in fp32
            double nats = 0;
            long tokens = 0, bytes = 0;
            int total = rows?.Count ?? blocks.Count;
            var batch = new int[batchSize];
            for (int start = 0; start < total; start += batchSize)
            {
                int n = Math.Min(batchSize, total - start);
                for (int i = 0; i < n; i++)
                    batch[i] = rows is null ? start + i : rows[start + i];
                var batchRows = batch.AsSpan(0, n);
                using var scope = NewDisposeScope();
                var (x, y, d) = blocks.Batch(batchRows, device, documentMasking);
                var logits = model.forward(x, d);
                var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), y.view(-1), ignore_index: -1, reduction: nn.Reduction.Sum);
                nats += loss.to(ScalarType.Float64).item<double>();
                tokens += blocks.CountTargets(batchRows, documentMasking);
                if (tokenizer is not null)
                    bytes += blocks.CountTargetBytes(tokenizer, batchRows, documentMasking);
            }
            return new EvaluationSums(nats, tokens, bytes);
        }
        finally
        {
            if (wasTraining)
                model.train();
        }
    }

    /// <summary>
    /// The rows of a <paramref name="batches"/>-batch estimate: a fixed random sample (seeded, the same at every
    /// evaluation), so the estimate is unbiased like nanoGPT's random batches yet comparable between steps.
    /// Null (every row) when the set is not larger than the sample.
    /// </summary>
    public static int[]? SampleRows(int count, int batchSize, int? batches, int seed)
    {
        if (batches is not { } b || (long)b * batchSize >= count)
            return null;
        var order = Enumerable.Range(0, count).ToArray();
        new Random(seed).Shuffle(order);
        var sample = order[..(b * batchSize)];
        Array.Sort(sample);
        return sample;
    }
}

/// <summary>Summed negative log-likelihood (nats), predicted targets and their UTF-8 bytes.</summary>
internal readonly record struct EvaluationSums(double Nats, double Tokens, double Bytes);
