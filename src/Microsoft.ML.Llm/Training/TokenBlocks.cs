using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Fixed-length token blocks with optional document ids and loss mask, served by row index, so a seeded permutation
/// gives the data order and a (epoch, offset) pair is the whole data position for resuming. Two stores: blocks read
/// once from an <see cref="IDataView"/> into one contiguous array (4 bytes per token: 1 GB holds 250 M tokens), or —
/// when the data is <c>mlContext.Data.LoadTokenShards</c>' view — the memory-mapped shards themselves, read block by
/// block as batches are cut, so memory stays bounded whatever the corpus size (issue 12).
/// </summary>
internal sealed class TokenBlocks
{
    private readonly IBlockStore _store;
    private readonly int[] _tokens;        // scratch: one block
    private readonly int[] _documentIds;
    private readonly bool[] _lossMask;
    private int _scratchRow = -1;

    private TokenBlocks(int count, int blockLength, IBlockStore store)
    {
        Count = count;
        BlockLength = blockLength;
        _store = store;
        _tokens = new int[blockLength];
        _documentIds = new int[store.HasDocumentIds ? blockLength : 0];
        _lossMask = new bool[store.HasLossMask ? blockLength : 0];
    }

    /// <summary>Number of blocks (rows).</summary>
    public int Count { get; }

    /// <summary>Tokens per block: the context length + 1.</summary>
    public int BlockLength { get; }

    /// <summary>Positions predicted per block.</summary>
    public int ContextLength => BlockLength - 1;

    public bool HasDocumentIds => _store.HasDocumentIds;

    /// <summary>Whether a loss mask marks some tokens as not predicted.</summary>
    public bool HasLossMask => _store.HasLossMask;

    /// <summary>Whether the blocks are read from memory-mapped token shards rather than held in memory.</summary>
    public bool IsOnDisk => _store is ShardStore;

    /// <summary>Largest token id in the data (−1 when empty); for shards, bounded by the vocabulary they record (a scan
    /// of every token only when they record none, as llm.c's files).</summary>
    public int MaxTokenId => _store.MaxTokenId;

    /// <summary>
    /// Reads and validates the columns. <paramref name="dataName"/> names the data in messages ("training data",
    /// "validation data"); <paramref name="expectedBlockLength"/> is enforced when given.
    /// </summary>
    public static TokenBlocks Read(IDataView data, string tokensColumn, string? documentIdsColumn, string? lossMaskColumn,
        string dataName, int? expectedBlockLength = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data is TokenShardDataView shards && tokensColumn == TokenShardDataView.TokensColumnName
            && (documentIdsColumn is null || documentIdsColumn == TokenShardDataView.DocumentIdsColumnName)
            && (lossMaskColumn is null || lossMaskColumn == TokenShardDataView.LossMaskColumnName))
        {
            return FromShards(shards.Shards, documentIdsColumn is not null, lossMaskColumn is not null, dataName, expectedBlockLength);
        }

        var tokensCol = RequireVector(data.Schema, tokensColumn, nameof(CausalLmTrainerOptions.TokensColumnName), IsTokenType,
            "a vector of Int32, Int64, UInt32 or UInt16 token ids");
        DataViewSchema.Column? docCol = documentIdsColumn is null ? null
            : RequireVector(data.Schema, documentIdsColumn, nameof(CausalLmTrainerOptions.DocumentIdsColumnName),
                t => t == NumberDataViewType.Int32, "a vector of Int32");
        DataViewSchema.Column? maskCol = lossMaskColumn is null ? null
            : RequireVector(data.Schema, lossMaskColumn, nameof(CausalLmTrainerOptions.LossMaskColumnName),
                t => t == BooleanDataViewType.Instance, "a vector of Boolean");

        var tokens = new List<int>();
        var docs = docCol is null ? null : new List<int>();
        var mask = maskCol is null ? null : new List<bool>();
        int blockLength = expectedBlockLength ?? -1;
        int count = 0, maxId = -1;
        var columns = new List<DataViewSchema.Column> { tokensCol };
        if (docCol is { } d)
            columns.Add(d);
        if (maskCol is { } m)
            columns.Add(m);

