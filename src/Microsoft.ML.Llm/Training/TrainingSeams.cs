using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

// The four places where training features plug into TrainingRun, chosen in TrainingRun's constructor; the step calls
// the seam at the point where the feature acts. Precision has its implementations (fp32, bf16, fp16 + loss scale); the
// other three have one each today.

/// <summary>
/// The numeric precision of a training step: <see cref="FullPrecision"/> (fp32) or <see cref="MixedPrecision"/>
/// (bf16 autocast; fp16 autocast with a dynamic loss scale). <see cref="PrecisionPolicies.For"/> picks one.
/// </summary>
/// <remarks>
/// The model consults the policy through <see cref="Autocast"/>: inside <see cref="Autocast()"/>'s scope its linear
/// layers and attention cast their inputs and fp32 weights to the compute dtype, norms and the logits come back in fp32
/// (PyTorch's autocast op lists; docs/ARCHITECTURE.md §5). A loss-scaling policy also owns <see cref="Backward"/> and
/// <see cref="UnscaleGradients"/>.
/// </remarks>
internal interface IPrecisionPolicy
{
    /// <summary>The precision this policy trains in.</summary>
    TrainingPrecision Precision { get; }

    /// <summary>A scope around the forward pass and loss, where the model's matmuls run in bf16/fp16.</summary>
    IDisposable Autocast();

    /// <summary>Backpropagates <paramref name="loss"/>; a loss-scaling policy multiplies it by its scale first.</summary>
    void Backward(Tensor loss);

    /// <summary>
    /// Called once per step after all micro-batches, before clipping: a loss-scaling policy divides the gradients by
    /// its scale, updates the scale and returns false when one of them is not finite (the optimizer step is then skipped).
    /// </summary>
    bool UnscaleGradients(IReadOnlyList<Parameter> parameters);
}

/// <summary>Chooses the precision policy of a run.</summary>
internal static class PrecisionPolicies
{
    /// <summary>The policy for <paramref name="precision"/>; fp16 scales the loss with <paramref name="scaler"/>
    /// (the run's <see cref="TrainingState.LossScaler"/>, so checkpoints carry its state).</summary>
    public static IPrecisionPolicy For(TrainingPrecision precision, GradScaler scaler) => precision switch
    {
        TrainingPrecision.Bf16Mixed => new MixedPrecision(precision, scaler: null),
        TrainingPrecision.Fp16Mixed => new MixedPrecision(precision, scaler),
        _ => FullPrecision.Instance,
    };
}

/// <summary>fp32 forward, backward and optimizer step: no autocast, no loss scale.</summary>
internal sealed class FullPrecision : IPrecisionPolicy
{
    public static readonly FullPrecision Instance = new();

    private FullPrecision()
    {
    }

    public TrainingPrecision Precision => TrainingPrecision.Fp32;

    public IDisposable Autocast() => Microsoft.ML.Llm.Autocast.Enable(TrainingPrecision.Fp32);

    public void Backward(Tensor loss) => loss.backward();

    public bool UnscaleGradients(IReadOnlyList<Parameter> parameters) => true;
}

/// <summary>
/// Autocast in bf16 or fp16 with fp32 master weights and AdamW moments. bf16 keeps fp32's exponent range, so its
/// gradients need no scaling; fp16 underflows below 6e-8, so its loss is multiplied by a dynamic scale before
/// backward and the gradients divided by it before clipping (<see cref="GradScaler"/>).
/// </summary>
internal sealed class MixedPrecision(TrainingPrecision precision, GradScaler? scaler) : IPrecisionPolicy
{
    public TrainingPrecision Precision => precision;

    public IDisposable Autocast() => Microsoft.ML.Llm.Autocast.Enable(precision);

    public void Backward(Tensor loss) => (scaler is null ? loss : scaler.ScaleLoss(loss)).backward();

    public bool UnscaleGradients(IReadOnlyList<Parameter> parameters) => scaler?.UnscaleAndUpdate(parameters) ?? true;
}

/// <summary>
/// Dynamic loss scaling with PyTorch's <c>torch.amp.GradScaler</c> semantics and defaults: the loss is multiplied by
/// <see cref="Scale"/> (initially 2^16) before backward, so small fp16 gradients do not flush to zero; before clipping
/// the gradients are divided by it (clipping sees true gradients); a step whose gradients hold an inf or NaN is skipped
/// and the scale halves; after <see cref="GrowthInterval"/> finite steps in a row the scale doubles.
/// </summary>
internal sealed class GradScaler
{
    /// <summary>PyTorch's <c>init_scale</c>: 2^16.</summary>
    public const double InitialScale = 65536.0;

