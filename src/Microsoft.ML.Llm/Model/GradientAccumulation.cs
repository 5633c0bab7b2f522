// Weight gradients written straight into the parameters' fp32 .grad buffers (Megatron-LM's
// "gradient_accumulation_fusion": its linear layers' backward runs the weight-gradient GEMM into main_grad in place).
//
// Why: with autograd's own linear and embedding, every weight gradient is first materialised as a fresh tensor and then
// added into .grad by AccumulateGrad. For GPT-2 124M at batch 4 × 64 on the 2-core CPU (benchmarks/TrainingThroughput,
// Bf16Mixed) that cost more than the matmuls themselves:
//   - the token embedding's backward builds a dense (50304, 768) fp32 gradient, 154 MB of fresh pages, for 256 rows:
//     158 ms of a 1.3 s step, against 1.3 ms forward;
//   - under autocast each weight gradient comes out of the GEMM in bf16, is cast to a fresh fp32 tensor, then added:
//     three passes and a fresh 4-bytes-per-weight allocation (0.5 GB of page faults per step for 124M weights).
// Here the GEMM accumulates into .grad (addmm_ with beta = 1 in fp32; one mixed-dtype add_ of the bf16 product under
// autocast) and the embedding's backward is an index_add_ of the rows it saw. The functions return no gradient for the
// weight, so autograd's AccumulateGrad never runs for it.
//
// The numbers are those of autograd's path up to float rounding (a fused GEMM + add rounds once where mm then add rounds
// twice); every path of the model uses the same functions, so runs stay deterministic.

using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>y = x·Wᵀ + b (in the autocast dtype, or as given), whose backward adds dW and db into the parameters'
/// <c>.grad</c> in place and returns only dx.</summary>
internal sealed class AccumulatingLinear : autograd.SingleTensorFunction<AccumulatingLinear>
{
    /// <inheritdoc/>
    public override string Name => nameof(AccumulatingLinear);

    /// <summary>Whether <see cref="Run"/> should replace autograd's linear: training a weight that wants a gradient.</summary>
    public static bool Applies(Tensor weight) => GradientBuffers.Fused && weight.requires_grad && is_grad_enabled();

    /// <summary>The linear layer's output, computed in <paramref name="computeType"/> when given.</summary>
    public static Tensor Run(Tensor x, Tensor weight, Tensor? bias, ScalarType? computeType)
    {
        // The casts made in forward are held by the graph (save_for_backward commits them when apply returns), which frees
        // them after this layer's backward; their managed handles must not keep them alive to the end of the step.
        using var scope = NewDisposeScope();
        return apply(x, weight, new Weights(weight, bias, computeType, x.dtype)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var w = (Weights)vars[2];
        Tensor input = x, weight = w.Weight, bias = w.Bias!;
        if (w.ComputeType is { } t)
        {
            input = x.dtype == t ? x : x.to(t);
            weight = weight.to(t);                                   // the cast autocast makes; kept for backward
            bias = bias?.to(t)!;
        }

        ctx.save_for_backward([input, weight]);
        ctx.save_data("weights", w);
        return nn.functional.linear(input, weight, bias);
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor input = saved[0], weight = saved[1];
        var w = (Weights)ctx.get_data("weights");
        var g = grad_output.dtype == weight.dtype ? grad_output : grad_output.to(weight.dtype);   // (…, out)
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
        var g2 = g.reshape(-1, outFeatures);                         // (N, out)
        var x2 = input.reshape(-1, inFeatures);                      // (N, in)
        GradientBuffers.AddProduct(w.Weight, g2.t(), x2);            // dW += gᵀ·x  (out, in)
        if (w.Bias is { requires_grad: true } b)
            GradientBuffers.Add(b, g2.sum([0], type: ScalarType.Float32));   // db += Σ g, summed in fp32

        var dx = g.matmul(weight);                                   // (…, in)
        if (dx.dtype != w.InputType)
            dx = dx.to(w.InputType);                                 // the gradient of autocast's cast of x
        return [dx.MoveToOuterDisposeScope(), null!, null!];
    }

    private sealed record Weights(Tensor Weight, Tensor? Bias, ScalarType? ComputeType, ScalarType InputType);
}

/// <summary>An embedding lookup whose backward adds the looked-up rows' gradients into the table's <c>.grad</c>
/// (index_add_ of B·T rows) instead of building a dense vocabulary × width gradient.</summary>
internal sealed class AccumulatingEmbedding : autograd.SingleTensorFunction<AccumulatingEmbedding>
{
    /// <inheritdoc/>
    public override string Name => nameof(AccumulatingEmbedding);

    /// <summary>The rows of <paramref name="weight"/> at <paramref name="idx"/>: (…, C) for (…) ids.</summary>
    public static Tensor Run(Tensor idx, Tensor weight)
    {
        using var scope = NewDisposeScope();
        return apply(weight, idx).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var weight = (Tensor)vars[0];
        var idx = (Tensor)vars[1];
        ctx.save_for_backward([idx]);
        ctx.save_data("weight", new Table(weight));   // a reference, not a saved tensor: only its .grad is used
        var rows = weight.index_select(0, idx.reshape(-1));         // (N, C)
        return rows.view([.. idx.shape, weight.shape[1]]);           // (…, C)
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        using var scope = NewDisposeScope();
        var idx = ctx.get_saved_variables()[0];
        var weight = ((Table)ctx.get_data("weight")).Weight;
        GradientBuffers.AddRows(weight, idx.reshape(-1), grad_output.reshape(-1, weight.shape[1]));
        return [null!, null!];
    }

    private sealed record Table(Tensor Weight);
}

/// <summary>In-place additions into a parameter's <c>.grad</c>, creating it (fp32, zero) on first use.</summary>
internal static class GradientBuffers
{
    /// <summary>Whether the model's linear layers and token embedding use the accumulating functions (default); off,
    /// they run through autograd's own ops. A switch for benchmarks/TrainingThroughput's side-by-side comparison.</summary>
    internal static bool Fused { get; set; } = true;

    /// <summary>.grad += a·b (a GEMM with beta = 1 when the dtypes match, else the low-precision product added in one pass).</summary>
    public static void AddProduct(Tensor parameter, Tensor a, Tensor b)
    {
        var grad = GradOf(parameter);
        if (a.dtype == grad.dtype)
            grad.addmm_(a, b);
        else
            grad.add_(a.mm(b));
    }

    /// <summary>.grad += value (mixed dtypes promote to .grad's).</summary>
    public static void Add(Tensor parameter, Tensor value) => GradOf(parameter).add_(value);

    /// <summary>.grad[ids[i]] += rows[i] for every i.</summary>
    public static void AddRows(Tensor parameter, Tensor ids, Tensor rows)
    {
        var grad = GradOf(parameter);
        grad.index_add_(0, ids, rows.dtype == grad.dtype ? rows : rows.to(grad.dtype), 1);
    }

    private static Tensor GradOf(Tensor parameter)
    {
        if (parameter.grad is { } existing)
            return existing;
        parameter.grad = zeros_like(parameter);                      // a fresh step without a flat optimizer buffer
        return parameter.grad!;
    }
}
