using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Token blocks read once from an <see cref="IDataView"/> into one contiguous array (4 bytes per token: 1 GB holds
/// 250 M tokens), with optional document ids and loss mask. Batches are cut from it by row index, so a seeded
/// permutation gives the data order and a (epoch, offset) pair is the whole data position for resuming.
/// </summary>
internal sealed class TokenBlocks
{
    private readonly int[] _tokens;
    private readonly int[]? _documentIds;
    private readonly bool[]? _lossMask;

    private TokenBlocks(int count, int blockLength, int[] tokens, int[]? documentIds, bool[]? lossMask)
    {
        Count = count;
        BlockLength = blockLength;
        _tokens = tokens;
        _documentIds = documentIds;
        _lossMask = lossMask;
    }

    /// <summary>Number of blocks (rows).</summary>
    public int Count { get; }

    /// <summary>Tokens per block: the context length + 1.</summary>
    public int BlockLength { get; }

    /// <summary>Positions predicted per block.</summary>
    public int ContextLength => BlockLength - 1;

    public bool HasDocumentIds => _documentIds is not null;

    /// <summary>Whether a loss mask marks some tokens as not predicted.</summary>
    public bool HasLossMask => _lossMask is not null;

    /// <summary>Largest token id in the data (−1 when empty).</summary>
    public int MaxTokenId { get; private init; }

    /// <summary>
    /// Reads and validates the columns. <paramref name="dataName"/> names the data in messages ("training data",
    /// "validation data"); <paramref name="expectedBlockLength"/> is enforced when given.
    /// </summary>
    public static TokenBlocks Read(IDataView data, string tokensColumn, string? documentIdsColumn, string? lossMaskColumn,
        string dataName, int? expectedBlockLength = null)
    {
        ArgumentNullException.ThrowIfNull(data);
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
        return new TokenBlocks(count, blockLength, tokens.ToArray(), docs?.ToArray(), mask?.ToArray()) { MaxTokenId = maxId };
    }

    /// <summary>Fails when a token id is outside [0, <paramref name="vocabularySize"/>).</summary>
    public void CheckVocabulary(int vocabularySize, string dataName, string tokensColumn)
    {
        if (MaxTokenId < vocabularySize)
            return;
        int index = Array.FindIndex(_tokens, t => t >= vocabularySize);
        throw new ArgumentOutOfRangeException(tokensColumn, _tokens[index],
            $"Row {index / BlockLength} of the {dataName} has token id {_tokens[index]} in column '{tokensColumn}', but the model's vocabulary " +
            $"has {vocabularySize} tokens (ids 0..{vocabularySize - 1}). Use the tokenizer the model was built for, or a larger GptConfig.VocabularySize.");
    }

    /// <summary>UTF-8 bytes of the predicted tokens of the given rows.</summary>
    public long CountTargetBytes(LmTokenizer tokenizer, ReadOnlySpan<int> rows, bool withDocumentIds)
    {
        long bytes = 0;
        foreach (int r in rows)
        {
            for (int t = 1; t < BlockLength; t++)
            {
                if (IsTarget(r, t, withDocumentIds))
                    bytes += tokenizer.GetByteCount(_tokens[r * BlockLength + t]);
            }
        }

        return bytes;
    }

    /// <summary>
    /// Whether token <paramref name="t"/> of <paramref name="row"/> is predicted: true under the loss mask (not padding,
    /// not a prompt) and, with document masking, of the same document as the token before it. Under document masking
    /// the position before a document's first token sees only the previous document, so that target would be
    /// predicted from unrelated context; excluding it makes a packed block score exactly what the same documents score
    /// one per row.
    /// </summary>
    private bool IsTarget(int row, int t, bool withDocumentIds)
    {
        int i = row * BlockLength + t;
        if (_lossMask is not null && !_lossMask[i])
            return false;
        return !withDocumentIds || _documentIds is null || _documentIds[i] == _documentIds[i - 1];
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
        var doc = withDocumentIds && _documentIds is not null ? new long[b * t] : null;
        for (int i = 0; i < b; i++)
        {
            int start = rows[i] * BlockLength;
            for (int j = 0; j < t; j++)
            {
                x[i * t + j] = _tokens[start + j];
                y[i * t + j] = IsTarget(rows[i], j + 1, doc is not null) ? _tokens[start + j + 1] : -1;
                if (doc is not null)
                    doc[i * t + j] = _documentIds![start + j];
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
        if (_lossMask is null && (!withDocumentIds || _documentIds is null))
            return (long)rows.Length * ContextLength;
        long n = 0;
        foreach (int r in rows)
        {
            for (int t = 1; t < BlockLength; t++)
            {
                if (IsTarget(r, t, withDocumentIds))
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
}
