using Microsoft.ML.SearchSpace;

namespace Microsoft.ML.Llm.Sweeping;

/// <summary>
/// A ready search space over the whole language-model pipeline, for <c>new SearchSpace&lt;CausalLmSearchSpace&gt;()</c>
/// or <c>mlContext.Llm().Sweep&lt;CausalLmSearchSpace&gt;(...)</c>: the trainer's learning rate, min-LR ratio, warmup,
/// weight decay, batch size, gradient accumulation, β2 and precision, the model's layers, width, heads, context length
/// and dropout, and the pipeline's tokenizer vocabulary size and packing mode. Initial values are nanoGPT's
/// (<c>train.py</c>; 4 layers × 128 wide for a CPU). Copy it and narrow the ranges for a real sweep: every option here
/// multiplies the trials a grid or a model-based tuner needs.
/// </summary>
public sealed class CausalLmSearchSpace
{
    /// <summary>Peak learning rate.</summary>
    [Range(1e-4, 1e-2, init: 6e-4, logBase: true)]
    public double LearningRate { get; set; } = 6e-4;

    /// <summary>The cosine floor as a fraction of the peak (nanoGPT: 0.1).</summary>
    [Range(0.01, 0.5, init: 0.1, logBase: true)]
    public double MinLearningRateRatio { get; set; } = 0.1;

    /// <summary>Linear warmup steps.</summary>
    [Range(0, 500, init: 100)]
    public int WarmupSteps { get; set; } = 100;

    /// <summary>Decoupled weight decay.</summary>
    [Range(1e-3, 0.3, init: 0.1, logBase: true)]
    public double WeightDecay { get; set; } = 0.1;

    /// <summary>Blocks per micro-batch.</summary>
    [Choice(new object[] { 4, 8, 12, 16, 32 }, 12)]
    public int BatchSize { get; set; } = 12;

    /// <summary>Micro-batches per optimizer step.</summary>
    [Choice(new object[] { 1, 2, 4 }, 1)]
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>AdamW β2.</summary>
    [Choice(new object[] { 0.95, 0.99 }, 0.95)]
    public double Beta2 { get; set; } = 0.95;

    /// <summary>Training precision.</summary>
    [Choice(new object[] { TrainingPrecision.Fp32, TrainingPrecision.Bf16Mixed }, TrainingPrecision.Fp32)]
    public TrainingPrecision Precision { get; set; } = TrainingPrecision.Fp32;

    /// <summary>Transformer blocks.</summary>
    [Choice(new object[] { 2, 4, 6, 8 }, 4)]
    public int LayerCount { get; set; } = 4;

    /// <summary>Model width (a multiple of every head count below).</summary>
    [Choice(new object[] { 64, 128, 256, 384 }, 128)]
    public int EmbeddingSize { get; set; } = 128;

    /// <summary>Attention heads.</summary>
    [Choice(new object[] { 2, 4, 8 }, 4)]
    public int HeadCount { get; set; } = 4;

    /// <summary>Context length (model and packing).</summary>
    [Choice(new object[] { 64, 128, 256 }, 64)]
    public int ContextLength { get; set; } = 64;

    /// <summary>Dropout.</summary>
    [Range(0.0, 0.3, init: 0.0)]
    public double Dropout { get; set; }

    /// <summary>BPE vocabulary size of the tokenizer trained in Fit.</summary>
    [Range(256, 16384, init: 8192, logBase: true)]
    public int VocabularySize { get; set; } = 8192;

    /// <summary>How documents become blocks.</summary>
    [Choice(new object[] { PackingMode.Concatenate, PackingMode.BestFit }, PackingMode.Concatenate)]
    public PackingMode Packing { get; set; } = PackingMode.Concatenate;

    /// <summary>The tokenizer options of this point (BPE trained in Fit with <see cref="VocabularySize"/>).</summary>
    public LmTokenizerOptions TokenizerOptions() => new() { Kind = LmTokenizerKind.Bpe, VocabularySize = VocabularySize };

    /// <summary>The packing options of this point.</summary>
    public TokenPackerOptions PackerOptions() => new() { ContextLength = ContextLength, Mode = Packing };

    /// <summary>
    /// Sets this point's values on <paramref name="options"/> (its other settings — columns, budgets, evaluation — are
    /// kept) and returns it; the model is <paramref name="baseModel"/> (default <see cref="GptConfig.ShakespeareChar"/>)
    /// with this point's layers, width, heads, context length and dropout.
    /// </summary>
    public CausalLmTrainerOptions ApplyTo(CausalLmTrainerOptions options, GptConfig? baseModel = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.LearningRate = LearningRate;
        options.MinLearningRate = LearningRate * MinLearningRateRatio;
        options.WarmupSteps = WarmupSteps;
        options.WeightDecay = WeightDecay;
        options.BatchSize = BatchSize;
        options.GradientAccumulationSteps = GradientAccumulationSteps;
        options.Beta2 = Beta2;
        options.Precision = Precision;
        options.Model = (baseModel ?? GptConfig.ShakespeareChar()) with
        {
            LayerCount = LayerCount,
            EmbeddingSize = EmbeddingSize,
            HeadCount = HeadCount,
            ContextLength = ContextLength,
            Dropout = Dropout,
        };
        return options;
    }
}
