namespace Microsoft.ML.Llm.Data;

/// <summary>Signatures of the reference rows: exact hashes, LSH band hashes, and shingle sets when verifying.</summary>
internal sealed class ReferenceSet
{
    public ulong[] ExactHashes = [];
    public ulong[] BandHashes = []; // Count × bands
    public ulong[][] Shingles = [];  // sorted unique, only when verifying
    public int Count;

    public static ReferenceSet Build(IDataView data, int column, NearDuplicateRemoverOptions o)
    {
        var set = new ReferenceSet();
        var hasher = new MinHasher(o.NGramSize, o.Bands, o.RowsPerBand, o.Seed);
        var exact = new List<ulong>();
        var bands = new List<ulong>();
        var shingleSets = new List<ulong[]>();
        ulong[] words = new ulong[256], shingles = new ulong[256], sig = new ulong[hasher.SignatureLength];
        var band = new ulong[o.Bands];
        using var cursor = data.GetRowCursor([data.Schema[column]]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(data.Schema[column]);
        ReadOnlyMemory<char> text = default;
        while (cursor.MoveNext())
        {
            getter(ref text);
            if (o.Mode == DeduplicationMode.Exact)
            {
                if (MinHasher.ExactHash(text.Span, ref words, out ulong h))
                    exact.Add(h);
                continue;
            }
            int nw = MinHasher.WordHashes(text.Span, ref words);
            int ns = hasher.Shingles(words.AsSpan(0, nw), ref shingles);
            if (ns == 0)
                continue;
            hasher.BandHashes(shingles.AsSpan(0, ns), band, sig);
            bands.AddRange(band);
            if (o.Verify)
                shingleSets.Add(SortedUnique(shingles.AsSpan(0, ns)));
        }
        set.ExactHashes = exact.ToArray();
        set.BandHashes = bands.ToArray();
        set.Shingles = shingleSets.ToArray();
        set.Count = o.Mode == DeduplicationMode.Exact ? exact.Count : bands.Count / o.Bands;
        return set;
    }

    internal static ulong[] SortedUnique(ReadOnlySpan<ulong> values)
    {
        var a = values.ToArray();
        Array.Sort(a);
        int w = 0;
        for (int i = 0; i < a.Length; i++)
        {
            if (w == 0 || a[i] != a[w - 1])
                a[w++] = a[i];
        }

        Array.Resize(ref a, w);
        return a;
    }

    // Binary format (side entry "Reference" of NearDuplicateRemoverTransformer): Count (int32), ExactHashes, BandHashes
    // (each: int32 length, then uint64 values), Shingles (int32 count, then per set: int32 length, uint64 values).
    public void Write(BinaryWriter w)
    {
        w.Write(Count);
        w.Write(ExactHashes.Length);
        foreach (var h in ExactHashes)
            w.Write(h);
        w.Write(BandHashes.Length);
        foreach (var h in BandHashes)
            w.Write(h);
        w.Write(Shingles.Length);
        foreach (var s in Shingles)
        { w.Write(s.Length); foreach (var h in s) w.Write(h); }
    }

    public static ReferenceSet Read(BinaryReader r)
    {
        var set = new ReferenceSet { Count = r.ReadInt32() };
        set.ExactHashes = ReadArray(r);
        set.BandHashes = ReadArray(r);
        set.Shingles = new ulong[r.ReadInt32()][];
        for (int i = 0; i < set.Shingles.Length; i++)
            set.Shingles[i] = ReadArray(r);
        return set;

        static ulong[] ReadArray(BinaryReader r)
        {
            var a = new ulong[r.ReadInt32()];
            for (int i = 0; i < a.Length; i++)
                a[i] = r.ReadUInt64();
            return a;
        }
    }
}
