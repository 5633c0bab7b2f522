// Attention of one new token against the KV cache, on the CPU in fp32: the inner step of every generated token.
// libtorch runs it as its flash-attention kernel, which for a single query makes two small BLAS calls per (row, head)
// and, with more than one torch thread, opens an OpenMP region even for a handful of heads. Measured in isolation
// (µs, median of 7 × 2000 calls; benchmarks/README.md, "One-token attention"):
//   Shakespeare heads (nh 4, hs 32), 97 cached keys, 1 thread:  8 rows SDPA 32.4, here 19.8;  1 row 6.9 against 9.5
//   the same with 2 threads:                                    8 rows 37.1 against 19.0;     1 row 13.0 against 9.9
//   GPT-2 heads (nh 12, hs 64), 500 keys, 8 rows, 1 thread:     1096 against 653
// A row's attention is cheap here once the call is made (about 0.4 µs per head at 97 keys, where the fused kernel
// takes 0.9), while the call's checks and output tensor cost a fixed few µs: so batched decoding gains most. Large
// products with several threads (8 rows × 12 heads × 500 keys: 347 µs there against 754 here) keep libtorch's kernel,
// which spreads the heads over its threads; inside a generation step libtorch has one thread (DecodeThreads), so this
// kernel takes those too.

using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Microsoft.ML.Llm;

/// <summary>
/// softmax(q·kᵀ/√hs)·v for one query position per (row, head) against cached keys and values, as a vectorised loop
/// over the tensors' memory: fp32, CPU, no gradients. Grouped-query attention reads key/value head h / (nh / nkv)
/// directly, without repeating the cache.
/// </summary>
[System.Runtime.CompilerServices.SkipLocalsInit]
internal static unsafe class DecodeAttention
{
    /// <summary>Above this many multiply-adds per product (B·nh·Tk·hs) and with several torch threads, libtorch's kernel,
    /// which runs heads in parallel, is faster: 8 × 12 × 500 × 64 (3.1M) took 347 µs there against 754 here with
    /// two threads; 8 × 12 × 97 × 64 (0.6M) 121 against 90.</summary>
    internal const long ParallelThreshold = 1L << 20;

    private const int StackScores = 2048;   // scores on the stack up to this many keys (8 KiB), else a pooled array

    /// <summary>
    /// Computes the attention when this kernel applies: q (B, nh, 1, hs), k and v (B, nkv, Tk, hs) with unit stride
    /// along hs, all fp32 on the CPU without gradients, hs a multiple of 8, AVX2 with FMA, and an optional bool key mask
    /// (B, 1, 1, Tk) whose false entries are hidden. Returns null otherwise, and the caller uses the fused kernel.
    /// </summary>
    /// <returns>(B, nh, 1, hs), or null.</returns>
    public static Tensor? TryAttend(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (!Fma.IsSupported || !Avx.IsSupported
            || q.dtype != ScalarType.Float32 || k.dtype != ScalarType.Float32 || v.dtype != ScalarType.Float32
            || q.device_type != DeviceType.CPU || is_grad_enabled())
        {
            return null;
        }

        var qShape = q.shape;
        var kShape = k.shape;
        long B = qShape[0], nh = qShape[1], hs = qShape[3], nkv = kShape[1], Tk = kShape[2];
        if (qShape[2] != 1 || hs % 8 != 0 || nkv == 0 || nh % nkv != 0 || kShape[0] != B || kShape[3] != hs || !v.shape.SequenceEqual(kShape))
            return null;
        if (B * nh * Tk * hs > ParallelThreshold && get_num_threads() > 1)   // libtorch's kernel runs heads in parallel
            return null;
        var qStride = q.stride();
        var kStride = k.stride();
        var vStride = v.stride();
        if (qStride[3] != 1 || kStride[3] != 1 || vStride[3] != 1)
            return null;
        long maskRow = 0;
        bool* maskData = null;
        if (mask is not null)
        {
            var maskShape = mask.shape;
            if (mask.dtype != ScalarType.Bool || mask.device_type != DeviceType.CPU || maskShape.Length != 4
                || maskShape[0] != B || maskShape[1] != 1 || maskShape[2] != 1 || maskShape[3] != Tk || mask.stride(3) != 1)
            {
                return null;
            }

            maskRow = mask.stride(0);
            maskData = TensorMemory.Bools(mask);
        }

        var y = empty([B, nh, 1, hs], ScalarType.Float32);                                   // (B, nh, 1, hs)
        float* qData = TensorMemory.Floats(q), kData = TensorMemory.Floats(k);
        float* vData = TensorMemory.Floats(v), yData = TensorMemory.Floats(y);
        float scale = 1f / MathF.Sqrt(hs);
        long group = nh / nkv;
        float[]? rented = Tk > StackScores ? ArrayPool<float>.Shared.Rent((int)Tk) : null;
        Span<float> scores = rented is null ? stackalloc float[StackScores] : rented;
        scores = scores[..(int)Tk];
        try
        {
            fixed (float* s = scores)
            {
                for (long b = 0; b < B; b++)
                {
                    bool* visible = maskData is null ? null : maskData + b * maskRow;
                    for (long h = 0; h < nh; h++)
                    {
                        long g = h / group;                                                  // the key/value head
                        Scores(qData + b * qStride[0] + h * qStride[1], kData + b * kStride[0] + g * kStride[1], kStride[2], (int)Tk, (int)hs, scale, visible, s);
                        // Softmax in place: every row sees at least its own new key, so the maximum is finite.
                        float max = TensorPrimitives.Max(scores);
                        TensorPrimitives.Subtract(scores, max, scores);
                        TensorPrimitives.Exp(scores, scores);                                 // hidden keys: exp(−∞) = 0
                        float norm = 1f / TensorPrimitives.Sum(scores);
                        Mix(s, vData + b * vStride[0] + g * vStride[1], vStride[2], (int)Tk, (int)hs, norm, yData + (b * nh + h) * hs);
                    }
                }
            }
        }
        finally
        {
            if (rented is not null)
                ArrayPool<float>.Shared.Return(rented);
        }

        return y;
    }

