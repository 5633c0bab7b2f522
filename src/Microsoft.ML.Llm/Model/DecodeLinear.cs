// A linear layer applied to a few rows (a decoding step of 1-32 sequences, a short prompt) on the CPU in fp32.
// libtorch sends it to MKL: one row is a GEMV, several a GEMM, and for a few rows MKL's GEMM copies ("packs") the
// whole weight matrix into its blocked layout on every call. A perf profile of the Shakespeare model's 8-row cached
// step (issue 11) put 10% of the step in that copy (mkl_blas_def_sgemm_scopy_right16_bdz) beside 16% in the kernel.
// Here the weight is read where it lies, (N, K) row-major as nn.Linear keeps it: four output features' weight rows
// against a block of input rows, 8 lanes of K at a time in AVX2 FMA registers, then one horizontal reduction per
// (row, feature). Measured in isolation (µs, 1 thread, the median of 11 alternating blocks; benchmarks/README.md,
// "Linear layers for a few rows"):
//   128 → 384 (the Shakespeare model's q/k/v):  1 row MKL 5.4, here 4.8;   8 rows 15.1 against 10.6
//   512 → 128 (its MLP's output):               8 rows 18.7 against 12.1
//   768 → 2304 (GPT-2's q/k/v):                 1 row 118 against 99;      8 rows 552 against 300
//   32 rows, 128 → 384:                         40.2 against 32.9 (MKL's blocked GEMM has not caught up yet)
// Every output is summed in the same order whatever the number of rows, so a row of a batch gets the same bits as
// that row alone: batched greedy decoding equals one prompt at a time exactly, at least through the linear layers.

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static TorchSharp.torch;
using Tensor = TorchSharp.torch.Tensor;

namespace Microsoft.ML.Llm;

/// <summary>
/// y = x·Wᵀ + b for at most <see cref="MaxRows"/> rows of x, as a vectorised loop over the tensors' memory: fp32, CPU,
/// no autograd. Used by <see cref="Autocast.Linear(Tensor, Tensor, Tensor?)"/> outside autocast.
/// </summary>
[SkipLocalsInit]
internal static unsafe class DecodeLinear
{
    /// <summary>The most rows (the product of x's leading dimensions) handled here: at 32 rows this loop still beat MKL
    /// by 1.2-1.3× on every shape measured (128 → 384 … 3072 → 768); beyond, a prefill's hundreds of rows, MKL's blocked
    /// GEMM reuses each packed weight block across enough rows to win.</summary>
    internal const int MaxRows = 32;

    /// <summary>From this many multiply-adds (M·N·K) on, with several torch threads, the output features are split
    /// between threads (GPT-2's 8-row MLP, 19M, takes about 400 µs on one core); below it one thread is faster than
    /// waking others (the Shakespeare model's layers are at most 0.5M).</summary>
    internal const long ParallelThreshold = 1L << 21;

    /// <summary>Off: every linear layer goes to libtorch (benchmarks compare the two paths side by side; tests check
    /// that generation agrees). Process-wide, not for concurrent toggling.</summary>
    internal static bool Enabled { get; set; } = true;

    // Weight rows (output features) per block: each is read once per block of input rows.
    private const int Features = 4;

