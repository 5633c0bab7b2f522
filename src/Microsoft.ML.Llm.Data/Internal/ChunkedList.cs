namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>An append-only list in fixed 1M-element chunks: grows without copying, indexable by long.</summary>
internal sealed class ChunkedList<T>
{
    private const int Shift = 20;
    private readonly List<T[]> _chunks = [];
    private long _count;

    public long Count => _count;

    public void Add(T value)
    {
        int chunk = (int)(_count >> Shift);
        if (chunk == _chunks.Count)
            _chunks.Add(new T[1 << Shift]);
        _chunks[chunk][_count & ((1 << Shift) - 1)] = value;
        _count++;
    }

    public T this[long index] => _chunks[(int)(index >> Shift)][index & ((1 << Shift) - 1)];

    public void Clear()
    {
        _chunks.Clear();
        _count = 0;
    }
}