        using (var cursor = data.GetRowCursor(columns))
        {
            var getTokens = TokenGetter(cursor, tokensCol);
            ValueGetter<VBuffer<int>>? getDocs = docCol is { } dc ? cursor.GetGetter<VBuffer<int>>(dc) : null;
            ValueGetter<VBuffer<bool>>? getMask = maskCol is { } mc ? cursor.GetGetter<VBuffer<bool>>(mc) : null;
            var row = new List<int>();
            VBuffer<int> docBuffer = default;
            VBuffer<bool> maskBuffer = default;
            while (cursor.MoveNext())
            {
                row.Clear();
                getTokens(row);
                if (row.Count < 2)
                {
                    throw new ArgumentException(
                        $"Row {count} of the {dataName} has {row.Count} token(s) in column '{tokensColumn}'; a block needs at least 2 tokens " +
                        "(inputs are tokens 0..T-1, targets 1..T). Pack the tokens with PackTokens.");
                }

                if (blockLength < 0)
                {
                    blockLength = row.Count;
                }
                else if (row.Count != blockLength)
                {
                    throw new ArgumentException(
                        $"Row {count} of the {dataName} has {row.Count} tokens in column '{tokensColumn}', expected {blockLength} like the " +
                        (expectedBlockLength is null ? "first row" : "training data") + ". Every block must have the same length (PackTokens produces such blocks).");
                }

                foreach (int id in row)
                {
                    if (id < 0)
                    {
                        throw new ArgumentOutOfRangeException(tokensColumn, id,
                            $"Row {count} of the {dataName} has token id {id} in column '{tokensColumn}'; token ids must be non-negative.");
                    }

                    if (id > maxId)
                        maxId = id;
                }
                tokens.AddRange(row);
                if (getDocs is not null)
                {
                    getDocs(ref docBuffer);
                    CheckLength(docBuffer.Length, blockLength, documentIdsColumn!, count, dataName);
                    foreach (var v in docBuffer.DenseValues())
                        docs!.Add(v);
                }
                if (getMask is not null)
                {
                    getMask(ref maskBuffer);
                    CheckLength(maskBuffer.Length, blockLength, lossMaskColumn!, count, dataName);
                    foreach (var v in maskBuffer.DenseValues())
                        mask!.Add(v);
                }
                count++;
            }
        }
        if (count == 0)
            throw new ArgumentException($"The {dataName} has no rows in column '{tokensColumn}'; at least one block of tokens is needed.", nameof(data));
        return new TokenBlocks(count, blockLength, new ArrayStore(blockLength, tokens.ToArray(), docs?.ToArray(), mask?.ToArray(), maxId));
    }

    /// <summary>The blocks of memory-mapped shards, read on demand (nothing is copied up front).</summary>
    private static TokenBlocks FromShards(TokenShardSet shards, bool documentIds, bool lossMask, string dataName, int? expectedBlockLength)
    {
        if (shards.BlockCount == 0)
            throw new ArgumentException($"The {dataName} (token shards in '{shards.Directory}') has no whole block of {shards.BlockLength} tokens; at least one block is needed.", "data");
        if (shards.BlockCount > int.MaxValue)
        {
            throw new ArgumentException(
                $"The {dataName} (token shards in '{shards.Directory}') has {shards.BlockCount} blocks; at most {int.MaxValue} are supported. Use longer blocks (a larger context).", "data");
        }
        if (expectedBlockLength is { } expected && shards.BlockLength != expected)
        {
            throw new ArgumentException(
                $"The {dataName} (token shards in '{shards.Directory}') has blocks of {shards.BlockLength} tokens, expected {expected} like the training data. Every block must have the same length.");
        }
        if (documentIds && !shards.HasDocumentIds)
            throw new ArgumentException($"The {dataName} (token shards in '{shards.Directory}') recorded no document boundaries, but document ids were requested.");
        if (lossMask && !shards.HasLossMask)
            throw new ArgumentException($"The {dataName} (token shards in '{shards.Directory}') recorded no loss mask, but a loss mask was requested.");
        return new TokenBlocks((int)shards.BlockCount, shards.BlockLength, new ShardStore(shards, documentIds, lossMask));
    }

    /// <summary>Fails when a token id is outside [0, <paramref name="vocabularySize"/>).</summary>
    public void CheckVocabulary(int vocabularySize, string dataName, string tokensColumn)
    {
        if (MaxTokenId < vocabularySize)
            return;
        if (_store is ShardStore shards && shards.RecordedVocabulary > 0)
        {
            throw new ArgumentOutOfRangeException(tokensColumn, shards.RecordedVocabulary,
                $"The {dataName} (token shards in '{shards.Directory}') was written with a vocabulary of {shards.RecordedVocabulary} tokens, but the model's vocabulary " +
                $"has {vocabularySize} tokens (ids 0..{vocabularySize - 1}): the shards come from another tokenizer. Write them again with the model's tokenizer, or use a larger GptConfig.VocabularySize.");
        }
        for (int r = 0; r < Count; r++)
        {
            var block = Tokens(r);
            int index = block.IndexOfAnyExceptInRange(0, vocabularySize - 1);
            if (index >= 0)
            {
                throw new ArgumentOutOfRangeException(tokensColumn, block[index],
                    $"Row {r} of the {dataName} has token id {block[index]} in column '{tokensColumn}', but the model's vocabulary " +
                    $"has {vocabularySize} tokens (ids 0..{vocabularySize - 1}). Use the tokenizer the model was built for, or a larger GptConfig.VocabularySize.");
            }
        }
    }

    /// <summary>UTF-8 bytes of the predicted tokens of the given rows.</summary>
    public long CountTargetBytes(LmTokenizer tokenizer, ReadOnlySpan<int> rows, bool withDocumentIds)
    {
        long bytes = 0;
        foreach (int r in rows)
        {
            Load(r);
            for (int t = 1; t < BlockLength; t++)
            {
                if (IsTarget(t, withDocumentIds))
                    bytes += tokenizer.GetByteCount(_tokens[t]);
            }
        }

        return bytes;
    }

    /// <summary>
    /// Whether token <paramref name="t"/> of the loaded block (<see cref="Load"/>) is predicted: true under the loss mask (not padding,
    /// not a prompt) and, with document masking, of the same document as the token before it. Under document masking
    /// the position before a document's first token sees only the previous document, so that target would be
    /// predicted from unrelated context; excluding it makes a packed block score exactly what the same documents score
    /// one per row.
    /// </summary>
    private bool IsTarget(int t, bool withDocumentIds)
    {
        if (_lossMask.Length != 0 && !_lossMask[t])
            return false;
        return !withDocumentIds || _documentIds.Length == 0 || _documentIds[t] == _documentIds[t - 1];
    }

    /// <summary>Reads block <paramref name="row"/> into the scratch buffers (a copy of one block, from memory or from
    /// the mapped shard).</summary>
    private void Load(int row)
    {
        if (row == _scratchRow)
            return;
        _store.Read(row, _tokens, _documentIds, _lossMask);
        _scratchRow = row;
    }

    /// <summary>The tokens of block <paramref name="row"/> (valid until the next read).</summary>
    public ReadOnlySpan<int> Tokens(int row)
    {
        Load(row);
        return _tokens;
    }

    /// <summary>
    /// Builds the (B, T) int64 tensors for <paramref name="rows"/>: inputs, targets (−1 where the token is not a target,
    /// see <see cref="IsTarget"/>; ignored by cross_entropy) and, when present and requested, document ids.
    /// </summary>
    public (Tensor Inputs, Tensor Targets, Tensor? DocumentIds) Batch(ReadOnlySpan<int> rows, Device device, bool withDocumentIds)
    {
        int b = rows.Length, t = ContextLength;
        var x = new long[b * t];
        var y = new long[b * t];
        var doc = withDocumentIds && HasDocumentIds ? new long[b * t] : null;
        for (int i = 0; i < b; i++)
        {
            Load(rows[i]);
            for (int j = 0; j < t; j++)
            {
                x[i * t + j] = _tokens[j];
                y[i * t + j] = IsTarget(j + 1, doc is not null) ? _tokens[j + 1] : -1;
                if (doc is not null)
                    doc[i * t + j] = _documentIds[j];
            }
        }
        var inputs = ModelInputs.Int64(x, b, t, device);
        var targets = ModelInputs.Int64(y, b, t, device);
        var docs = doc is null ? null : ModelInputs.Int64(doc, b, t, device);
        return (inputs, targets, docs);
    }

    /// <summary>Predicted targets among <paramref name="rows"/> (see <see cref="IsTarget"/>).</summary>
    public long CountTargets(ReadOnlySpan<int> rows, bool withDocumentIds)
    {
        if (!HasLossMask && (!withDocumentIds || !HasDocumentIds))
            return (long)rows.Length * ContextLength;
        long n = 0;
        foreach (int r in rows)
        {
            Load(r);
            for (int t = 1; t < BlockLength; t++)
            {
                if (IsTarget(t, withDocumentIds))
                    n++;
            }
        }

        return n;
    }

    private static bool IsTokenType(DataViewType t) =>
        t == NumberDataViewType.Int32 || t == NumberDataViewType.Int64 || t == NumberDataViewType.UInt32 || t == NumberDataViewType.UInt16;

    private static DataViewSchema.Column RequireVector(DataViewSchema schema, string name, string option, Func<DataViewType, bool> itemOk, string expected)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException($"Option '{option}' must name a column; got '{name}'.", option);
        var col = schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException(option, name, $"Input column '{name}' ({option}) not found in the data. Available columns: {string.Join(", ", schema.Select(c => c.Name))}.");
        if (col.Type is not VectorDataViewType v || !itemOk(v.ItemType))
            throw new ArgumentOutOfRangeException(option, name, $"Schema mismatch for input column '{name}': expected {expected}, got {col.Type}.");
        return col;
    }

    private static Action<List<int>> TokenGetter(DataViewRowCursor cursor, DataViewSchema.Column col)
    {
        var item = ((VectorDataViewType)col.Type).ItemType;
        if (item == NumberDataViewType.Int32)
        {
            var g = cursor.GetGetter<VBuffer<int>>(col);
            VBuffer<int> buf = default;
            return list => { g(ref buf); foreach (var v in buf.DenseValues()) list.Add(v); };
        }
        if (item == NumberDataViewType.Int64)
        {
            var g = cursor.GetGetter<VBuffer<long>>(col);
            VBuffer<long> buf = default;
            return list => { g(ref buf); foreach (var v in buf.DenseValues()) list.Add(checked((int)v)); };
        }
        if (item == NumberDataViewType.UInt32)
        {
            var g = cursor.GetGetter<VBuffer<uint>>(col);
            VBuffer<uint> buf = default;
            return list => { g(ref buf); foreach (var v in buf.DenseValues()) list.Add(checked((int)v)); };
        }
        var g16 = cursor.GetGetter<VBuffer<ushort>>(col);
        VBuffer<ushort> b16 = default;
        return list => { g16(ref b16); foreach (var v in b16.DenseValues()) list.Add(v); };
    }

    private static void CheckLength(int actual, int expected, string column, int row, string dataName)
    {
        if (actual != expected)
            throw new ArgumentException($"Row {row} of the {dataName} has {actual} values in column '{column}', expected {expected} (one per token).");
    }

    /// <summary>Where the blocks live.</summary>
    private interface IBlockStore
    {
        bool HasDocumentIds { get; }

        bool HasLossMask { get; }

        int MaxTokenId { get; }

        /// <summary>Copies block <paramref name="row"/>; the id and mask spans are empty when the store has none.</summary>
        void Read(int row, Span<int> tokens, Span<int> documentIds, Span<bool> lossMask);
    }

    /// <summary>Blocks held in memory, one contiguous array per column.</summary>
    private sealed class ArrayStore(int blockLength, int[] tokens, int[]? documentIds, bool[]? lossMask, int maxTokenId) : IBlockStore
    {
        public bool HasDocumentIds => documentIds is not null;

        public bool HasLossMask => lossMask is not null;

        public int MaxTokenId => maxTokenId;

        public void Read(int row, Span<int> tokensOut, Span<int> documentIdsOut, Span<bool> lossMaskOut)
        {
            int start = row * blockLength;
            tokens.AsSpan(start, blockLength).CopyTo(tokensOut);
            if (!documentIdsOut.IsEmpty)
                documentIds.AsSpan(start, blockLength).CopyTo(documentIdsOut);
            if (!lossMaskOut.IsEmpty)
                lossMask.AsSpan(start, blockLength).CopyTo(lossMaskOut);
        }
    }

    /// <summary>Blocks read from memory-mapped token shards when a batch needs them; the shards stay the caller's to dispose.</summary>
    private sealed class ShardStore(TokenShardSet shards, bool documentIds, bool lossMask) : IBlockStore
    {
        private int? _maxTokenId;

        public string Directory => shards.Directory;

        public int RecordedVocabulary => shards.VocabularySize;

        public bool HasDocumentIds => documentIds;

        public bool HasLossMask => lossMask;

        public int MaxTokenId => _maxTokenId ??= shards.VocabularySize > 0 ? shards.VocabularySize - 1 : Scan();

        public void Read(int row, Span<int> tokens, Span<int> documentIdsOut, Span<bool> lossMaskOut) =>
            shards.ReadBlock(row, tokens, documentIdsOut, lossMaskOut);

        /// <summary>The largest id, by reading every block once (llm.c's files record no vocabulary).</summary>
        private int Scan()
        {
            var block = new int[shards.BlockLength];
            int max = -1;
            for (long r = 0; r < shards.BlockCount; r++)
            {
                shards.ReadBlock(r, block);
                max = Math.Max(max, block.Max());
            }

            return max;
        }
    }
}
