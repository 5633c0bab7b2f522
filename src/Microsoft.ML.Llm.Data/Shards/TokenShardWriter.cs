using System.IO.Hashing;

namespace Microsoft.ML.Llm.Data;

/// <summary>Options of <c>mlContext.Data.SaveAsTokenShards</c>.</summary>
public sealed class TokenShardOptions
{
    /// <summary>Default values of the options, written once.</summary>
    public static class Defaults
    {
        /// <summary>The token column PackTokens writes.</summary>
        public const string TokensColumnName = "Tokens";

        /// <summary>100 M tokens per shard (200 MB in uint16), as FineWeb-Edu's llm.c shards.</summary>
        public const int TokensPerShard = 100_000_000;
    }

    /// <summary>The token column: a vector of Int32 (or UInt16, UInt32, Int64) token ids. Fixed-length rows (PackTokens'
    /// blocks) are stored as blocks; variable-length rows (one document each) as a token stream with document starts.</summary>
    public string TokensColumnName { get; set; } = Defaults.TokensColumnName;

    /// <summary>PackTokens' document-id column to keep as document and padding boundaries; null: none.</summary>
    public string? DocumentIdsColumnName { get; set; }

    /// <summary>A Boolean vector column to keep as the loss mask (PackTokens' padding mask, SFT's response mask); null: none.</summary>
    public string? LossMaskColumnName { get; set; }

    /// <summary>Tokens per shard at most (rounded down to whole blocks), 1 024 to 2³¹ − 1.</summary>
    public int TokensPerShard { get; set; } = Defaults.TokensPerShard;

    /// <summary>The vocabulary size; null: the token column's tokenizer annotation (TokenizeForLm/PackTokens). It picks
    /// the token width (uint16 up to 65 536, else uint32) and every id is checked against it. Without either, tokens are
    /// stored as uint32 and the vocabulary is recorded as unknown.</summary>
    public int? VocabularySize { get; set; }

    /// <summary>Replace the shards of an earlier write in the directory (otherwise their presence is an error).</summary>
    public bool Overwrite { get; set; }
}

/// <summary>What <c>SaveAsTokenShards</c> wrote.</summary>
/// <param name="Directory">The shard directory.</param>
/// <param name="Shards">Shard files written.</param>
/// <param name="Rows">Rows read.</param>
/// <param name="Tokens">Tokens written.</param>
/// <param name="TokenBytes">2 (uint16) or 4 (uint32).</param>
/// <param name="BlockLength">The block length, or 0 for a token stream.</param>
/// <param name="Bytes">Bytes written, all shards.</param>
public sealed record TokenShardReport(string Directory, int Shards, long Rows, long Tokens, int TokenBytes, int BlockLength, long Bytes);

