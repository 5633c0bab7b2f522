using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// The keys and values that a <see cref="GptModel"/>'s attention layers computed for the tokens seen so far, so that
/// generating one more token needs the work of one position only (<see cref="GptModel.forward(Tensor, KvCache)"/>).
/// </summary>
/// <remarks>
/// <para>
/// The buffers, (B, nkv, ContextLength, hs) per layer (nkv = <see cref="GptConfig.ResolvedKeyValueHeadCount"/>) for keys and for values, are allocated on the first forward pass
/// with the model's type and device and live until <see cref="Dispose"/>, outside any dispose scope.
/// For GPT-2 small at context 1024 and batch 1 that is 2·12·1024·768 fp32 values, 72 MiB.
/// </para>
/// <para>
/// The cache holds at most <see cref="GptConfig.ContextLength"/> positions. To continue past it, <see cref="Reset"/>
/// and run the last tokens again (the model was trained on positions below the context length only).
/// </para>
/// </remarks>
public sealed class KvCache : IDisposable
{
    private readonly GptConfig config;
    private Tensor[]? keys;
    private Tensor[]? values;
    private long batchSize;
    private bool disposed;

    /// <summary>Creates an empty cache for <paramref name="model"/>.</summary>
    /// <param name="model">The model whose attention layers the cache serves.</param>
    public KvCache(GptModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        config = model.Config;
    }

    /// <summary>The number of positions cached: the length of the sequence the next token continues.</summary>
    public long Length { get; private set; }

    /// <summary>Empties the cache, keeping its buffers, to start a new sequence.</summary>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        Length = 0;
    }

    /// <summary>Releases the buffers.</summary>
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        foreach (var tensor in (keys ?? []).Concat(values ?? []))
        {
            tensor.Dispose();
        }

        keys = values = null;
    }

    /// <summary>Checks that <paramref name="newTokens"/> more positions of a batch of <paramref name="batch"/> fit.</summary>
    internal void CheckFits(GptConfig modelConfig, long batch, long newTokens)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (!modelConfig.Equals(config))
        {
            throw new ArgumentException("The KV cache was made for a model with another configuration; create one with new KvCache(model).", "cache");
        }

        if (keys is not null && batch != batchSize)
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"The KV cache holds a batch of {batchSize} sequences, got {batch}; create another cache for another batch size."),
                "cache");
        }

        if (Length + newTokens > config.ContextLength)
        {
            throw new ArgumentException(
                string.Create(CultureInfo.InvariantCulture, $"The KV cache holds {Length} positions and {newTokens} more would exceed the context length {config.ContextLength}; call Reset() and run the last tokens again."),
                "cache");
        }
    }

    /// <summary>
    /// Writes the new keys and values of one layer after the cached ones and returns all of them, as views of the
    /// buffers: (B, nkv, Length + T, hs) each.
    /// </summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor newKeys, Tensor newValues)
    {
        if (keys is null || values is null)
        {
            Allocate(newKeys);
        }

        long T = newKeys.shape[2];
        keys![layer].narrow(2, Length, T).copy_(newKeys);
        values![layer].narrow(2, Length, T).copy_(newValues);
        return (keys[layer].narrow(2, 0, Length + T), values[layer].narrow(2, 0, Length + T));
    }

    /// <summary>
    /// Keeps the rows <paramref name="rows"/> of the batch, in that order (a row may repeat): beam search reorders its
    /// beams this way instead of recomputing them, and batched generation drops finished rows. The batch size becomes
    /// the number of rows.
    /// </summary>
    /// <param name="rows">(B') int64 row indices on the cache's device.</param>
    internal void SelectRows(Tensor rows)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (keys is null || values is null)
        {
            return;
        }

        // Only the filled positions move: a copy of Length positions, not of the whole context-long buffer.
        using var scope = NewDisposeScope();
        long newBatch = rows.shape[0];
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = Select(keys[i], rows, newBatch);
            values[i] = Select(values[i], rows, newBatch);
        }

        batchSize = newBatch;
    }

    private Tensor Select(Tensor buffer, Tensor rows, long newBatch)
    {
        var selected = buffer.narrow(2, 0, Length).index_select(0, rows);         // (B', nkv, Length, hs)
        if (newBatch == batchSize)
        {
            buffer.narrow(2, 0, Length).copy_(selected);
            return buffer;
        }

        var shape = buffer.shape;
        shape[0] = newBatch;
        var resized = zeros(shape, dtype: buffer.dtype, device: buffer.device).DetachFromDisposeScope();
        resized.narrow(2, 0, Length).copy_(selected);
        buffer.Dispose();
        return resized;
    }

    /// <summary>
    /// Appends the rows of <paramref name="other"/> (same model, both filled) after this cache's rows. The shorter one's
    /// positions move right so that both end at the same column, <see cref="Length"/> becoming the longer length; the
    /// columns opened on the left are zeros, which the caller masks as padding. Returns how far this cache's rows and
    /// <paramref name="other"/>'s rows moved.
    /// </summary>
    internal (long Shift, long OtherShift) AppendRows(KvCache other)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (keys is null || values is null || other.keys is null || other.values is null)
        {
            throw new InvalidOperationException("Both KV caches must hold positions before their rows are joined.");
        }

        long length = Math.Max(Length, other.Length);
        long shift = length - Length, otherShift = length - other.Length;
        using var scope = NewDisposeScope();
        for (int i = 0; i < keys.Length; i++)
        {
            keys[i] = Join(keys[i], shift, other.keys[i], other.batchSize, other.Length, otherShift);
            values[i] = Join(values[i], shift, other.values[i], other.batchSize, other.Length, otherShift);
        }

        batchSize += other.batchSize;
        Length = length;
        return (shift, otherShift);
    }

    private Tensor Join(Tensor mine, long shift, Tensor theirs, long theirBatch, long theirLength, long theirShift)
    {
        var shape = mine.shape;
        shape[0] = batchSize + theirBatch;
        var joined = zeros(shape, dtype: mine.dtype, device: mine.device).DetachFromDisposeScope();
        joined.narrow(0, 0, batchSize).narrow(2, shift, Length).copy_(mine.narrow(2, 0, Length));
        joined.narrow(0, batchSize, theirBatch).narrow(2, theirShift, theirLength).copy_(theirs.narrow(2, 0, theirLength));
        mine.Dispose();
        return joined;
    }

    /// <summary>Counts the positions that the forward pass just appended to every layer.</summary>
    internal void Advance(long newTokens) => Length += newTokens;

    private void Allocate(Tensor like)
    {
        batchSize = like.shape[0];
        long[] shape = [batchSize, config.ResolvedKeyValueHeadCount, config.ContextLength, config.HeadSize];   // nkv heads: GQA's saving
        keys = new Tensor[config.LayerCount];
        values = new Tensor[config.LayerCount];
        for (int i = 0; i < config.LayerCount; i++)
        {
            // Detached from the caller's dispose scope: the cache outlives the forward pass that allocates it. Not zeroed:
            // Append writes every position before a view reaches it, so only the positions a generation uses are ever
            // touched (zeroing all ContextLength of them cost 8 rows of the Shakespeare model at context 1024 34 MB of
            // writes and page faults per call, more than a tenth of a 128-token generation).
            keys[i] = empty(shape, dtype: like.dtype, device: like.device).DetachFromDisposeScope();
            values[i] = empty(shape, dtype: like.dtype, device: like.device).DetachFromDisposeScope();
        }
    }
}
