using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>Loss, perplexity and bits per byte of a model on token blocks (validation in Fit, and Evaluate).</summary>
internal static class LanguageModelEvaluator
{
    /// <summary>
    /// Evaluates <paramref name="maxBatches"/> batches (null = all) in row order, in eval mode without gradients.
    /// Bits per byte = total nats / (ln 2 · total UTF-8 bytes of the predicted tokens) (The Pile; lm-evaluation-harness).
    /// </summary>
    public static LanguageModelMetrics Evaluate(GptModel model, TokenBlocks blocks, int batchSize, int? maxBatches,
        LmTokenizer? tokenizer, Device device, bool documentMasking)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = torch.no_grad();
            double nats = 0;
            long tokens = 0, bytes = 0;
            int batches = (blocks.Count + batchSize - 1) / batchSize;
            if (maxBatches is { } m) batches = Math.Min(batches, m);
            var rows = new int[batchSize];
            for (int b = 0; b < batches; b++)
            {
                int start = b * batchSize, n = Math.Min(batchSize, blocks.Count - start);
                for (int i = 0; i < n; i++) rows[i] = start + i;
                var batchRows = rows.AsSpan(0, n);
                using var scope = NewDisposeScope();
                var (x, y, d) = blocks.Batch(batchRows, device, documentMasking);
                var logits = model.forward(x, d);
                var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), y.view(-1), ignore_index: -1, reduction: nn.Reduction.Sum);
                nats += loss.to(ScalarType.Float64).item<double>();
                tokens += blocks.CountTargets(batchRows);
                if (tokenizer is not null) bytes += blocks.CountTargetBytes(tokenizer, batchRows);
            }
            double mean = tokens == 0 ? double.NaN : nats / tokens;
            double bpb = tokenizer is null || bytes == 0 ? double.NaN : nats / (Math.Log(2) * bytes);
            return new LanguageModelMetrics(mean, Math.Exp(mean), bpb, tokens);
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
