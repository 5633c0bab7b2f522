namespace Microsoft.ML.Llm;

/// <summary>
/// The numeric precision of training (<see cref="CausalLmTrainerOptions.Precision"/>) and of the trained model's
/// forward passes: scoring, evaluation and generation (<see cref="GptModel.Precision"/>).
/// </summary>
/// <remarks>
/// The mixed modes follow PyTorch's <c>torch.autocast</c>: the weights and the AdamW moments stay fp32 (the "master"
/// copy the optimizer updates); matmuls, linear layers and attention run in the low precision; embedding outputs, the
/// residual stream, layer/RMS norms, softmax inside the loss, the loss and every reduction run in fp32. Model zips and
/// checkpoints always hold fp32 weights.
/// </remarks>
public enum TrainingPrecision
{
    /// <summary>fp32 everywhere.</summary>
    Fp32 = 0,

    /// <summary>
    /// bfloat16 autocast: bf16 has fp32's exponent range, so no loss scaling is needed. The fast choice on CPUs with
    /// AVX-512 BF16 or AMX and on CUDA GPUs from compute capability 8.0 (Ampere).
    /// </summary>
    Bf16Mixed = 1,

    /// <summary>
    /// float16 autocast with a dynamic loss scale (PyTorch's GradScaler): fp16's range ends at 65504, so small
    /// gradients underflow unless the loss is scaled up first. The usual choice on CUDA GPUs without bf16. On the CPU
    /// libtorch runs fp16 matmuls without a fast kernel on most processors: it works, slowly (a warning says so).
    /// </summary>
    Fp16Mixed = 2,
}