/// <summary>Writes a token column to shard files (see <see cref="TokenShardFormat"/>), each under a temporary name, then renamed.</summary>
internal static class TokenShardWriter
{
    public static TokenShardReport Write(IDataView data, string directory, TokenShardOptions? options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new TokenShardOptions();
        if (options.TokensPerShard < 1024)
            throw new ArgumentOutOfRangeException(nameof(TokenShardOptions.TokensPerShard), options.TokensPerShard, $"Option 'TokensPerShard' must be at least 1024; got {options.TokensPerShard}.");

        var schema = data.Schema;
        var tokens = schema.GetColumnOrNull(options.TokensColumnName) ?? throw SchemaChecks.MissingColumn(nameof(data), options.TokensColumnName);
        if (tokens.Type is not VectorDataViewType { ItemType: var itemType } tokenType
            || (itemType != NumberDataViewType.Int32 && itemType != NumberDataViewType.UInt16 && itemType != NumberDataViewType.UInt32 && itemType != NumberDataViewType.Int64))
        {
            throw SchemaChecks.Mismatch(nameof(data), options.TokensColumnName, "Vector<Int32>, Vector<UInt16>, Vector<UInt32> or Vector<Int64>", tokens.Type.ToString() ?? "");
        }
        int blockLength = tokenType.IsKnownSize ? tokenType.Size : 0;
        DataViewSchema.Column? docs = null, mask = null;
        if (options.DocumentIdsColumnName is { } docName)
        {
            docs = SchemaChecks.Int32VectorColumn(schema, docName);
            if (blockLength == 0)
                throw new ArgumentException($"Option 'DocumentIdsColumnName' names '{docName}', but the token column '{options.TokensColumnName}' has variable-length rows: a token stream stores each row as one document already.", nameof(TokenShardOptions.DocumentIdsColumnName));
        }
        if (options.LossMaskColumnName is { } maskName)
        {
            mask = schema.GetColumnOrNull(maskName) ?? throw SchemaChecks.MissingColumn(nameof(data), maskName);
            if (mask.Value.Type is not VectorDataViewType { ItemType: BooleanDataViewType })
                throw SchemaChecks.Mismatch(nameof(data), maskName, "Vector<Boolean>", mask.Value.Type.ToString() ?? "");
        }

        int vocabulary = options.VocabularySize ?? (tokens.TryGetTokenizer(out var tokenizer) ? tokenizer.VocabularySize : 0);
        if (vocabulary < 0)
            throw new ArgumentOutOfRangeException(nameof(TokenShardOptions.VocabularySize), vocabulary, $"Option 'VocabularySize' must be positive; got {vocabulary}.");
        int tokenBytes = vocabulary is > 0 and <= 65536 ? 2 : 4;
        long perShard = blockLength > 0 ? options.TokensPerShard / blockLength * (long)blockLength : options.TokensPerShard;
        if (perShard == 0)
            throw new ArgumentOutOfRangeException(nameof(TokenShardOptions.TokensPerShard), options.TokensPerShard, $"Option 'TokensPerShard' ({options.TokensPerShard}) is smaller than one block of {blockLength} tokens.");

        Directory.CreateDirectory(directory);
        var existing = Directory.GetFiles(directory, TokenShardFormat.FilePattern);
        if (existing.Length > 0)
        {
            if (!options.Overwrite)
                throw new IOException($"Directory '{directory}' already holds {existing.Length} token shard(s) ('{Path.GetFileName(existing[0])}', …); set Overwrite = true to replace them, or choose an empty directory.");
            foreach (var old in existing)
                File.Delete(old);
        }

        var columns = new List<DataViewSchema.Column> { tokens };
        if (docs is { } dc)
            columns.Add(dc);
        if (mask is { } mc)
            columns.Add(mc);
        using var shard = new ShardBuilder(directory, tokenBytes, vocabulary, blockLength, perShard, mask is not null);
        long rows = 0;
        using (var cursor = data.GetRowCursor(columns))
        {
            var getTokens = TokenGetter(cursor, tokens);
            var getDocs = docs is { } d ? cursor.GetGetter<VBuffer<int>>(d) : null;
            var getMask = mask is { } m ? cursor.GetGetter<VBuffer<bool>>(m) : null;
            var row = new List<long>();
            VBuffer<int> docBuffer = default;
            VBuffer<bool> maskBuffer = default;
            int[] docValues = [];
            bool[] maskValues = [];
            while (cursor.MoveNext())
            {
                row.Clear();
                getTokens(row);
                foreach (long id in row)
                {
                    if (id < 0 || (vocabulary > 0 && id >= vocabulary) || id > uint.MaxValue)
                    {
                        throw new ArgumentOutOfRangeException(options.TokensColumnName, id,
                            $"Row {rows} has token id {id} in column '{options.TokensColumnName}'; ids must be in [0, {(vocabulary > 0 ? vocabulary : uint.MaxValue + 1L)}).");
                    }
                }
                if (getDocs is not null)
                {
                    getDocs(ref docBuffer);
                    docValues = Dense(docBuffer, row.Count, options.DocumentIdsColumnName!, rows);
                }
                if (getMask is not null)
                {
                    getMask(ref maskBuffer);
                    maskValues = Dense(maskBuffer, row.Count, options.LossMaskColumnName!, rows);
                }
                if (blockLength == 0 && row.Count == 0)
                {
                    rows++;
                    continue;
                }
                shard.AddRow(row, getDocs is null ? null : docValues, getMask is null ? null : maskValues);
                rows++;
            }
        }
        shard.Finish();

        if (tokens.TryGetTokenizer(out var tok))
            TrySaveTokenizer(tok, directory);
        return new TokenShardReport(directory, shard.ShardsWritten, rows, shard.TokensWritten, tokenBytes, blockLength, shard.BytesWritten);
    }

    private static T[] Dense<T>(VBuffer<T> buffer, int expected, string column, long row)
    {
        if (buffer.Length != expected)
            throw new ArgumentException($"Row {row} has {buffer.Length} values in column '{column}' but {expected} tokens; they must match one to one.", column);
        return buffer.DenseValues().ToArray();
    }

    private static void TrySaveTokenizer(LmTokenizer tokenizer, string directory)
    {
        string path = Path.Combine(directory, TokenShardFormat.TokenizerFile);
        string temporary = path + ".tmp";
        try
        {
            using (var stream = File.Create(temporary))
            using (var writer = new BinaryWriter(stream))
                tokenizer.Save(writer);
            File.Move(temporary, path, overwrite: true);
        }
        catch (NotSupportedException)
        {
            // A tokenizer the library cannot persist (LmTokenizer.FromTokenizer): the shards are still complete; the
            // trainer then needs CausalLmTrainerOptions.Tokenizer for text generation.
            File.Delete(temporary);
        }
    }

