using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data;

/// <summary>How <see cref="NearDuplicateRemoverEstimator"/> finds duplicates.</summary>
public enum DeduplicationMode
{
    /// <summary>Rows whose normalized text has the same 64-bit hash.</summary>
    Exact = 0,
    /// <summary>MinHash signatures with LSH banding (default).</summary>
    MinHash = 1,
}

/// <summary>Options of <see cref="NearDuplicateRemoverEstimator"/> (<c>mlContext.Transforms.Text.RemoveNearDuplicates</c>).</summary>
public sealed class NearDuplicateRemoverOptions
{
    /// <summary>Default values of the options, written once (datatrove/FineWeb).</summary>
    public static class Defaults
    {
        public const DeduplicationMode Mode = DeduplicationMode.MinHash;
        public const int NGramSize = 5;
        public const int Bands = 14;
        public const int RowsPerBand = 8;
        public const int Seed = 1;
        public const bool Verify = false;
        public const double JaccardThreshold = 0.7;
    }

    /// <summary>Exact or MinHash-LSH.</summary>
    public DeduplicationMode Mode { get; set; } = Defaults.Mode;

    /// <summary>Words per shingle (word n-grams of the normalized text).</summary>
    public int NGramSize { get; set; } = Defaults.NGramSize;

    /// <summary>LSH bands; two rows are candidates when all hashes of one band agree.</summary>
    public int Bands { get; set; } = Defaults.Bands;

    /// <summary>MinHash values per band; Bands × RowsPerBand permutations in all (112 by default).</summary>
    public int RowsPerBand { get; set; } = Defaults.RowsPerBand;

    /// <summary>Seed of the permutations (same seed, same input → same output).</summary>
    public int Seed { get; set; } = Defaults.Seed;

    /// <summary>Verify every LSH candidate pair by the exact Jaccard similarity of their shingle sets.</summary>
    public bool Verify { get; set; } = Defaults.Verify;

    /// <summary>With <see cref="Verify"/>, a pair is a duplicate when its Jaccard similarity is at least this.</summary>
    public double JaccardThreshold { get; set; } = Defaults.JaccardThreshold;

    /// <summary>
    /// Optional reference rows (e.g. an evaluation set): rows near-duplicate to any of them are removed
    /// (decontamination). Read once, in <c>Fit</c>; their signatures are saved with the model.
    /// </summary>
    public IDataView? ReferenceData { get; set; }

    /// <summary>Text column of <see cref="ReferenceData"/>; null: the input column's name.</summary>
    public string? ReferenceColumnName { get; set; }

    /// <summary>Threads that hash rows; 0: one per core.</summary>
    public int MaxDegreeOfParallelism { get; set; }

    internal NearDuplicateRemoverOptions Clone() => (NearDuplicateRemoverOptions)MemberwiseClone();

    internal void Validate()
    {
        if (!Enum.IsDefined(Mode))
            throw new ArgumentOutOfRangeException(nameof(Mode), Mode, $"Option '{nameof(Mode)}' must be Exact or MinHash; got {(int)Mode}.");
        CurationChecks.AtLeast(NGramSize, 1, nameof(NGramSize));
        CurationChecks.AtLeast(Bands, 1, nameof(Bands));
        CurationChecks.AtLeast(RowsPerBand, 1, nameof(RowsPerBand));
        CurationChecks.AtLeast(MaxDegreeOfParallelism, 0, nameof(MaxDegreeOfParallelism));
        CurationChecks.InRange(JaccardThreshold, 0, 1, nameof(JaccardThreshold));
    }
}

