// The packing strategies behind PackTokens: a document reader over the input cursor and one BlockPacker per mode.

namespace Microsoft.ML.Llm.Data;

/// <summary>Reads token documents (and their input loss masks, when carried) from an input cursor, one reusable buffer at a time.</summary>
internal sealed class DocumentReader : IDisposable
{
    private readonly DataViewRowCursor _cursor;
    private readonly ValueGetter<VBuffer<int>> _getter;
    private readonly ValueGetter<VBuffer<bool>>? _maskGetter;
    private readonly string? _maskName;
    private VBuffer<int> _buffer;
    private VBuffer<bool> _maskBuffer;
    private int[] _dense = [];
    private bool[] _maskDense = [];
    private long _row = -1;

    public DocumentReader(DataViewRowCursor cursor, DataViewSchema.Column column, DataViewSchema.Column? maskColumn = null)
    {
        _cursor = cursor;
        _getter = cursor.GetGetter<VBuffer<int>>(column);
        if (maskColumn is { } m)
        {
            _maskGetter = cursor.GetGetter<VBuffer<bool>>(m);
            _maskName = m.Name;
        }
    }

    /// <summary>Whether documents come with an input loss mask.</summary>
    public bool HasMask => _maskGetter is not null;

    /// <summary>Moves to the next document; its tokens stay valid until the next call.</summary>
    public bool TryRead(out ReadOnlySpan<int> tokens) => TryRead(out tokens, out _);

    /// <summary>
    /// Moves to the next document; its tokens and input loss mask (empty without a mask column) stay valid until the
    /// next call.
    /// </summary>
    public bool TryRead(out ReadOnlySpan<int> tokens, out ReadOnlySpan<bool> mask)
    {
        mask = default;
        if (!_cursor.MoveNext())
        {
            tokens = default;
            return false;
        }
        _row++;
        _getter(ref _buffer);
        if (_buffer.IsDense)
        {
            tokens = _buffer.GetValues();
        }
        else
        {
            if (_dense.Length < _buffer.Length)
                _dense = new int[_buffer.Length];
            _buffer.CopyTo(_dense);
            tokens = _dense.AsSpan(0, _buffer.Length);
        }
        if (_maskGetter is not null)
        {
            _maskGetter(ref _maskBuffer);
            if (_maskBuffer.Length != tokens.Length)
            {
                throw new InvalidOperationException(
                    $"Row {_row} of the input to PackTokens has {_maskBuffer.Length} values in loss-mask column '{_maskName}' but {tokens.Length} tokens; the mask needs one value per token.");
            }
            if (_maskDense.Length < _maskBuffer.Length)
                _maskDense = new bool[_maskBuffer.Length];
            _maskBuffer.CopyTo(_maskDense);
            mask = _maskDense.AsSpan(0, _maskBuffer.Length);
        }
        return true;
    }

    public void Dispose() => _cursor.Dispose();
}

/// <summary>Produces blocks from documents, counting what a pass does.</summary>
internal abstract class BlockPacker : IDisposable
{
    protected readonly DocumentReader Documents;
    protected readonly int BlockLength;
    protected readonly int? EndOfText;
    protected readonly int Pad;
    protected long DocumentCount, InputTokens, Blocks, PaddingTokens, TruncatedTokens;

    protected BlockPacker(DocumentReader documents, TokenPackerOptions options)
    {
        Documents = documents;
        BlockLength = options.ContextLength + 1;
        EndOfText = options.EndOfTextId;
        Pad = options.PadId ?? options.EndOfTextId ?? 0;
    }

    /// <summary>Fills the next block: tokens, per-token document ids (-1 on padding) and the loss mask (false on padding).</summary>
    public abstract bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask);

    /// <summary>
    /// Reads the next document and its tokens as packed: the document, then the end-of-text separator unless there is
    /// none or (with an input loss mask: chat tokens end each response with it themselves) the document already ends
    /// with it. <paramref name="mask"/> is the input mask (all true without one); an added separator takes the mask
    /// value of the document's last token. Empty documents are skipped. The spans stay valid until the next call.
    /// </summary>
    protected bool TryReadDocument(out ReadOnlySpan<int> tokens, out ReadOnlySpan<bool> mask)
    {
        while (Documents.TryRead(out var document, out var inputMask))
        {
            if (document.Length == 0)
                continue;
            bool separator = EndOfText is int eos && !(Documents.HasMask && document[^1] == eos);
            int count = document.Length + (separator ? 1 : 0);
            if (_documentTokens.Length < count)
            {
                _documentTokens = new int[Math.Max(count, _documentTokens.Length * 2)];
                _documentMask = new bool[_documentTokens.Length];
            }
            document.CopyTo(_documentTokens);
            if (Documents.HasMask)
                inputMask.CopyTo(_documentMask);
            else
                _documentMask.AsSpan(0, document.Length).Fill(true);
            if (separator)
            {
                _documentTokens[document.Length] = EndOfText!.Value;
                _documentMask[document.Length] = _documentMask[document.Length - 1];
            }
            DocumentCount++;
            InputTokens += count;
            tokens = _documentTokens.AsSpan(0, count);
            mask = _documentMask.AsSpan(0, count);
            return true;
        }
        tokens = default;
        mask = default;
        return false;
    }

    private int[] _documentTokens = new int[64];
    private bool[] _documentMask = new bool[64];

    public PackingStatistics Statistics() => new(DocumentCount, InputTokens, Blocks, PaddingTokens, TruncatedTokens, BlockLength);

    /// <summary>Pads positions from <paramref name="filled"/> to the end of the block.</summary>
    protected void PadFrom(int filled, Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        tokens[filled..].Fill(Pad);
        documentIds[filled..].Fill(-1);
        mask[filled..].Clear();
        PaddingTokens += tokens.Length - filled;
    }

    public virtual void Dispose() => Documents.Dispose();
}