    /// <summary>s[t] = q·k[t]·scale, or −∞ where the mask hides key t. Four keys at a time, so the four dot products'
    /// multiply-adds interleave instead of waiting on one accumulator.</summary>
    private static void Scores(float* q, float* k, long keyStride, int count, int hs, float scale, bool* visible, float* s)
    {
        int t = 0;
        for (; t + 4 <= count; t += 4)
        {
            float* k0 = k + t * keyStride, k1 = k0 + keyStride, k2 = k1 + keyStride, k3 = k2 + keyStride;
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int d = 0; d < hs; d += 8)
            {
                var qd = Vector256.Load(q + d);
                a0 = Fma.MultiplyAdd(qd, Vector256.Load(k0 + d), a0);
                a1 = Fma.MultiplyAdd(qd, Vector256.Load(k1 + d), a1);
                a2 = Fma.MultiplyAdd(qd, Vector256.Load(k2 + d), a2);
                a3 = Fma.MultiplyAdd(qd, Vector256.Load(k3 + d), a3);
            }

            s[t] = Vector256.Sum(a0) * scale;
            s[t + 1] = Vector256.Sum(a1) * scale;
            s[t + 2] = Vector256.Sum(a2) * scale;
            s[t + 3] = Vector256.Sum(a3) * scale;
        }

        for (; t < count; t++)
        {
            float* kt = k + t * keyStride;
            Vector256<float> a = default;
            for (int d = 0; d < hs; d += 8)
                a = Fma.MultiplyAdd(Vector256.Load(q + d), Vector256.Load(kt + d), a);
            s[t] = Vector256.Sum(a) * scale;
        }

        if (visible is not null)
        {
            for (t = 0; t < count; t++)
            {
                if (!visible[t])
                    s[t] = float.NegativeInfinity;
            }
        }
    }

    /// <summary>y = norm · Σₜ p[t]·v[t]: 32 output channels at a time held in registers across all keys.</summary>
    private static void Mix(float* p, float* v, long valueStride, int count, int hs, float norm, float* y)
    {
        var scale = Vector256.Create(norm);
        int d = 0;
        for (; d + 32 <= hs; d += 32)
        {
            Vector256<float> o0 = default, o1 = default, o2 = default, o3 = default;
            float* vt = v + d;
            for (int t = 0; t < count; t++, vt += valueStride)
            {
                var pt = Vector256.Create(p[t]);
                o0 = Fma.MultiplyAdd(pt, Vector256.Load(vt), o0);
                o1 = Fma.MultiplyAdd(pt, Vector256.Load(vt + 8), o1);
                o2 = Fma.MultiplyAdd(pt, Vector256.Load(vt + 16), o2);
                o3 = Fma.MultiplyAdd(pt, Vector256.Load(vt + 24), o3);
            }

            (o0 * scale).Store(y + d);
            (o1 * scale).Store(y + d + 8);
            (o2 * scale).Store(y + d + 16);
            (o3 * scale).Store(y + d + 24);
        }

        for (; d < hs; d += 8)
        {
            Vector256<float> o = default;
            float* vt = v + d;
            for (int t = 0; t < count; t++, vt += valueStride)
                o = Fma.MultiplyAdd(Vector256.Create(p[t]), Vector256.Load(vt), o);
            (o * scale).Store(y + d);
        }
    }
}