/// <summary>Counts of the deduplication pass (see <see cref="NearDuplicateRemoverTransformer.LastReport"/>).</summary>
public sealed class DeduplicationReport
{
    /// <summary>Rows read.</summary>
    public long RowsIn { get; init; }
    /// <summary>Rows kept.</summary>
    public long RowsOut { get; init; }
    /// <summary>Clusters of two or more rows (reference rows included) found.</summary>
    public long Clusters { get; init; }
    /// <summary>Rows removed because they duplicate an earlier row.</summary>
    public long RemovedAsDuplicate { get; init; }
    /// <summary>Rows removed because they duplicate a reference row.</summary>
    public long RemovedAsReferenceMatch { get; init; }
    /// <summary>Rows with no words (kept, never clustered).</summary>
    public long EmptyRows { get; init; }
    /// <summary>LSH candidate pairs (MinHash mode).</summary>
    public long CandidatePairs { get; init; }
    /// <summary>Candidate pairs rejected by verification.</summary>
    public long RejectedPairs { get; init; }

    /// <inheritdoc/>
    public override string ToString() =>
        $"rows in {RowsIn}, rows out {RowsOut}, clusters {Clusters}, duplicates removed {RemovedAsDuplicate}, reference matches removed {RemovedAsReferenceMatch}, " +
        $"empty rows {EmptyRows}, candidate pairs {CandidatePairs}, rejected by verification {RejectedPairs}";
}

/// <summary>Estimator of <see cref="NearDuplicateRemoverTransformer"/>. <c>Fit</c> reads only the reference data (if any).</summary>
public sealed class NearDuplicateRemoverEstimator : IEstimator<NearDuplicateRemoverTransformer>
{
    private readonly string _inputColumn;
    private readonly NearDuplicateRemoverOptions _options;

    internal NearDuplicateRemoverEstimator(TransformsCatalog.TextTransforms catalog, string inputColumnName, NearDuplicateRemoverOptions? options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _inputColumn = CurationChecks.ColumnName(inputColumnName, nameof(inputColumnName));
        _options = (options ?? new NearDuplicateRemoverOptions()).Clone();
        _options.Validate();
    }

    /// <inheritdoc/>
    public NearDuplicateRemoverTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        SchemaChecks.TextColumn(input.Schema, _inputColumn);
        var reference = new ReferenceSet();
        if (_options.ReferenceData is { } refData)
        {
            var column = SchemaChecks.TextColumn(refData.Schema, _options.ReferenceColumnName ?? _inputColumn, "reference");
            reference = ReferenceSet.Build(refData, column.Index, _options);
        }
        return new NearDuplicateRemoverTransformer(_inputColumn, _options, reference);
    }

    /// <inheritdoc/>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaChecks.TextColumn(inputSchema, _inputColumn);
        return inputSchema;
    }
}

/// <summary>
/// Removes exact or near-duplicate rows, keeping the first row of each cluster, and rows that duplicate a reference
/// row. The first cursor over an output triggers one pass over the input (thread-safe, once per output view) that
/// hashes rows in parallel batches and keeps, per row, only its band hashes (Bands × 8 bytes; 8 bytes in exact mode),
/// never the texts; clustering sorts each band's hashes and joins equal ones with union-find. The result is a bitset of
/// kept rows: every cursor yields the same rows in the same order. Memory: Bands × 8 bytes per row of band hashes
/// (112 bytes by default, in chunks, no copies on growth), plus 12 bytes per row for one band's sort buffer, 4 for
/// union-find and 1 for the empty-row flag: about 130 bytes per row, so 10 million documents take about 1.3 GB and one
/// 24 GB machine handles on the order of 150 million documents (at ~3 KB per web document, ~450 GB of text; the measured
/// peak of a whole curation pipeline is in benchmarks/README.md). With verification the shingle sets of rows in
/// candidate pairs are held as well (8 bytes per word of those rows).
/// </summary>
public sealed class NearDuplicateRemoverTransformer : RowCountChangingTransformerBase, IPersistentComponent<NearDuplicateRemoverTransformer>
{
    internal const string LoaderSignature = "LlmNearDupRemover";

    internal static readonly ComponentVersion Version =
        new("LMNEARDP", 0x00010002, 0x00010001, LoaderSignature, typeof(NearDuplicateRemoverTransformer).Assembly);

    static ComponentVersion IPersistentComponent<NearDuplicateRemoverTransformer>.PersistenceVersion => Version;

