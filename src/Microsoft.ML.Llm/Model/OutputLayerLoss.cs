using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The output layer and the summed cross-entropy as one autograd function (the idea of Liger-Kernel's fused linear
/// cross-entropy, without its chunking): forward computes the logits, the loss and, in the logits' own buffer, the
/// loss's gradient with respect to them (softmax − one-hot); backward turns that into the hidden states' gradient and
/// adds the weight's gradient straight into its preallocated <c>.grad</c>.
/// </summary>
/// <remarks>
/// <para>
/// Why: for GPT-2's 50304-token vocabulary at B·T = 256, the unfused backward holds the logits, their log-softmax, the
/// log-softmax's gradient and the logits' gradient (4 × 51 MB), then builds the weight's gradient as a new 154 MB tensor
/// (in bf16: 77 MB, cast to a 154 MB fp32 copy) and adds it into <c>.grad</c>: about 0.4 GB above the weights and
/// optimizer state, the difference between 2.8 GB and llm.c's 2.52 GB peak. Here one (N, V) fp32 buffer lives from
/// forward to backward, and fp32 adds <c>dlogitsᵀ·x</c> into <c>.grad</c> with one in-place <c>addmm_</c>; bf16/fp16
/// add their low-precision product into the fp32 <c>.grad</c> in one pass (no separate cast).
/// </para>
/// <para>
/// Semantics as <c>cross_entropy(x·Wᵀ, targets, ignore_index: -1, reduction: sum)</c> under <see cref="Autocast"/>:
/// the matmul in the autocast precision, the log-sum-exp and the loss in fp32, every padded vocabulary column in the
/// softmax; targets of −1 add nothing and get no gradient. The loss's upstream gradient (the 1/micro-steps scaling and
/// any fp16 loss scale) multiplies the saved gradient in backward. The weight is not an input of the function, so
/// autograd never sees its gradient: <see cref="GptModel.PreallocatedGradients"/> must hold (every <c>.grad</c> a dense
/// preallocated tensor), which the trainer guarantees and <see cref="GptModel.TrainingLoss"/> checks.
/// </para>
/// </remarks>
internal sealed class OutputLayerLoss : autograd.SingleTensorFunction<OutputLayerLoss>
{
    /// <inheritdoc/>
    public override string Name => nameof(OutputLayerLoss);

    /// <summary>The summed cross-entropy of the logits <c>x·Wᵀ</c> against <paramref name="targets"/>.</summary>
    /// <param name="x">(N, C) hidden states after the final norm.</param>
    /// <param name="weight">(V, C) output weight (wte when tied); its <c>.grad</c> must exist if it requires one.</param>
    /// <param name="targets">(N) int64 target ids; −1 = not a target.</param>
    /// <returns>A 0-d fp32 tensor.</returns>
    public static Tensor Run(Tensor x, Parameter weight, Tensor targets)
    {
        // The function backpropagates only when an input asks for a gradient; below a fully frozen model with a trainable
        // output weight nothing upstream would, so the hidden states ask for one (as CheckpointedBlock does).
        if (!x.requires_grad)
            x = x.detach().requires_grad_(true);
        return apply(x, new WeightReference(weight), targets);
    }

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];                                             // (N, C)
        var weight = ((WeightReference)vars[1]).Weight;                      // (V, C)
        var targets = (Tensor)vars[2];                                       // (N)
        var low = Autocast.ComputeType;

        using var scope = NewDisposeScope();
        // Under autocast the weight is cast once and the cast kept for backward (as autograd would keep it for the
        // linear's backward): recasting 154 MB there would cost another pass over it.
        var weightLow = low is { } t ? weight.to(t) : weight;                // (V, C)
        var logits = nn.functional.linear(low is { } t2 ? x.to(t2) : x, weightLow);
        if (logits.dtype != ScalarType.Float32)
            logits = logits.to(ScalarType.Float32);                          // (N, V): the loss in fp32
        var ignored = targets.eq(HeldScalar.MinusOne);                       // (N) bool: not a target
        var index = targets.clamp_min(0).unsqueeze(1);                      // (N, 1): −1 → 0, masked out below
        var picked = logits.gather(1, index).squeeze(1);                     // (N) the targets' logits

        // The softmax in place in the logits' buffer (logsumexp would allocate a second (N, V) buffer for its exp), and
        // the log-sum-exp from its pieces: lse = max + log Σ exp(logit − max).
        var max = logits.amax([1], keepdim: true);                           // (N, 1)
        var grad = logits.sub_(max).exp_();                                  // (N, V) exp(logit − max)
        var total = grad.sum([1], keepdim: true);                            // (N, 1)
        var lse = HeldScalar.Add(max, total.log()).squeeze(1);               // (N)
        var loss = (lse - picked).masked_fill_(ignored, HeldScalar.Zero).sum();   // Σ −log softmax(target)

        // d loss / d logits = softmax − one-hot, still in the same buffer; rows that are not targets get zero.
        grad.div_(total);                                                    // (N, V) softmax
        grad.scatter_add_(1, index, full([x.shape[0], 1], HeldScalar.MinusOne, dtype: grad.dtype, device: grad.device));
        grad.masked_fill_(ignored.unsqueeze(1), HeldScalar.Zero);

        // The function's own tensors travel to backward as data: tensors made here would be gone by the time
        // save_for_backward commits (after apply returns, when this scope has disposed them). Backward disposes them.
        ctx.save_for_backward([x]);
        ctx.save_data("state", new Saved(
            ((WeightReference)vars[1]).Weight,
            grad.DetachFromDisposeScope(),
            low is null ? null : weightLow.DetachFromDisposeScope()));
        return loss.MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var x = ctx.get_saved_variables()[0];                               // (N, C)
        using var state = (Saved)ctx.get_data("state");
        var (weight, grad, weightLow) = (state.Weight, state.Grad, state.WeightLow);   // (V, C), (N, V) fp32, (V, C) low or null

        using var scope = NewDisposeScope();
        grad.mul_(grad_output);                                              // the upstream scale (1/micro-steps, fp16 loss scale); no host sync
        Tensor dx;
        if (weightLow is null)
        {
            dx = grad.matmul(weight);                                        // (N, C)
            if (weight.requires_grad)
                WeightGradient(weight).addmm_(grad.t(), x);                  // += dlogitsᵀ·x, in place (V, C)
        }
        else
        {
            var gradLow = grad.to(weightLow.dtype);
            dx = gradLow.matmul(weightLow).to(x.dtype);                      // (N, C)
            if (weight.requires_grad)
                WeightGradient(weight).add_(gradLow.t().matmul(x.to(weightLow.dtype)), HeldScalar.One);   // fp32 += low-precision product, one pass
        }

        return [dx.MoveToOuterDisposeScope(), null!, null!];
    }

    private static Tensor WeightGradient(Parameter weight) =>
        weight.grad ?? throw new InvalidOperationException(
            "OutputLayerLoss adds the output weight's gradient into its .grad, but it has none: the fused loss needs GptModel.PreallocatedGradients (FusedAdamW's gradient views).");

    /// <summary>Carries the weight through <c>apply</c> as data rather than as an input, so autograd does not build its gradient.</summary>
    private sealed record WeightReference(Parameter Weight);

    /// <summary>What backward needs besides the input: the weight, the loss's gradient with respect to the logits, and
    /// the weight's low-precision cast (null in fp32). Owns the two tensors.</summary>
    private sealed record Saved(Parameter Weight, Tensor Grad, Tensor? WeightLow) : IDisposable
    {
        public void Dispose()
        {
            Grad.Dispose();
            WeightLow?.Dispose();
        }
    }
}
