using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// The shards of a directory, memory-mapped: block <c>i</c> of the whole set is read straight from the page cache, so
/// memory use does not grow with the corpus (the operating system keeps what fits and drops the rest). Thread-safe for
/// reading. Shards written by <c>SaveAsTokenShards</c> or by llm.c/nanoGPT (<c>*.bin</c> with llm.c's header; a
/// token stream, cut into blocks of the length given when opening).
/// </summary>
/// <remarks>
/// Pages of a mapping that a process has touched count in its resident memory until it unmaps them, although they are
/// clean page cache the kernel can drop (nanoGPT recreates its <c>np.memmap</c> every batch for this reason). Training
/// reads blocks in random order and a fault maps the whole cached folio around the page it needs (measured: 230-420 KB
/// resident per 258-byte block read, on Linux 6.18 with the shards in the page cache: 800 MB after 1 920 blocks), so on
/// Linux each mapping is advised <c>MADV_RANDOM</c> (no read-ahead from disk) and, every <see cref="ReleaseInterval"/>
/// blocks read, <c>MADV_DONTNEED</c> drops the touched pages from this process's page tables (they stay in the page
/// cache). Resident memory then stays bounded (≈ 30 MB of mapped pages at most) whatever the corpus size.
/// </remarks>
public sealed unsafe class TokenShardSet : IDisposable
{
    private readonly Shard[] _shards;
    private readonly long[] _firstBlock;   // global index of each shard's first block, plus the total at the end
    private long _blocksRead;

    /// <summary>Blocks read between two releases of the mapped pages (≤ 420 KB each: ≤ 30 MB mapped). A release walks
    /// the page tables of every mapping: tens of microseconds, against milliseconds for the training step that reads them.</summary>
    internal const int ReleaseInterval = 64;

    private TokenShardSet(string directory, Shard[] shards, int blockLength, int vocabularySize, LmTokenizer? tokenizer)
    {
        Directory = directory;
        _shards = shards;
        BlockLength = blockLength;
        VocabularySize = vocabularySize;
        Tokenizer = tokenizer;
        _firstBlock = new long[shards.Length + 1];
        for (int i = 0; i < shards.Length; i++)
            _firstBlock[i + 1] = _firstBlock[i] + shards[i].Header.TokenCount / blockLength;
        HasDocumentIds = shards.Any(s => s.Header.SegmentCount > 0);
        HasLossMask = shards.Length > 0 && shards.All(s => s.Header.HasLossMask);
    }

    /// <summary>The shard directory.</summary>
    public string Directory { get; }

    /// <summary>The shard files, in order.</summary>
    public IReadOnlyList<string> Files => _shards.Select(s => s.Header.Path).ToArray();

    /// <summary>Tokens per block (a row of the data view).</summary>
    public int BlockLength { get; }

    /// <summary>Blocks in all shards.</summary>
    public long BlockCount => _firstBlock[^1];

    /// <summary>Tokens in all shards.</summary>
    public long TokenCount => _shards.Sum(s => s.Header.TokenCount);

    /// <summary>The vocabulary size the shards record (0: unknown, as in llm.c's files).</summary>
    public int VocabularySize { get; }

    /// <summary>Bytes per token: 2 (uint16) or 4 (uint32).</summary>
    public int TokenBytes => _shards.Length == 0 ? 2 : _shards[0].Header.TokenBytes;

    /// <summary>Whether blocks carry document ids (document and padding boundaries were recorded).</summary>
    public bool HasDocumentIds { get; }

    /// <summary>Whether blocks carry a loss mask.</summary>
    public bool HasLossMask { get; }

    /// <summary>The tokenizer saved beside the shards (<c>tokenizer.bin</c>), if any.</summary>
    public LmTokenizer? Tokenizer { get; }

    /// <summary>
    /// Opens the shards of <paramref name="directory"/> (<c>shard-*.bin</c>, or every <c>*.bin</c> when there are none, in
    /// name order). Headers are checked (magic, version, counts, file length) and, with <paramref name="verifyChecksums"/>,
    /// every shard's checksum; all shards must agree on token width, vocabulary and block length.
    /// </summary>
    /// <param name="directory">The shard directory.</param>
    /// <param name="blockLength">Tokens per block for shards holding a token stream (llm.c's files, or variable-length
    /// rows); must be left null or equal for shards written as blocks.</param>
    /// <param name="verifyChecksums">Hash every shard once (about a second per GB) to detect corruption.</param>
    public static TokenShardSet Open(string directory, int? blockLength = null, bool verifyChecksums = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!System.IO.Directory.Exists(directory))
            throw new DirectoryNotFoundException($"Token shard directory '{directory}' does not exist.");
        var files = System.IO.Directory.GetFiles(directory, TokenShardFormat.FilePattern);
        if (files.Length == 0)
            files = System.IO.Directory.GetFiles(directory, "*.bin").Where(f => Path.GetFileName(f) != TokenShardFormat.TokenizerFile).ToArray();
        if (files.Length == 0)
            throw new FileNotFoundException($"Token shard directory '{directory}' holds no shard files (shard-*.bin or llm.c's *.bin).");
        Array.Sort(files, StringComparer.Ordinal);