    private readonly NearDuplicateRemoverOptions _options;
    private readonly ReferenceSet _reference;
    private volatile DeduplicationReport? _lastReport;

    internal NearDuplicateRemoverTransformer(string inputColumn, NearDuplicateRemoverOptions options, ReferenceSet reference)
        : base(Version)
    {
        InputColumnName = inputColumn;
        _options = options.Clone();
        _options.ReferenceData = null; // read once in Fit; the transformer keeps only the signatures
        _reference = reference;
    }

    /// <summary>The text column compared.</summary>
    public string InputColumnName { get; }

    /// <summary>Number of reference rows (with words) the transformer decontaminates against.</summary>
    public int ReferenceCount => _reference.Count;

    /// <summary>Counts of the last deduplication pass; null before the first.</summary>
    public DeduplicationReport? LastReport => _lastReport;

    private protected override IDataView MakeDataView(IDataView input)
    {
        int index = SchemaChecks.TextColumn(input.Schema, InputColumnName).Index;
        var kept = new Lazy<ulong[]>(() =>
        {
            var (bits, report) = Deduplicate(input, index);
            _lastReport = report;
            return bits;
        }, LazyThreadSafetyMode.ExecutionAndPublication);
        return new KeptRowsDataView(input, () => kept.Value);
    }

    private int Threads => _options.MaxDegreeOfParallelism > 0 ? _options.MaxDegreeOfParallelism : Environment.ProcessorCount;

