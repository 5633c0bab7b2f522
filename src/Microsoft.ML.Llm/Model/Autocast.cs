// Autocast for TorchSharp, which has none (0.107): the model's matmul sites ask this class which dtype to compute in.
// PyTorch's autocast (torch/csrc/autograd/autocast_mode.cpp, CPU and CUDA op lists) is the reference:
//   lower precision: linear, matmul/bmm/addmm, scaled_dot_product_attention        → Linear, Attention here
//   fp32:            layer_norm, (rms_)norm, softmax/log_softmax, cross_entropy, sum/mean/pow reductions
//                                                                                  → Float32 here (norms, logits)
//   everything else runs in whatever dtype its inputs have (gelu on a bf16 matmul output runs in bf16; the fp32
//   residual stream plus a bf16 branch promotes to fp32, so the residual stream stays fp32).
// As in PyTorch the state is per thread and scoped: `using (Autocast.Enable(precision)) { forward; loss; }`.
// Weights stay fp32 parameters; each matmul casts its weight on the fly, and autograd casts the gradient back, so
// .grad is fp32 and AdamW updates the fp32 master weights.

using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>Per-thread autocast state and the casting helpers the model's matmul, attention and norm sites call.</summary>
internal static class Autocast
{
    [ThreadStatic]
    private static ScalarType? computeType;   // null: autocast off, every op in its inputs' dtype

    [ThreadStatic]
    private static WeightCache? weightCache;  // inference: each weight cast once per cache, not once per forward pass

    /// <summary>The low-precision dtype of the enclosing scope, or null outside autocast (or in an fp32 scope).</summary>
    public static ScalarType? ComputeType => computeType;

    /// <summary>The compute dtype of a precision: bf16, fp16, or null for fp32.</summary>
    public static ScalarType? ComputeTypeOf(TrainingPrecision precision) => precision switch
    {
        TrainingPrecision.Bf16Mixed => ScalarType.BFloat16,
        TrainingPrecision.Fp16Mixed => ScalarType.Float16,
        _ => null,
    };

    /// <summary>Runs the forward passes inside the returned scope in <paramref name="precision"/>; disposing restores
    /// the enclosing state (scopes nest, an fp32 scope switches autocast off).</summary>
    public static Scope Enable(TrainingPrecision precision) => Enable(ComputeTypeOf(precision));

    /// <summary>Runs the forward passes inside the returned scope in <paramref name="computeType"/> (null: autocast off),
    /// as a recomputation must run in the precision its original forward ran in.</summary>
    public static Scope Enable(ScalarType? computeType)
    {
        var previous = Autocast.computeType;
        var previousCache = weightCache;
        Autocast.computeType = computeType;
        return new Scope(previous, previousCache);
    }

    /// <summary>
    /// Runs inference in <paramref name="precision"/>, taking each weight's low-precision cast from
    /// <paramref name="cache"/> (made on first use) instead of casting it again in every forward pass. Only where
    /// gradients are off and the weights cannot change while the cache lives: a generation call.
    /// </summary>
    public static Scope Enable(TrainingPrecision precision, WeightCache cache)
    {
        var scope = Enable(ComputeTypeOf(precision));
        weightCache = cache;
        return scope;
    }

    /// <summary>y = x·Wᵀ + b, in the compute dtype under autocast (input, weight and bias cast), else as given.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias = null)
    {
        if (computeType is not { } t)
            return DecodeLinear.TryLinear(x, weight, bias) ?? nn.functional.linear(x, weight, bias);   // a few fp32 rows: no MKL packing
        return nn.functional.linear(Cast(x, t), CastWeight(weight, t), bias is null ? null : CastWeight(bias, t));
    }

    /// <summary>A Linear layer's forward through <see cref="Linear(Tensor, Tensor, Tensor?)"/>.</summary>
    public static Tensor Linear(Tensor x, TorchSharp.Modules.Linear layer) => Linear(x, layer.weight!, layer.bias);