        var headers = files.Select(TokenShardFormat.ReadHeader).ToArray();
        var first = headers[0];
        foreach (var h in headers)
        {
            if (h.TokenBytes != first.TokenBytes || h.VocabularySize != first.VocabularySize || h.BlockLength != first.BlockLength)
            {
                throw new InvalidDataException(
                    $"Token shard '{h.Path}' ({h.TokenBytes}-byte tokens, vocabulary {h.VocabularySize}, block length {h.BlockLength}) does not match " +
                    $"'{first.Path}' ({first.TokenBytes}-byte tokens, vocabulary {first.VocabularySize}, block length {first.BlockLength}): the directory mixes shards of different datasets.");
            }
        }
        int length = first.BlockLength;
        if (length == 0)
        {
            length = blockLength ?? throw new ArgumentException(
                $"The shards in '{directory}' hold a token stream, not blocks; give the block length to cut it into (the model's context length + 1).", nameof(blockLength));
        }
        else if (blockLength is { } requested && requested != length)
        {
            throw new ArgumentException($"The shards in '{directory}' hold blocks of {length} tokens; the requested block length {requested} differs. Leave it null, or write the shards again.", nameof(blockLength));
        }
        if (length < 2)
            throw new ArgumentOutOfRangeException(nameof(blockLength), length, $"The block length must be at least 2 tokens (inputs and targets); got {length}.");
        if (verifyChecksums)
        {
            foreach (var h in headers)
                TokenShardFormat.VerifyChecksum(h);
        }

        LmTokenizer? tokenizer = null;
        string tokenizerPath = Path.Combine(directory, TokenShardFormat.TokenizerFile);
        if (File.Exists(tokenizerPath))
        {
            using var stream = File.OpenRead(tokenizerPath);
            using var reader = new BinaryReader(stream);
            tokenizer = LmTokenizer.Load(reader);
            if (first.VocabularySize > 0 && tokenizer.VocabularySize != first.VocabularySize)
                throw new InvalidDataException($"The tokenizer in '{tokenizerPath}' has {tokenizer.VocabularySize} tokens but the shards record a vocabulary of {first.VocabularySize}: they come from different datasets.");
        }