    /// <summary>Reads the input in batches, hashing each batch's rows in parallel.</summary>
    private void ReadBatches(IDataView input, int index, Action<int, int, ReadOnlyMemory<char>[]> processBatch)
    {
        const int BatchRows = 1024;
        const int BatchChars = 8 << 20;
        var column = input.Schema[index];
        using var cursor = input.GetRowCursor([column]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        var batch = new ReadOnlyMemory<char>[BatchRows];
        var buffer = new char[BatchChars];
        int count = 0, used = 0, first = 0;
        ReadOnlyMemory<char> text = default;
        while (cursor.MoveNext())
        {
            getter(ref text);
            if (count == BatchRows || (used + text.Length > buffer.Length && count > 0))
            {
                processBatch(first, count, batch);
                first += count;
                count = 0;
                used = 0;
            }
            if (text.Length > buffer.Length)
            {
                batch[count++] = text.ToArray(); // a single huge row
            }
            else
            {
                text.Span.CopyTo(buffer.AsSpan(used));
                batch[count++] = buffer.AsMemory(used, text.Length);
                used += text.Length;
            }
        }
        if (count > 0)
            processBatch(first, count, batch);
    }

    private sealed class Scratch(int signatureLength)
    {
        public ulong[] Words = new ulong[256];
        public ulong[] Shingles = new ulong[256];
        public ulong[] Signature = new ulong[signatureLength];
    }

    private (ulong[] Kept, DeduplicationReport Report) Deduplicate(IDataView input, int index)
    {
        var o = _options;
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads };
        var hasher = new MinHasher(o.NGramSize, o.Bands, o.RowsPerBand, o.Seed);
        var scratch = new ThreadLocal<Scratch>(() => new Scratch(hasher.SignatureLength));
        if (o.Mode == DeduplicationMode.Exact)
        {
            var seen = new HashSet<ulong>(_reference.ExactHashes);
            var refs = new HashSet<ulong>(_reference.ExactHashes);
            var keptBits = new List<ulong>();
            var hashes = new ulong[1024];
            var has = new bool[1024];
            long rows = 0, kept = 0, dup = 0, refMatch = 0, empty = 0;
            var clusters = new HashSet<ulong>();
            ReadBatches(input, index, (first, count, batch) =>
            {
                Parallel.For(0, count, parallel, i => has[i] = MinHasher.ExactHash(batch[i].Span, ref scratch.Value!.Words, out hashes[i]));
                for (int i = 0; i < count; i++)
                {
                    long row = first + i;
                    bool keep;
                    if (!has[i])
                    { keep = true; empty++; }
                    else if (seen.Add(hashes[i]))
                    {
                        keep = true;
                    }
                    else
                    {
                        keep = false;
                        clusters.Add(hashes[i]);
                        if (refs.Contains(hashes[i]))
                            refMatch++;
                        else
                            dup++;
                    }
                    SetBit(keptBits, row, keep);
                    if (keep)
                        kept++;
                    rows++;
                }
            });
            return (keptBits.ToArray(), new DeduplicationReport { RowsIn = rows, RowsOut = kept, Clusters = clusters.Count, RemovedAsDuplicate = dup, RemovedAsReferenceMatch = refMatch, EmptyRows = empty });
        }

        int bands = o.Bands;
        int refCount = _reference.Count;
        var bandHashes = new ChunkedList<ulong>();  // (refCount + rows) × bands, in 8 MB chunks (no doubling copies)
        foreach (var h in _reference.BandHashes)
            bandHashes.Add(h);
        var hasWords = new List<bool>(Enumerable.Repeat(true, refCount));
        var batchBands = new ulong[1024 * bands];
        var batchHas = new bool[1024];
        ReadBatches(input, index, (first, count, batch) =>
        {
            Parallel.For(0, count, parallel, i =>
            {
                var s = scratch.Value!;
                int nw = MinHasher.WordHashes(batch[i].Span, ref s.Words);
                int ns = hasher.Shingles(s.Words.AsSpan(0, nw), ref s.Shingles);
                batchHas[i] = ns > 0;
                var target = batchBands.AsSpan(i * bands, bands);
                if (ns > 0)
                    hasher.BandHashes(s.Shingles.AsSpan(0, ns), target, s.Signature);
                else
                    target.Clear();
            });
            for (int i = 0; i < count; i++)
            {
                hasWords.Add(batchHas[i]);
                for (int b = 0; b < bands; b++)
                    bandHashes.Add(batchBands[i * bands + b]);
            }
        });

        int total = hasWords.Count;
        int rowCount = total - refCount;
        var uf = new UnionFind(total);
        var keys = new ulong[total];
        var docs = new int[total];
        var pairs = new HashSet<(int, int)>();
        for (int b = 0; b < bands; b++)
        {
            int m = 0;
            for (int d = 0; d < total; d++)
            {
                if (!hasWords[d])
                    continue;
                keys[m] = bandHashes[(long)d * bands + b];
                docs[m++] = d;
            }
            Array.Sort(keys, docs, 0, m);
            for (int i = 0; i < m;)
            {
                int j = i + 1;
                while (j < m && keys[j] == keys[i])
                    j++;
                if (j - i > 1)
                {
                    int anchor = int.MaxValue;
                    for (int k = i; k < j; k++)
                        anchor = Math.Min(anchor, docs[k]);
                    for (int k = i; k < j; k++)
                    {
                        if (docs[k] != anchor)
                            pairs.Add((anchor, docs[k]));
                    }
                }
                i = j;
            }
        }
        bandHashes.Clear();

        long rejected = 0;
        if (o.Verify && pairs.Count > 0)
        {
            var needed = new HashSet<int>();
            foreach (var (x, y) in pairs)
            { needed.Add(x); needed.Add(y); }
            var shingleSets = new Dictionary<int, ulong[]>();
            for (int r = 0; r < refCount && r < _reference.Shingles.Length; r++)
            {
                if (needed.Contains(r))
                    shingleSets[r] = _reference.Shingles[r];
            }

            var batchSets = new ulong[1024][];
            ReadBatches(input, index, (first, count, batch) =>
            {
                Parallel.For(0, count, parallel, i =>
                {
                    batchSets[i] = null!;
                    if (!needed.Contains(refCount + first + i))
                        return;
                    var s = scratch.Value!;
                    int nw = MinHasher.WordHashes(batch[i].Span, ref s.Words);
                    int ns = hasher.Shingles(s.Words.AsSpan(0, nw), ref s.Shingles);
                    batchSets[i] = ReferenceSet.SortedUnique(s.Shingles.AsSpan(0, ns));
                });
                for (int i = 0; i < count; i++)
                {
                    if (batchSets[i] != null)
                        shingleSets[refCount + first + i] = batchSets[i];
                }
            });
            foreach (var (x, y) in pairs.OrderBy(p => p.Item1).ThenBy(p => p.Item2))
            {
                if (shingleSets.TryGetValue(x, out var sx) && shingleSets.TryGetValue(y, out var sy) && Jaccard(sx, sy) >= o.JaccardThreshold)
                    uf.Union(x, y);
                else
                    rejected++;
            }
        }
        else
        {
            foreach (var (x, y) in pairs)
                uf.Union(x, y);
        }

        var bits = new ulong[(rowCount + 63) / 64];
        long keptRows = 0, dupRows = 0, refRows = 0, emptyRows = 0;
        var clusterRoots = new HashSet<int>();
        for (int r = 0; r < rowCount; r++)
        {
            int d = refCount + r;
            if (!hasWords[d])
                emptyRows++;
            int root = uf.Find(d);
            if (root == d)
            {
                bits[r >> 6] |= 1UL << (r & 63);
                keptRows++;
                continue;
            }
            clusterRoots.Add(root);
            if (root < refCount)
                refRows++;
            else
                dupRows++;
        }
        return (bits, new DeduplicationReport
        {
            RowsIn = rowCount,
            RowsOut = keptRows,
            Clusters = clusterRoots.Count,
            RemovedAsDuplicate = dupRows,
            RemovedAsReferenceMatch = refRows,
            EmptyRows = emptyRows,
            CandidatePairs = pairs.Count,
            RejectedPairs = rejected,
        });
    }

