using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The rows of one generation batch in one <see cref="KvCache"/>: sequences of different lengths are left-padded, a
/// key mask hides the padding and each row counts its positions from its first real token, so every row computes what
/// it would compute alone. Rows can be dropped (finished sequences stop costing compute) or reordered and repeated
/// (beam search) with <see cref="Select"/>, which moves the cached keys and values instead of recomputing them.
/// </summary>
internal sealed class DecodingBatch : IDisposable
{
    private readonly GptModel _model;
    private readonly int _vocabulary;
    private KvCache? _cache;
    private long[] _padding = [];        // per row: how many cache slots before its first real token
    private readonly Autocast.WeightCache _weights = new();   // bf16/fp16 inference: the weights' casts, made once

    // glibc keeps what this batch frees (its KV cache above all) for the next one instead of unmapping it or trimming the
    // heap: otherwise every generation call faults its cache's pages in again. 8 rows of the Shakespeare model (4 MiB
    // buffers at context 1024) took about 1,500 page faults per 128-token call, 10-30% of its time on this VM.
    private readonly IDisposable? _heap = NativeHeap.Retain();

    public DecodingBatch(GptModel model)
    {
        _model = model;
        _vocabulary = model.Config.ResolvedVocabularySize;
    }

    /// <summary>How many weights this batch has cast to the model's low precision (0 in fp32).</summary>
    internal int CastWeights => _weights.Count;

    /// <summary>The number of rows.</summary>
    public int Rows => _padding.Length;

    /// <summary>The number of cache slots filled (the longest row plus its padding).</summary>
    public long Length => _cache?.Length ?? 0;

    /// <summary>The real vocabulary size: each row's logits are this long.</summary>
    public int Vocabulary => _vocabulary;

    /// <summary>
    /// Starts the batch over with one row per window (each at most the context length): runs them left-padded in one
    /// forward pass and returns the logits of each row's last token, row after row (<see cref="Rows"/> × <see cref="Vocabulary"/>).
    /// </summary>
    public float[] Prefill(IReadOnlyList<ReadOnlyMemory<int>> windows)
    {
        int rows = windows.Count;
        int longest = windows.Max(w => w.Length);
        var padding = new long[rows];
        var ids = new long[rows * longest];
        var positions = new long[rows * longest];
        var valid = new bool[rows * longest];
        for (int r = 0; r < rows; r++)
        {
            var window = windows[r].Span;
            int pad = longest - window.Length;
            padding[r] = pad;
            for (int j = 0; j < longest; j++)
            {
                int at = r * longest + j;
                ids[at] = j < pad ? 0 : window[j - pad];
                positions[at] = Math.Max(0, j - pad);
                valid[at] = j >= pad;
            }
        }

        // Same batch size (the window slides past the context): reuse the buffers rather than allocate new ones per token.
        if (_cache is not null && rows == Rows)
        {
            _cache.Reset();
        }
        else
        {
            _cache?.Dispose();
            _cache = new KvCache(_model);
        }

        _padding = padding;
        bool padded = _padding.Any(p => p > 0);
        using var scope = NewDisposeScope();
        var device = _model.Device;
        var idx = ModelInputs.Int64(ids, rows, longest, device);
        var mask = padded ? ModelInputs.Bool(valid, rows, longest, device) : null;
        var position = padded ? ModelInputs.Int64(positions, rows, longest, device) : null;
        return Run(idx, mask, position);
    }