    /// <summary>PyTorch's <c>growth_factor</c>.</summary>
    public const double GrowthFactor = 2.0;

    /// <summary>PyTorch's <c>backoff_factor</c>.</summary>
    public const double BackoffFactor = 0.5;

    /// <summary>PyTorch's <c>growth_interval</c>: finite steps in a row before the scale grows.</summary>
    public const int GrowthInterval = 2000;

    /// <summary>The current loss scale (powers of two keep scaling and unscaling exact).</summary>
    public double Scale { get; set; } = InitialScale;

    /// <summary>Finite steps since the scale last changed (PyTorch's growth tracker).</summary>
    public int GoodSteps { get; set; }

    /// <summary>The loss times the scale, for backward.</summary>
    public Tensor ScaleLoss(Tensor loss)
    {
        using var scale = Scale.ToScalar();   // held: see HeldScalar
        return loss.mul(scale);
    }

    /// <summary>
    /// Divides every gradient by the scale in place, then updates the scale: ×0.5 when some gradient is not finite
    /// (and the step must be skipped), ×2 after <see cref="GrowthInterval"/> finite steps. Returns whether every gradient
    /// is finite. One host read per step (the finite flag), as PyTorch's <c>_amp_foreach_non_finite_check_and_unscale_</c>.
    /// </summary>
    public bool UnscaleAndUpdate(IReadOnlyList<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        using var inverse = (1.0 / Scale).ToScalar();   // held: see HeldScalar
        var finite = new List<Tensor>(parameters.Count);
        foreach (var p in parameters)
        {
            if (p.grad is not { } g)
                continue;
            g.mul_(inverse);
            finite.Add(g.isfinite().all());
        }

        bool allFinite = finite.Count == 0 || stack(finite).all().item<bool>();
        Update(allFinite);
        return allFinite;
    }

    /// <summary>The scale update after a step: back off on overflow, grow after a run of good steps.</summary>
    public void Update(bool finite)
    {
        if (!finite)
        {
            Scale *= BackoffFactor;
            GoodSteps = 0;
        }
        else if (++GoodSteps >= GrowthInterval)
        {
            Scale *= GrowthFactor;
            GoodSteps = 0;
        }
    }
}

/// <summary>The parameters the optimizer updates, in the model's parameter order, split by weight decay.</summary>
/// <param name="All">Every trainable parameter (gradient clipping and norms run over these).</param>
/// <param name="Decay">Those that take weight decay (≥2-D weights).</param>
/// <param name="NoDecay">Those that take none (biases, norm weights).</param>
internal sealed record TrainableParameters(IReadOnlyList<Parameter> All, IReadOnlyList<Parameter> Decay, IReadOnlyList<Parameter> NoDecay);

/// <summary>
/// Chooses what trains: <see cref="AllParameters"/> (full training and full fine-tuning) or <see cref="LoraParameters"/>
/// (the adapters that <see cref="GptModel.AddLora"/> added; the frozen base gets no gradients and no optimizer moments).
/// </summary>
internal interface ITrainableParameterSelector
{
    /// <summary>The parameters of <paramref name="model"/> to train.</summary>
    TrainableParameters Select(GptModel model);
}

/// <summary>Every parameter trains; weight decay on ≥2-D weights only (nanoGPT's <c>configure_optimizers</c>).</summary>
internal sealed class AllParameters : ITrainableParameterSelector
{
    public static readonly AllParameters Instance = new();

    public TrainableParameters Select(GptModel model) =>
        new(model.parameters().ToArray(), model.DecayParameters.ToArray(), model.NoDecayParameters.ToArray());
}

/// <summary>
/// LoRA: only the adapters' A and B train (<c>requires_grad</c> is false on every base weight since
/// <see cref="GptModel.AddLora"/>), so the optimizer's flat buffers and moments hold the adapters alone. A and B are
/// matrices and take weight decay, as the Hugging Face Trainer decays every non-bias, non-norm parameter.
/// </summary>
internal sealed class LoraParameters : ITrainableParameterSelector
{
    public static readonly LoraParameters Instance = new();

    public TrainableParameters Select(GptModel model)
    {
        var trainable = model.parameters().Where(p => p.requires_grad).ToArray();
        if (model.Lora is null || trainable.Length == 0)
            throw new InvalidOperationException("LoRA training needs a model with adapters (GptModel.AddLora).");
        return new(trainable, trainable.Where(p => p.dim() >= 2).ToArray(), trainable.Where(p => p.dim() < 2).ToArray());
    }
}