    /// <summary>Jaccard similarity of two sorted sets.</summary>
    internal static double Jaccard(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b)
    {
        if (a.IsEmpty && b.IsEmpty)
            return 1;
        int i = 0, j = 0, inter = 0;
        while (i < a.Length && j < b.Length)
        {
            if (a[i] == b[j])
            { inter++; i++; j++; }
            else if (a[i] < b[j])
            {
                i++;
            }
            else
            {
                j++;
            }
        }
        return (double)inter / (a.Length + b.Length - inter);
    }

    private static void SetBit(List<ulong> bits, long row, bool value)
    {
        int word = (int)(row >> 6);
        while (bits.Count <= word)
            bits.Add(0);
        if (value)
            bits[word] |= 1UL << (int)(row & 63);
    }

    // Binary format (version 0x00010001): InputColumnName (string), Mode, NGramSize, Bands, RowsPerBand, Seed (int32 each),
    // Verify (bool), JaccardThreshold (double), MaxDegreeOfParallelism (int32). Side entry "Reference": the reference
    // signatures as ReferenceSet.Write lists them.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(InputColumnName);
        w.Write((int)_options.Mode);
        w.Write(_options.NGramSize);
        w.Write(_options.Bands);
        w.Write(_options.RowsPerBand);
        w.Write(_options.Seed);
        w.Write(_options.Verify);
        w.Write(_options.JaccardThreshold);
        w.Write(_options.MaxDegreeOfParallelism);
        writer.WriteStream("Reference", _reference.Write);
    }

    // Binary format: see SaveState.
    static NearDuplicateRemoverTransformer IPersistentComponent<NearDuplicateRemoverTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string input = r.ReadString();
        var o = new NearDuplicateRemoverOptions
        {
            Mode = (DeduplicationMode)r.ReadInt32(),
            NGramSize = r.ReadInt32(),
            Bands = r.ReadInt32(),
            RowsPerBand = r.ReadInt32(),
            Seed = r.ReadInt32(),
            Verify = r.ReadBoolean(),
            JaccardThreshold = r.ReadDouble(),
            MaxDegreeOfParallelism = r.ReadInt32(),
        };
        o.Validate();
        ReferenceSet reference = new();
        reader.ReadStream("Reference", br => reference = ReferenceSet.Read(br));
        return new NearDuplicateRemoverTransformer(input, o, reference);
    }
}