        var shards = new Shard[headers.Length];
        try
        {
            for (int i = 0; i < headers.Length; i++)
                shards[i] = new Shard(headers[i]);
        }
        catch
        {
            foreach (var s in shards)
                s?.Dispose();
            throw;
        }
        return new TokenShardSet(directory, shards, length, first.VocabularySize, tokenizer);
    }

    /// <summary>
    /// Copies block <paramref name="index"/> into <paramref name="tokens"/> (<see cref="BlockLength"/> ids), and its
    /// document ids (0, 1, … per document within the block, −1 on padding) and loss mask when the spans are not empty.
    /// </summary>
    public void ReadBlock(long index, Span<int> tokens, Span<int> documentIds = default, Span<bool> lossMask = default)
    {
        if ((ulong)index >= (ulong)BlockCount)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Block {index} is outside the {BlockCount} blocks of '{Directory}'.");
        if (tokens.Length != BlockLength)
            throw new ArgumentException($"The token span holds {tokens.Length} values; a block has {BlockLength}.", nameof(tokens));
        int s = Array.BinarySearch(_firstBlock, index);
        s = s >= 0 ? s : ~s - 1;
        while (_firstBlock[s + 1] == _firstBlock[s])
            s++;   // skip shards with no whole block
        var shard = _shards[s];
        long start = (index - _firstBlock[s]) * BlockLength;
        shard.ReadTokens(start, tokens);
        if (!documentIds.IsEmpty)
            shard.ReadDocumentIds(start, documentIds);
        if (!lossMask.IsEmpty)
            shard.ReadLossMask(start, lossMask);
        if (Interlocked.Increment(ref _blocksRead) % ReleaseInterval == 0)
            ReleaseMappedPages();
    }

    /// <summary>Drops the pages read so far from this process's resident memory (they stay in the page cache).</summary>
    internal void ReleaseMappedPages()
    {
        foreach (var shard in _shards)
            shard.Advise(MemoryAdvice.DontNeed);
    }

    /// <summary>Unmaps the shards.</summary>
    public void Dispose()
    {
        foreach (var shard in _shards)
            shard.Dispose();
    }

    private sealed class Shard : IDisposable
    {
        private readonly MemoryMappedFile _file;
        private readonly MemoryMappedViewAccessor _view;
        private readonly byte* _base;
        private readonly byte* _mapped;          // page-aligned start of the mapping
        private readonly nuint _mappedLength;
        private readonly long[] _markers;

        public Shard(TokenShardFormat.Header header)
        {
            Header = header;
            _file = MemoryMappedFile.CreateFromFile(header.Path, FileMode.Open, mapName: null, 0, MemoryMappedFileAccess.Read);
            _view = _file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            _base = pointer + _view.PointerOffset;
            _mapped = pointer;
            _mappedLength = (nuint)(_view.PointerOffset + _view.Capacity);
            Advise(MemoryAdvice.Random);
            _markers = new long[header.SegmentCount];
            new ReadOnlySpan<long>(_base + header.SegmentsOffset, header.SegmentCount).CopyTo(_markers);
            if (!BitConverter.IsLittleEndian)
                throw new PlatformNotSupportedException("Token shards are little-endian; this machine is not.");
        }

        public TokenShardFormat.Header Header { get; }

        /// <summary>madvise on the whole mapping (Linux; a hint, so a failure is ignored).</summary>
        public void Advise(MemoryAdvice advice)
        {
            if (OperatingSystem.IsLinux() && _mappedLength > 0)
                _ = MemoryAdviceNative.madvise(_mapped, _mappedLength, (int)advice);
        }

        public void ReadTokens(long start, Span<int> destination)
        {
            byte* p = _base + Header.TokensOffset + start * Header.TokenBytes;
            if (Header.TokenBytes == 2)
            {
                var source = new ReadOnlySpan<ushort>(p, destination.Length);
                for (int i = 0; i < source.Length; i++)
                    destination[i] = source[i];
            }
            else
            {
                var source = new ReadOnlySpan<uint>(p, destination.Length);
                for (int i = 0; i < source.Length; i++)
                {
                    uint id = source[i];
                    if (id > int.MaxValue)
                        throw new InvalidDataException($"Token shard '{Header.Path}' holds token id {id} at offset {start + i}, beyond Int32.");
                    destination[i] = (int)id;
                }
            }
        }

        // Relative ids as PackTokens numbers them: the block's first document is 0 (also when it began in an earlier
        // block), each document start inside the block adds one, padding is −1 until the next document starts.
        public void ReadDocumentIds(long start, Span<int> destination)
        {
            long end = start + destination.Length;
            int m = LowerBound(start);
            bool padding = m < _markers.Length && (_markers[m] & ~TokenShardFormat.PaddingFlag) == start && (_markers[m] & TokenShardFormat.PaddingFlag) != 0;
            int id = padding ? -1 : 0, next = 0;
            if (!padding)
                next = 1;
            for (long position = start; position < end; position++)
            {
                while (m < _markers.Length && (_markers[m] & ~TokenShardFormat.PaddingFlag) == position)
                {
                    bool isPadding = (_markers[m] & TokenShardFormat.PaddingFlag) != 0;
                    if (position != start)
                        id = isPadding ? -1 : next++;
                    m++;
                }
                destination[(int)(position - start)] = id;
            }
        }

        public void ReadLossMask(long start, Span<bool> destination)
        {
            byte* bits = _base + Header.MaskOffset;
            for (int i = 0; i < destination.Length; i++)
            {
                long t = start + i;
                destination[i] = (bits[t >> 3] & (1 << (int)(t & 7))) != 0;
            }
        }

        private int LowerBound(long offset)
        {
            int lo = 0, hi = _markers.Length;
            while (lo < hi)
            {
                int mid = (lo + hi) >>> 1;
                if ((_markers[mid] & ~TokenShardFormat.PaddingFlag) < offset)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            return lo;
        }

        public void Dispose()
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file.Dispose();
        }
    }
}

/// <summary>Linux <c>madvise</c> advice values (asm-generic/mman-common.h).</summary>
internal enum MemoryAdvice
{
    Random = 1,
    DontNeed = 4,
}

internal static unsafe class MemoryAdviceNative
{
    [DllImport("libc", SetLastError = true)]
    public static extern int madvise(void* address, nuint length, int advice);
}