/// <summary>
/// Makes the gradients of data-parallel replicas equal before clipping and the optimizer step:
/// <see cref="SingleProcess"/> (nothing to do) or <see cref="AllReduceGradients"/> (MPI, Training/Distributed).
/// </summary>
internal interface IGradientSynchronizer
{
    /// <summary>Averages <paramref name="gradients"/> (the flat buffer every parameter's <c>.grad</c> is a view of,
    /// <see cref="FusedAdamW.Gradients"/>) and the step's mean <paramref name="loss"/> (a one-element tensor) across
    /// replicas, in place, after the backward passes of step <paramref name="step"/> + 1.</summary>
    void Synchronize(Tensor gradients, Tensor loss, long step);
}

/// <summary>One process: its gradients are already the whole batch's.</summary>
internal sealed class SingleProcess : IGradientSynchronizer
{
    public static readonly SingleProcess Instance = new();

    public void Synchronize(Tensor gradients, Tensor loss, long step)
    {
    }
}

/// <summary>
/// The training rows, as an endless seeded stream: the batch at a position depends only on (seed, position), so a
/// checkpoint only has to store the position. Today: <see cref="InMemoryTokenBlocks"/>, over blocks held in memory or
/// read on demand from memory-mapped token shards (<see cref="TokenBlocks.IsOnDisk"/>).
/// </summary>
/// <remarks>
/// With data parallelism each rank reads its own rows of the global batch at a position (rank-strided, disjoint).
/// </remarks>
internal interface ITrainingDataSource
{
    /// <summary>Rows in one epoch.</summary>
    int Count { get; }

    /// <summary>Input tokens per row (the block length − 1).</summary>
    int ContextLength { get; }

    /// <summary>The (B, T) inputs, targets and optional document ids of this replica's <paramref name="rowCount"/> rows of
    /// the global batch at <paramref name="position"/> (one replica: rows [position, position + rowCount) of the stream),
    /// on <paramref name="device"/>.</summary>
    (Tensor Inputs, Tensor Targets, Tensor? DocumentIds) Batch(long position, int rowCount, Device device);
}

/// <summary>Token blocks (in memory or on disk), visited in a seeded random order that changes every epoch; the order costs
/// 4 bytes per block (0.03 bytes per token at context 128), whatever the storage. Replica <paramref name="rank"/> of
/// <paramref name="worldSize"/> reads rows rank, rank + worldSize, … of the global batch of rowCount × worldSize rows at a
/// position, so the replicas together read exactly the rows one process with their summed batch would.</summary>
internal sealed class InMemoryTokenBlocks(TokenBlocks blocks, int seed, bool documentMasking, int rank = 0, int worldSize = 1) : ITrainingDataSource
{
    private readonly EpochPermutations _order = new(seed, blocks.Count);
    private int[] _global = [];
    private int[] _rows = [];

    public int Count => blocks.Count;

    public int ContextLength => blocks.ContextLength;

    public (Tensor Inputs, Tensor Targets, Tensor? DocumentIds) Batch(long position, int rowCount, Device device)
    {
        if (_rows.Length != rowCount)
        {
            _rows = new int[rowCount];
            _global = new int[rowCount * worldSize];
        }

        _order.Fill(position, _global);
        for (int i = 0; i < rowCount; i++)
            _rows[i] = _global[i * worldSize + rank];
        return blocks.Batch(_rows, device, documentMasking);
    }

    /// <summary>Seeded per-epoch permutations of the rows: the data order is a pure function of (seed, rows consumed).</summary>
    private sealed class EpochPermutations(int seed, int count)
    {
        private readonly int[] _order = new int[count];
        private long _epoch = -1;

        public void Fill(long rowsConsumed, Span<int> rows)
        {
            for (int i = 0; i < rows.Length; i++)
            {
                long position = rowsConsumed + i;
                long epoch = position / count;
                if (epoch != _epoch)
                {
                    for (int j = 0; j < count; j++)
                        _order[j] = j;

                    // System.Random with an explicit seed is a fixed algorithm across .NET versions.
                    new Random(unchecked(seed * 1_000_003 + (int)epoch)).Shuffle(_order);
                    _epoch = epoch;
                }

                rows[i] = _order[(int)(position % count)];
            }
        }
    }
}
