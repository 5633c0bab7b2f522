using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

// The four places where the next training features plug into TrainingRun. Each seam has exactly one implementation
// today, chosen in TrainingRun's constructor; the step calls the seam at the point where the feature acts.

/// <summary>
/// The numeric precision of a training step. Today: <see cref="FullPrecision"/> (fp32 everywhere).
/// </summary>
/// <remarks>
/// Next: mixed precision as PyTorch autocast does it (DESIGN.md §5): matmuls and attention in bf16 (CPU, CUDA) or fp16
/// (CUDA), norms, softmax and the loss in fp32, fp32 master weights and AdamW moments. fp16 also needs a dynamic loss
/// scale (GradScaler: 2^16 initially, ×2 after 2000 good steps, ×0.5 on overflow), which is why the policy owns
/// <see cref="Backward"/> and <see cref="UnscaleGradients"/>.
/// </remarks>
internal interface IPrecisionPolicy
{
    /// <summary>A scope around the forward pass and loss: where autocast will run matmuls in bf16/fp16.</summary>
    IDisposable Autocast();

    /// <summary>Backpropagates <paramref name="loss"/>; a loss-scaling policy multiplies it by its scale first.</summary>
    void Backward(Tensor loss);

    /// <summary>
    /// Called once per step after all micro-batches, before clipping: a loss-scaling policy divides the gradients by
    /// its scale and returns false when one of them is not finite (the optimizer step is then skipped).
    /// </summary>
    bool UnscaleGradients();
}

/// <summary>fp32 forward, backward and optimizer step: no autocast, no loss scale.</summary>
internal sealed class FullPrecision : IPrecisionPolicy
{
    public static readonly FullPrecision Instance = new();

    private FullPrecision()
    {
    }

    public IDisposable Autocast() => NoScope.Instance;

    public void Backward(Tensor loss) => loss.backward();

    public bool UnscaleGradients() => true;

    private sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();

        public void Dispose()
        {
        }
    }
}

/// <summary>The parameters the optimizer updates, in the model's parameter order, split by weight decay.</summary>
/// <param name="All">Every trainable parameter (gradient clipping and norms run over these).</param>
/// <param name="Decay">Those that take weight decay (≥2-D weights).</param>
/// <param name="NoDecay">Those that take none (biases, norm weights).</param>
internal sealed record TrainableParameters(IReadOnlyList<Parameter> All, IReadOnlyList<Parameter> Decay, IReadOnlyList<Parameter> NoDecay);

/// <summary>
/// Chooses what trains. Today: <see cref="AllParameters"/> (full training and full fine-tuning).
/// </summary>
/// <remarks>
/// Next: LoRA (PEFT defaults, DESIGN.md §5): freeze the base weights (<c>requires_grad = false</c>), add low-rank
/// adapters A·B to the targeted linear layers (GPT-2's <c>c_attn</c>, or all linear layers), and return only the
/// adapters' parameters, so the optimizer holds moments for them alone.
/// </remarks>
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
/// Makes the gradients of data-parallel replicas equal before clipping and the optimizer step. Today:
/// <see cref="SingleProcess"/> (nothing to do).
/// </summary>
/// <remarks>
/// Next: data parallelism over MPI (MPI.NET over MPICH, DESIGN.md §4): each rank reads its own share of every batch,
/// and this seam all-reduces (averages) the gradients, as PyTorch's DDP does, so every rank takes the same step.
/// </remarks>
internal interface IGradientSynchronizer
{
    /// <summary>Averages the gradients of <paramref name="parameters"/> across replicas, in place.</summary>
    void Synchronize(IReadOnlyList<Parameter> parameters);
}

/// <summary>One process: its gradients are already the whole batch's.</summary>
internal sealed class SingleProcess : IGradientSynchronizer
{
    public static readonly SingleProcess Instance = new();

    public void Synchronize(IReadOnlyList<Parameter> parameters)
    {
    }
}

/// <summary>
/// The training rows, as an endless seeded stream: the batch at a position depends only on (seed, position), so a
/// checkpoint only has to store the position. Today: <see cref="InMemoryTokenBlocks"/>.
/// </summary>
/// <remarks>
/// Next: memory-mapped token shards on disk (nanoGPT's <c>train.bin</c>, written by PackTokens), for corpora larger than
/// memory; with data parallelism, each rank reads its own slice of the batch at a position.
/// </remarks>
internal interface ITrainingDataSource
{
    /// <summary>Rows in one epoch.</summary>
    int Count { get; }

    /// <summary>Input tokens per row (the block length − 1).</summary>
    int ContextLength { get; }

    /// <summary>The (B, T) inputs, targets and optional document ids of rows [<paramref name="position"/>,
    /// <paramref name="position"/> + <paramref name="rowCount"/>) of the stream, on <paramref name="device"/>.</summary>
    (Tensor Inputs, Tensor Targets, Tensor? DocumentIds) Batch(long position, int rowCount, Device device);
}

/// <summary>Token blocks read into memory, visited in a seeded random order that changes every epoch.</summary>
internal sealed class InMemoryTokenBlocks(TokenBlocks blocks, int seed, bool documentMasking) : ITrainingDataSource
{
    private readonly EpochPermutations _order = new(seed, blocks.Count);
    private int[] _rows = [];

    public int Count => blocks.Count;

    public int ContextLength => blocks.ContextLength;

    public (Tensor Inputs, Tensor Targets, Tensor? DocumentIds) Batch(long position, int rowCount, Device device)
    {
        if (_rows.Length != rowCount)
            _rows = new int[rowCount];
        _order.Fill(position, _rows);
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