    private static Action<List<long>> TokenGetter(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        var item = ((VectorDataViewType)column.Type).ItemType;
        if (item == NumberDataViewType.Int32)
        {
            var g = cursor.GetGetter<VBuffer<int>>(column);
            VBuffer<int> b = default;
            return row => { g(ref b); foreach (var v in b.DenseValues()) row.Add(v); };
        }
        if (item == NumberDataViewType.UInt16)
        {
            var g = cursor.GetGetter<VBuffer<ushort>>(column);
            VBuffer<ushort> b = default;
            return row => { g(ref b); foreach (var v in b.DenseValues()) row.Add(v); };
        }
        if (item == NumberDataViewType.UInt32)
        {
            var g = cursor.GetGetter<VBuffer<uint>>(column);
            VBuffer<uint> b = default;
            return row => { g(ref b); foreach (var v in b.DenseValues()) row.Add(v); };
        }
        var g64 = cursor.GetGetter<VBuffer<long>>(column);
        VBuffer<long> b64 = default;
        return row => { g64(ref b64); foreach (var v in b64.DenseValues()) row.Add(v); };
    }

    /// <summary>Fills one shard at a time: tokens stream to a temporary file (hashed as they go); markers and mask bits
    /// wait in memory until the shard closes, then the header is written and the file renamed into place.</summary>
    private sealed class ShardBuilder(string directory, int tokenBytes, int vocabulary, int blockLength, long perShard, bool hasMask) : IDisposable
    {
        private FileStream? _file;
        private XxHash64 _hash = new();
        private readonly byte[] _buffer = new byte[1 << 16];
        private int _buffered;
        private long _count;   // tokens in the open shard
        private readonly List<long> _markers = [];
        private byte[] _mask = [];
        private string _temporary = "";

        public int ShardsWritten { get; private set; }

        public long TokensWritten { get; private set; }

        public long BytesWritten { get; private set; }

        public void AddRow(List<long> row, int[]? documentIds, bool[]? mask)
        {
            // Stream mode: a row is a document and may span shards; block mode: a row is a whole block and never does.
            for (int i = 0; i < row.Count; i++)
            {
                if (_file is null || _count == perShard)
                    Open();
                if (blockLength == 0 && i == 0)
                {
                    _markers.Add(_count);
                }
                else if (documentIds is not null)
                {
                    int position = i % blockLength;
                    int id = documentIds[i], previous = position == 0 ? 0 : documentIds[i - 1];
                    if (id < 0 && (position == 0 || previous >= 0))
                        _markers.Add(_count | TokenShardFormat.PaddingFlag);
                    else if (id >= 0 && position > 0 && id != previous)
                        _markers.Add(_count);
                }
                if (mask is not null && mask[i])
                    _mask[_count >> 3] |= (byte)(1 << (int)(_count & 7));
                Put(row[i]);
                _count++;
            }
        }

        private void Put(long id)
        {
            if (_buffered + tokenBytes > _buffer.Length)
                Flush();
            if (tokenBytes == 2)
                System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(_buffer.AsSpan(_buffered), (ushort)id);
            else
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(_buffered), (uint)id);
            _buffered += tokenBytes;
        }

        private void Flush()
        {
            _file!.Write(_buffer, 0, _buffered);
            _hash.Append(_buffer.AsSpan(0, _buffered));
            _buffered = 0;
        }

        private void Open()
        {
            Close();
            _temporary = Path.Combine(directory, TokenShardFormat.ShardName(ShardsWritten) + ".tmp");
            _file = new FileStream(_temporary, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 20);
            _file.Write(new byte[TokenShardFormat.HeaderBytes]);
            _hash = new XxHash64();
            _count = 0;
            _markers.Clear();
            _mask = hasMask ? new byte[(perShard + 7) / 8] : [];
        }

        private void Close()
        {
            if (_file is null)
                return;
            Flush();
            var tail = new byte[_markers.Count * 8 + (hasMask ? (int)((_count + 7) / 8) : 0)];
            for (int i = 0; i < _markers.Count; i++)
                System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(tail.AsSpan(i * 8), _markers[i]);
            if (hasMask)
                _mask.AsSpan(0, (int)((_count + 7) / 8)).CopyTo(tail.AsSpan(_markers.Count * 8));
            _file.Write(tail);
            _hash.Append(tail);
            _file.Position = 0;
            _file.Write(TokenShardFormat.WriteHeader(tokenBytes, _count, vocabulary, blockLength, _markers.Count, hasMask, _hash.GetCurrentHashAsUInt64()));
            _file.Flush(flushToDisk: true);
            BytesWritten += _file.Length;
            _file.Dispose();
            _file = null;
            File.Move(_temporary, Path.Combine(directory, TokenShardFormat.ShardName(ShardsWritten)), overwrite: true);
            ShardsWritten++;
            TokensWritten += _count;
        }

        public void Finish() => Close();

        public void Dispose()
        {
            if (_file is not null)
            {
                // An exception left a shard open: drop its temporary file; finished shards stay whole.
                _file.Dispose();
                _file = null;
                File.Delete(_temporary);
            }
        }
    }
}