    /// <summary>
    /// Computes the layer when this path applies: x (…, K) contiguous with at most <see cref="MaxRows"/> rows, weight
    /// (N, K) contiguous, bias (N) or null, all fp32 on the CPU, K a multiple of 8, AVX2 with FMA, and no gradient to
    /// record (grad mode off, or no input requires one). Returns null otherwise, and the caller uses libtorch's linear.
    /// </summary>
    /// <returns>(…, N), or null.</returns>
    public static Tensor? TryLinear(Tensor x, Tensor weight, Tensor? bias)
    {
        if (!Enabled || !Fma.IsSupported || !Avx.IsSupported
            || x.dtype != ScalarType.Float32 || weight.dtype != ScalarType.Float32
            || x.device_type != DeviceType.CPU || weight.device_type != DeviceType.CPU)
        {
            return null;
        }

        var wShape = weight.shape;
        var xShape = x.shape;
        if (wShape.Length != 2 || xShape.Length == 0)
            return null;
        long N = wShape[0], K = wShape[1];
        if (K == 0 || K % 8 != 0 || N == 0 || xShape[^1] != K)
            return null;
        long M = 1;
        for (int i = 0; i < xShape.Length - 1; i++)
            M *= xShape[i];
        if (M == 0 || M > MaxRows)
            return null;
        if (bias is not null && (bias.dtype != ScalarType.Float32 || bias.device_type != DeviceType.CPU || bias.shape is not [var biasLength] || biasLength != N || !bias.is_contiguous()))
            return null;
        if (is_grad_enabled() && (x.requires_grad || weight.requires_grad || bias?.requires_grad == true))
            return null;
        if (!x.is_contiguous() || !weight.is_contiguous())
            return null;

        var yShape = (long[])xShape.Clone();
        yShape[^1] = N;
        var y = empty(yShape, ScalarType.Float32);                                            // (…, N)
        var args = new Arguments
        {
            X = TensorMemory.Floats(x),
            W = TensorMemory.Floats(weight),
            B = bias is null ? null : TensorMemory.Floats(bias),
            Y = TensorMemory.Floats(y),
            M = (int)M,
            N = (int)N,
            K = (int)K,
        };

        int blocks = (args.N + Features - 1) / Features;
        int threads = M * N * K >= ParallelThreshold ? Math.Min(DecodeThreads.Count, blocks) : 1;
        if (threads <= 1)
        {
            Run(args, 0, blocks);
        }
        else
        {
            // Contiguous ranges of feature blocks, four per thread, taken as threads become free: a thread that shares
            // its core (with libtorch's OpenMP workers, which spin for a while after each parallel region) takes fewer.
            // Each output is computed exactly as on one thread.
            int parts = Math.Min(blocks, 4 * threads);
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads },
                part => Run(args, (int)((long)blocks * part / parts), (int)((long)blocks * (part + 1) / parts)));
        }

        return y;
    }

    private struct Arguments
    {
        public float* X, W, B, Y;
        public int M, N, K;
    }

    /// <summary>Feature blocks [<paramref name="first"/>, <paramref name="end"/>) for every row: four rows at a time where
    /// the CPU has 32 vector registers (16 accumulators plus loads), else two, then one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Run(Arguments a, int first, int end)
    {
        bool fourRows = Avx512F.VL.IsSupported;
        for (int block = first; block < end; block++)
        {
            int n = block * Features;
            int valid = Math.Min(Features, a.N - n);
            // A last block with fewer than four features repeats its last weight row; those lanes are not stored.
            float* w0 = a.W + (long)n * a.K;
            float* w1 = a.W + (long)Math.Min(n + 1, a.N - 1) * a.K;
            float* w2 = a.W + (long)Math.Min(n + 2, a.N - 1) * a.K;
            float* w3 = a.W + (long)Math.Min(n + 3, a.N - 1) * a.K;
            var bias = Vector128<float>.Zero;
            if (a.B is not null)
            {
                bias = valid == Features
                    ? Vector128.Load(a.B + n)
                    : Vector128.Create(a.B[n], a.B[Math.Min(n + 1, a.N - 1)], a.B[Math.Min(n + 2, a.N - 1)], a.B[Math.Min(n + 3, a.N - 1)]);
            }

            // The next block's four weight rows lie right after this block's: fetch them while this one computes.
            float* next = block + 1 < end ? a.W + (long)(n + Features) * a.K : null;
            int m = 0;
            if (fourRows)
            {
                for (; m + 4 <= a.M; m += 4)
                    FourRows(next, a.X + (long)m * a.K, a.K, w0, w1, w2, w3, bias, a.Y + (long)m * a.N + n, a.N, valid);
            }

            for (; m + 2 <= a.M; m += 2)
                TwoRows(next, a.X + (long)m * a.K, a.K, w0, w1, w2, w3, bias, a.Y + (long)m * a.N + n, a.N, valid);
            if (m < a.M)
                OneRow(next, a.X + (long)m * a.K, a.K, w0, w1, w2, w3, bias, a.Y + (long)m * a.N + n, valid);
        }
    }

    // The three row-block forms accumulate each (row, feature) in the same lanes in the same order of k and reduce it
    // with the same tree (Reduce), so which form computed a row does not change its bits.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FourRows(float* next, float* x, int K, float* w0, float* w1, float* w2, float* w3, Vector128<float> bias, float* y, int N, int valid)
    {
        float* x1 = x + K, x2 = x1 + K, x3 = x2 + K;
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        Vector256<float> a20 = default, a21 = default, a22 = default, a23 = default;
        Vector256<float> a30 = default, a31 = default, a32 = default, a33 = default;
        for (int k = 0; k < K; k += 8)
        {
            Prefetch(next, k);
            var v0 = Vector256.Load(w0 + k);
            var v1 = Vector256.Load(w1 + k);
            var v2 = Vector256.Load(w2 + k);
            var v3 = Vector256.Load(w3 + k);
            var xk = Vector256.Load(x + k);
            a00 = Fma.MultiplyAdd(xk, v0, a00);
            a01 = Fma.MultiplyAdd(xk, v1, a01);
            a02 = Fma.MultiplyAdd(xk, v2, a02);
            a03 = Fma.MultiplyAdd(xk, v3, a03);
            xk = Vector256.Load(x1 + k);
            a10 = Fma.MultiplyAdd(xk, v0, a10);
            a11 = Fma.MultiplyAdd(xk, v1, a11);
            a12 = Fma.MultiplyAdd(xk, v2, a12);
            a13 = Fma.MultiplyAdd(xk, v3, a13);
            xk = Vector256.Load(x2 + k);
            a20 = Fma.MultiplyAdd(xk, v0, a20);
            a21 = Fma.MultiplyAdd(xk, v1, a21);
            a22 = Fma.MultiplyAdd(xk, v2, a22);
            a23 = Fma.MultiplyAdd(xk, v3, a23);
            xk = Vector256.Load(x3 + k);
            a30 = Fma.MultiplyAdd(xk, v0, a30);
            a31 = Fma.MultiplyAdd(xk, v1, a31);
            a32 = Fma.MultiplyAdd(xk, v2, a32);
            a33 = Fma.MultiplyAdd(xk, v3, a33);
        }

        Store(Reduce(a00, a01, a02, a03) + bias, y, valid);
        Store(Reduce(a10, a11, a12, a13) + bias, y + N, valid);
        Store(Reduce(a20, a21, a22, a23) + bias, y + 2 * N, valid);
        Store(Reduce(a30, a31, a32, a33) + bias, y + 3 * N, valid);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TwoRows(float* next, float* x, int K, float* w0, float* w1, float* w2, float* w3, Vector128<float> bias, float* y, int N, int valid)
    {
        float* x1 = x + K;
        Vector256<float> a00 = default, a01 = default, a02 = default, a03 = default;
        Vector256<float> a10 = default, a11 = default, a12 = default, a13 = default;
        for (int k = 0; k < K; k += 8)
        {
            Prefetch(next, k);
            var v0 = Vector256.Load(w0 + k);
            var v1 = Vector256.Load(w1 + k);
            var v2 = Vector256.Load(w2 + k);
            var v3 = Vector256.Load(w3 + k);
            var xk = Vector256.Load(x + k);
            a00 = Fma.MultiplyAdd(xk, v0, a00);
            a01 = Fma.MultiplyAdd(xk, v1, a01);
            a02 = Fma.MultiplyAdd(xk, v2, a02);
            a03 = Fma.MultiplyAdd(xk, v3, a03);
            xk = Vector256.Load(x1 + k);
            a10 = Fma.MultiplyAdd(xk, v0, a10);
            a11 = Fma.MultiplyAdd(xk, v1, a11);
            a12 = Fma.MultiplyAdd(xk, v2, a12);
            a13 = Fma.MultiplyAdd(xk, v3, a13);
        }

        Store(Reduce(a00, a01, a02, a03) + bias, y, valid);
        Store(Reduce(a10, a11, a12, a13) + bias, y + N, valid);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void OneRow(float* next, float* x, int K, float* w0, float* w1, float* w2, float* w3, Vector128<float> bias, float* y, int valid)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (int k = 0; k < K; k += 8)
        {
            Prefetch(next, k);
            var xk = Vector256.Load(x + k);
            a0 = Fma.MultiplyAdd(xk, Vector256.Load(w0 + k), a0);
            a1 = Fma.MultiplyAdd(xk, Vector256.Load(w1 + k), a1);
            a2 = Fma.MultiplyAdd(xk, Vector256.Load(w2 + k), a2);
            a3 = Fma.MultiplyAdd(xk, Vector256.Load(w3 + k), a3);
        }

        Store(Reduce(a0, a1, a2, a3) + bias, y, valid);
    }

    /// <summary>Two cache lines of the next block per step of 8 columns: its 4·K floats over this block's K/8 steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(float* next, int k)
    {
        if (next is not null)
        {
            Sse.Prefetch0(next + 4 * k);
            Sse.Prefetch0(next + 4 * k + 16);
        }
    }

    /// <summary>The four sums of the lanes of a, b, c and d: three horizontal adds and one add of the halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<float> Reduce(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        var sums = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));     // a b c d of lanes 0-3 | 4-7
        return sums.GetLower() + sums.GetUpper();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector128<float> sums, float* y, int valid)
    {
        if (valid == Features)
        {
            sums.Store(y);
            return;
        }

        for (int i = 0; i < valid; i++)
            y[i] = sums.GetElement(i);
    }
}