    /// <summary>Scaled dot-product attention, in the compute dtype under autocast (PyTorch autocasts SDPA to the low
    /// precision on CPU and CUDA; the kernels accumulate the softmax in fp32 internally). A bool mask is not cast.</summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, Tensor? mask, double dropout, bool isCausal)
    {
        if (computeType is { } t)
        {
            q = Cast(q, t);
            k = Cast(k, t);
            v = Cast(v, t);
            if (mask is null && isCausal && UseExplicitAttention(q, k))
                return ExplicitCausalAttention(q, k, v, dropout);
        }

        // TorchSharp 0.107 spells the flag is_casual; the flag and a mask together are rejected by libtorch.
        return mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, p: dropout, is_casual: isCausal)
            : nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask, p: dropout, is_casual: false);
    }

    /// <summary>The longest context trained through <see cref="ExplicitCausalAttention"/> instead of the fused kernel.</summary>
    internal const int ExplicitAttentionMaxContext = 256;

    /// <summary>
    /// Whether a bf16 causal attention runs as explicit matmuls: on the CPU, for a full causal block (training,
    /// evaluation, a prompt's prefill; not a decode step against a cache) of at most
    /// <see cref="ExplicitAttentionMaxContext"/> positions. With or without gradients alike, so that activation
    /// checkpointing's no-grad forward and its recomputation take the same path (same numbers, same dropout draws).
    /// Why: libtorch's CPU flash-attention backward calls a small bf16 GEMM per (batch, head, query block), and each
    /// pays oneDNN's set-up; forward + backward of the Tiny Shakespeare model's attention (B 12, nh 4, T 64, hs 32)
    /// took 9.9 ms in bf16 against 3.8 ms for the explicit form, which makes one batched matmul per product; at
    /// GPT-2's shape (nh 12, hs 64) 10.0 against 4.1 ms at T = 64 and 77 against 60 ms at T = 256, and at T = 512 the
    /// fused kernel is faster (one thread; benchmarks/README.md, "Attention at short contexts"). Forward alone (no
    /// gradients) the explicit form is faster too at these shapes: 0.45 against 1.4 ms at GPT-2's T = 64, 5.8 against
    /// 12.5 ms at T = 256, while at T = 512 it is 11× slower. The explicit form
    /// keeps the (B, nh, T, T) scores for backward, 24 bytes per score, which the cap bounds. CUDA keeps the fused
    /// kernels, which are the fast path there; fp32 keeps them too (no gain measured), and fp16, whose unscaled
    /// q·kᵀ could overflow where the fused kernel scales first.
    /// </summary>
    internal static bool UseExplicitAttention(Tensor q, Tensor k) =>
        q.dtype == ScalarType.BFloat16 && q.device_type == DeviceType.CPU
        && q.shape[2] == k.shape[2] && q.shape[2] <= ExplicitAttentionMaxContext;

    /// <summary>
    /// softmax(q·kᵀ/√hs + causal)·v as nanoGPT's non-flash path writes it, with autocast's dtypes: both products in
    /// the low precision, the scaled scores, the mask and the softmax in fp32 (PyTorch's fp32 op list), dropout on
    /// the attention weights. q, k, v: (B, nh, T, hs) → (B, nh, T, hs).
    /// </summary>
    private static Tensor ExplicitCausalAttention(Tensor q, Tensor k, Tensor v, double dropout)
    {
        long T = q.shape[2];
        // Held to the end of the call: an implicit double → Scalar conversion is left to the garbage collector, whose
        // finalizer may free it while libtorch reads it (HeldScalar says more).
        using var scale = (1.0 / Math.Sqrt(q.shape[3])).ToScalar();
        var scores = q.matmul(k.transpose(-2, -1));                                        // (B, nh, T, T), low precision
        var causal = full(T, T, float.NegativeInfinity, ScalarType.Float32, q.device).triu(1);   // (T, T): −∞ above the diagonal
        var att = nn.functional.softmax(causal.add(scores, alpha: scale), -1);            // (B, nh, T, T), fp32: one op scales, masks and upcasts
        if (dropout > 0)
            att = nn.functional.dropout(att, dropout);
        return att.to(q.dtype).matmul(v);                                                 // (B, nh, T, hs)
    }

    /// <summary>Under autocast, <paramref name="x"/> in fp32 (the fp32 op list: norms, logits for the loss); outside,
    /// <paramref name="x"/> unchanged, so a model converted to bf16 as a whole keeps computing in bf16.</summary>
    public static Tensor Float32(Tensor x) =>
        computeType is null || x.dtype == ScalarType.Float32 ? x : x.to(ScalarType.Float32);

    private static Tensor Cast(Tensor x, ScalarType t) => x.dtype == t ? x : x.to(t);

    private static Tensor CastWeight(Tensor weight, ScalarType t) =>
        weightCache is { } cache && weight.dtype != t && !torch.is_grad_enabled() ? cache.Get(weight, t) : Cast(weight, t);

    /// <summary>Restores the enclosing autocast state when disposed.</summary>
    internal readonly struct Scope(ScalarType? previous, WeightCache? previousCache) : IDisposable
    {
        public void Dispose()
        {
            computeType = previous;
            weightCache = previousCache;
        }
    }

    /// <summary>
    /// Low-precision casts of the weights for the life of one inference call (<see cref="Enable(TrainingPrecision, WeightCache)"/>).
    /// Why: a decoding step runs one token per row, so autocast's per-pass cast of every weight was the whole cost of a
    /// bf16 step on the CPU (GPT-2 124M: 3 tokens/s against fp32's 22, one thread); cast once, the weights are read
    /// at half fp32's bytes (30 tokens/s).
    /// Keyed by where the weight's data lives, not by its handle: TorchSharp hands out a new handle on a module's
    /// weight at each access for some modules (Embedding, whose weight is the tied output layer's). Owns the casts.
    /// </summary>
    internal sealed class WeightCache : IDisposable
    {
        private readonly Dictionary<(IntPtr Data, long Offset, long Count), Tensor> _casts = [];

        /// <summary>The number of weights cast so far.</summary>
        public int Count => _casts.Count;

        internal Tensor Get(Tensor weight, ScalarType t)
        {
            var key = (THSStorage_data_ptr(weight.Handle), weight.storage_offset(), weight.numel());
            if (!_casts.TryGetValue(key, out var cast) || cast.dtype != t)
            {
                cast?.Dispose();
                using var noGrad = torch.no_grad();
                cast = weight.to(t).DetachFromDisposeScope();
                _casts[key] = cast;
            }

            return cast;
        }

        // LibTorchSharp's export behind TorchSharp's (internal) storage pointer: the address of the tensor's storage.
        [System.Runtime.InteropServices.DllImport("LibTorchSharp")]
        private static extern IntPtr THSStorage_data_ptr(IntPtr tensor);

        public void Dispose()
        {
            foreach (var cast in _casts.Values)
                cast.Dispose();
            _casts.Clear();
        }
    }
}