    /// <summary>Appends one token to every row (in row order) and returns the next logits of every row.</summary>
    public float[] Step(ReadOnlySpan<int> tokens)
    {
        int rows = Rows;
        long length = Length;
        var ids = new long[rows];
        var positions = new long[rows];
        bool padded = false;
        for (int r = 0; r < rows; r++)
        {
            ids[r] = tokens[r];
            positions[r] = length - _padding[r];
            padded |= _padding[r] > 0;
        }

        using var scope = NewDisposeScope();
        var device = _model.Device;
        var idx = ModelInputs.Int64(ids, rows, 1, device);
        Tensor? mask = null, position = null;
        if (padded)
        {
            var valid = new bool[rows * (length + 1)];
            for (int r = 0; r < rows; r++)
            {
                valid.AsSpan((int)(r * (length + 1) + _padding[r]), (int)(length + 1 - _padding[r])).Fill(true);
            }

            mask = ModelInputs.Bool(valid, rows, length + 1, device);
            position = ModelInputs.Int64(positions, rows, 1, device);
        }

        // libtorch on one thread for the step; DecodeLinear splits its layers over the torch thread count instead.
        using var serial = DecodeThreads.Serial();
        return Run(idx, mask, position);
    }

    /// <summary>
    /// Keeps the rows <paramref name="rows"/> in that order (a row may repeat): finished rows leave the batch, beams
    /// follow their parents. The cached keys and values move with the rows.
    /// </summary>
    public void Select(IReadOnlyList<int> rows)
    {
        if (rows.Count == Rows && rows.Select((row, i) => row == i).All(same => same))
        {
            return;
        }

        using (var scope = NewDisposeScope())
        {
            var index = ModelInputs.Int64(rows.Select(r => (long)r).ToArray(), 1, rows.Count, _model.Device)[0];
            _cache!.SelectRows(index);
        }

        _padding = rows.Select(r => _padding[r]).ToArray();

        // Columns that are padding in every remaining row hold no information; dropping them would need a copy of the
        // cache, so they stay (they cost a little attention work only).
    }

    /// <summary>
    /// Adds the rows of <paramref name="other"/> (prefilled on its own) after this batch's rows: requests join a running
    /// batch. The shorter side's cached positions move right, behind more padding, so that every row ends at the same
    /// column; each row keeps its own positions, so it computes what it would alone. <paramref name="other"/> stays
    /// the caller's to dispose.
    /// </summary>
    public void Join(DecodingBatch other)
    {
        var (shift, otherShift) = _cache!.AppendRows(other._cache!);
        _padding = [.. _padding.Select(p => p + shift), .. other._padding.Select(p => p + otherShift)];
    }

    public void Dispose()
    {
        _cache?.Dispose();
        _weights.Dispose();
        _heap?.Dispose();
    }

    private unsafe void CopyRows(Tensor output, float[] result)
    {
        long padded = output.shape[2];
        float* data = TensorMemory.Floats(output);
        for (int r = 0; r < Rows; r++)
            new ReadOnlySpan<float>(data + r * padded, _vocabulary).CopyTo(result.AsSpan(r * _vocabulary, _vocabulary));
    }

    private float[] Run(Tensor idx, Tensor? mask, Tensor? positions)
    {
        // The model's precision, each weight cast once per batch (not once per token); logits come back in fp32.
        using (Autocast.Enable(_model.Precision, _weights))
        {
            var output = _model.forward(idx, _cache!, mask, positions, lastPositionOnly: true);     // (B, 1, padded V)
            var result = new float[Rows * _vocabulary];
            if (output.dtype == ScalarType.Float32 && output.device_type == DeviceType.CPU && output.is_contiguous())
            {
                // fp32 on the CPU: each row's first V logits straight from the tensor's memory. A torch copy of the
                // (B, V) slice would open an OpenMP region for GPT-2's 8 × 50257, after which libgomp's workers spin
                // on the second core while the next step's linear layers want it.
                CopyRows(output, result);
            }
            else
            {
                var host = output[.., -1, .._vocabulary].to(ScalarType.Float32).cpu().contiguous();   // (B, V)
                MemoryMarshal.Cast<byte, float>(host.bytes).CopyTo(result);
            }

            foreach (float value in result)
            {
                if (float.IsNaN(value) || float.IsPositiveInfinity(value))
                {
                    throw new InvalidOperationException($"The model produced a logit of {value}; its weights are damaged or overflowed (NaN or +∞).");
                }
            }

            return result;
        }
    }
}