/// <summary>GPT-2/nanoGPT: one token stream (documents joined by end-of-text), cut into blocks every Stride tokens.</summary>
internal sealed class ConcatenatePacker : BlockPacker
{
    private readonly int _stride;
    private readonly bool _padLast;
    private int[] _buffer;
    private int[] _docIds;
    private bool[] _mask;
    private int _start, _end;           // live window of the stream in _buffer
    private long _streamStart;          // stream index of _buffer[_start]
    private long _emittedUntil;         // stream index of the first token no block has held
    private bool _exhausted;

    public ConcatenatePacker(DocumentReader documents, TokenPackerOptions options) : base(documents, options)
    {
        _stride = options.Stride ?? BlockLength;
        _padLast = options.PadLastBlock;
        _buffer = ArrayPool<int>.Shared.Rent(BlockLength * 2);
        _docIds = ArrayPool<int>.Shared.Rent(BlockLength * 2);
        _mask = ArrayPool<bool>.Shared.Rent(BlockLength * 2);
    }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        while (_end - _start < BlockLength && !_exhausted)
        {
            if (!TryReadDocument(out var document, out var documentMask))
            {
                _exhausted = true;
                break;
            }
            Append(document, documentMask);
        }
        int available = _end - _start;
        if (available >= BlockLength)
        {
            _buffer.AsSpan(_start, BlockLength).CopyTo(tokens);
            RelativeDocumentIds(_docIds.AsSpan(_start, BlockLength), documentIds);
            _mask.AsSpan(_start, BlockLength).CopyTo(mask);
            _emittedUntil = _streamStart + BlockLength;
            Advance(_stride);
            Blocks++;
            return true;
        }
        // The input is exhausted: the partial tail holds `available` tokens, of which those before _emittedUntil were in a block.
        long fresh = _streamStart + available - Math.Max(_emittedUntil, _streamStart);
        if (available > 0 && fresh > 0)
        {
            if (_padLast)
            {
                _buffer.AsSpan(_start, available).CopyTo(tokens);
                RelativeDocumentIds(_docIds.AsSpan(_start, available), documentIds);
                _mask.AsSpan(_start, available).CopyTo(mask);
                PadFrom(available, tokens, documentIds, mask);
                Blocks++;
            }
            else
            {
                TruncatedTokens += fresh;
            }
        }
        _start = _end;
        _streamStart += available;
        _emittedUntil = _streamStart;
        return _padLast && available > 0 && fresh > 0;
    }

    private static void RelativeDocumentIds(ReadOnlySpan<int> source, Span<int> destination)
    {
        int first = source[0];
        for (int i = 0; i < source.Length; i++)
            destination[i] = source[i] - first;
    }

    /// <summary>Appends a document as read (separator included; empty documents never get here).</summary>
    private void Append(ReadOnlySpan<int> document, ReadOnlySpan<bool> documentMask)
    {
        int count = document.Length;
        Reserve(count);
        int id = (int)DocumentCount;
        document.CopyTo(_buffer.AsSpan(_end));
        documentMask.CopyTo(_mask.AsSpan(_end));
        _docIds.AsSpan(_end, count).Fill(id);
        _end += count;
    }

    private void Reserve(int count)
    {
        if (_end + count <= _buffer.Length)
            return;
        int live = _end - _start;
        if (live + count <= _buffer.Length && _start > 0)
        {
            Array.Copy(_buffer, _start, _buffer, 0, live);
            Array.Copy(_docIds, _start, _docIds, 0, live);
            Array.Copy(_mask, _start, _mask, 0, live);
        }
        else
        {
            int size = Math.Max(_buffer.Length * 2, live + count);
            var buffer = ArrayPool<int>.Shared.Rent(size);
            var docIds = ArrayPool<int>.Shared.Rent(size);
            var mask = ArrayPool<bool>.Shared.Rent(size);
            Array.Copy(_buffer, _start, buffer, 0, live);
            Array.Copy(_docIds, _start, docIds, 0, live);
            Array.Copy(_mask, _start, mask, 0, live);
            ArrayPool<int>.Shared.Return(_buffer);
            ArrayPool<int>.Shared.Return(_docIds);
            ArrayPool<bool>.Shared.Return(_mask);
            _buffer = buffer;
            _docIds = docIds;
            _mask = mask;
        }
        _start = 0;
        _end = live;
    }

    private void Advance(int count)
    {
        _start += count;
        _streamStart += count;
    }

    public override void Dispose()
    {
        base.Dispose();
        ArrayPool<int>.Shared.Return(_buffer);
        ArrayPool<int>.Shared.Return(_docIds);
        ArrayPool<bool>.Shared.Return(_mask);
        _buffer = [];
        _docIds = [];
        _mask = [];
    }
}

/// <summary>One document per block: truncated or padded, end-of-text after the document when it fits.</summary>
internal sealed class PaddedPacker : BlockPacker
{
    public PaddedPacker(DocumentReader documents, TokenPackerOptions options) : base(documents, options) { }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        // An empty document makes no row (TryReadDocument skips it).
        if (!TryReadDocument(out var document, out var documentMask))
            return false;
        int filled = Math.Min(document.Length, BlockLength);
        document[..filled].CopyTo(tokens);
        documentMask[..filled].CopyTo(mask);
        TruncatedTokens += document.Length - filled;
        documentIds[..filled].Clear();
        PadFrom(filled, tokens, documentIds, mask);
        Blocks++;
        return true;
    }
}

/// <summary>
/// Best-fit-decreasing packing (Ding et al. 2024, "Fewer Truncations Improve Language Modeling"): each document
/// (+ end-of-text) is split into chunks of at most one block; the chunks of a window of documents are sorted by length
/// (longest first, ties in input order) and each goes into the open block with the least room that still fits it.
/// </summary>
internal sealed class BestFitPacker : BlockPacker
{
    private readonly int _window;
    private readonly Queue<Bin> _ready = new();
    private bool _exhausted;

    public BestFitPacker(DocumentReader documents, TokenPackerOptions options) : base(documents, options)
        => _window = options.BestFitWindow;

    private sealed class Bin(int capacity)
    {
        public readonly List<(int Start, int Length, int[] Tokens, bool[] Mask)> Chunks = [];
        public int Free = capacity;
    }

    public override bool TryNextBlock(Span<int> tokens, Span<int> documentIds, Span<bool> mask)
    {
        if (_ready.Count == 0 && !_exhausted)
            PackWindow();
        if (!_ready.TryDequeue(out var bin))
            return false;
        int filled = 0;
        for (int i = 0; i < bin.Chunks.Count; i++)
        {
            var (start, length, source, sourceMask) = bin.Chunks[i];
            source.AsSpan(start, length).CopyTo(tokens[filled..]);
            documentIds.Slice(filled, length).Fill(i);
            sourceMask.AsSpan(start, length).CopyTo(mask[filled..]);
            filled += length;
        }
        PadFrom(filled, tokens, documentIds, mask);
        Blocks++;
        return true;
    }

    private void PackWindow()
    {
        var chunks = new List<(int Start, int Length, int[] Tokens, bool[] Mask)>();
        int read = 0;
        while (read < _window)
        {
            if (!TryReadDocument(out var document, out var documentMask))
            {
                _exhausted = true;
                break;
            }
            int count = document.Length;
            read++;
            var owned = document.ToArray();
            var ownedMask = documentMask.ToArray();
            for (int start = 0; start < count; start += BlockLength)
                chunks.Add((start, Math.Min(BlockLength, count - start), owned, ownedMask));
        }
        if (chunks.Count == 0)
            return;
        // Longest first; the stable sort keeps input order among equal lengths (determinism).
        var order = Enumerable.Range(0, chunks.Count).OrderByDescending(i => chunks[i].Length).ToArray();
        // binsByFree[f] = open bins with exactly f free slots, oldest first.
        var binsByFree = new Queue<Bin>?[BlockLength + 1];
        var bins = new List<Bin>();
        foreach (int index in order)
        {
            var chunk = chunks[index];
            Bin? target = null;
            for (int free = chunk.Length; free < BlockLength; free++)
            {
                if (binsByFree[free] is { Count: > 0 } queue)
                {
                    target = queue.Dequeue();
                    break;
                }
            }
            if (target is null)
            {
                target = new Bin(BlockLength);
                bins.Add(target);
            }
            target.Chunks.Add(chunk);
            target.Free -= chunk.Length;
            if (target.Free > 0)
                (binsByFree[target.Free] ??= new Queue<Bin>()).Enqueue(target);
        }
        foreach (var bin in bins)
            _ready.Enqueue(bin);
    }
}
