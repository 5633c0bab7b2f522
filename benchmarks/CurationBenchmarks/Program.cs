// Curation benchmarks: prints measured figures and the machine (nothing hard-coded).
//   dotnet run -c Release --project benchmarks/CurationBenchmarks -- [all|throughput|dedup|pipeline] [pipelineMB]
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

string what = args.Length > 0 ? args[0] : "all";
int pipelineMb = args.Length > 1 ? int.Parse(args[1]) : 1024;
PrintMachine();
var vocabulary = RealText.Vocabulary();
if (what is "all" or "throughput") Throughput(vocabulary);
if (what is "all" or "dedup") DedupAccuracy();
if (what is "all" or "pipeline") Pipeline(vocabulary, pipelineMb);
Console.WriteLine($"\nload average at the end (1/5/15 min): {LoadAverage()}");

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

static void PrintMachine()
{
    string cpu = File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? "unknown" : "unknown";
    Console.WriteLine($"machine: {Environment.ProcessorCount} logical cores, {cpu}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}");
    Console.WriteLine($"vector width: {System.Numerics.Vector<ulong>.Count * 64} bits, AVX-512: {System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated}");
    Console.WriteLine($"load average at the start (1/5/15 min): {LoadAverage()}  (a shared machine: figures for all cores are only meaningful when it is near 0)");
    // Calibration: how much CPU this process can get on all cores, relative to one (a pure integer loop per thread).
    static long Spin(int threads)
    {
        long total = 0;
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ =>
        {
            var sw = Stopwatch.StartNew();
            long x = 0;
            while (sw.ElapsedMilliseconds < 1500)
            {
                for (int k = 0; k < 10_000; k++)
                    x++;
            }

            Interlocked.Add(ref total, x);
        });
        return total;
    }
    double single = Spin(1), all = Spin(Environment.ProcessorCount);
    Console.WriteLine($"available parallelism now: {all / single:F2}x one thread with {Environment.ProcessorCount} threads (busy-loop calibration)");
}

static void Throughput(string[] vocabulary)
{
    var docs = Synthetic.Documents(vocabulary, seed: 1, count: 20_000, dirty: true).ToArray();
    double mb = docs.Sum(d => (double)Encoding.UTF8.GetByteCount(d)) / 1e6;
    Console.WriteLine($"\n== throughput on {docs.Length} synthetic documents, {mb:F1} MB UTF-8 ==");
    var ml = new MLContext(seed: 1);

    // Normalizer: the public span API, one thread and all cores.
    foreach (int threads in new[] { 1, Environment.ProcessorCount })
    {
        LmTextNormalizer.Normalize(docs[0]);
        double s = Best(3, () => Parallel.For(0, docs.Length, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => LmTextNormalizer.Normalize(docs[i].AsMemory())));
        Console.WriteLine($"normalizer (NFC, defaults)            threads={threads}: {mb / s,8:F1} MB/s  ({mb / s / threads:F1} MB/s per core; {mb / LastCpuSeconds:F1} MB per CPU-second)");
    }

    // Quality filter, all rule sets: one cursor (one core), and a cursor set over a cached view (all cores).
    var data = ml.Data.Cache(ml.Data.LoadFromEnumerable(docs.Select(d => new Row { Text = d })));
    var filter = ml.Transforms.Text.FilterByQuality("Text").Fit(data);
    var filtered = filter.Transform(data);
    CountRows(filtered, 1);
    foreach (int threads in new[] { 1, Environment.ProcessorCount })
    {
        double s = Best(3, () => CountRows(filtered, threads));
        Console.WriteLine($"quality filter (all 4 rule sets)      threads={threads}: {mb / s,8:F1} MB/s  ({mb / s / threads:F1} MB/s per core; {mb / LastCpuSeconds:F1} MB per CPU-second)  {filter.LastReport}");
    }
    foreach (var (name, options) in new (string, TextQualityFilterOptions)[]
    {
        ("  Gopher quality only", new() { GopherRepetition = false, C4 = false, FineWeb = false }),
        ("  Gopher repetition only", new() { GopherQuality = false, C4 = false, FineWeb = false }),
        ("  C4 only", new() { GopherQuality = false, GopherRepetition = false, FineWeb = false }),
        ("  FineWeb only", new() { GopherQuality = false, GopherRepetition = false, C4 = false }),
    })
    {
        var one = ml.Transforms.Text.FilterByQuality("Text", options).Fit(data).Transform(data);
        double s = Best(3, () => CountRows(one, 1));
        Console.WriteLine($"{name,-38}threads=1: {mb / s,8:F1} MB/s  ({mb / LastCpuSeconds:F1} MB per CPU-second)");
    }

    // Language ID (bundled model) on the same documents.
    {
        LanguageIdentifier.Default.Detect("warm up");
        double s = Best(3, () => { foreach (var d in docs) LanguageIdentifier.Default.Detect(d); });
        Console.WriteLine($"language ID (26 languages)            threads=1: {mb / s,8:F1} MB/s  ({mb / LastCpuSeconds:F1} MB per CPU-second)");
    }

    // MinHash: 14 bands x 8 rows = 112 permutations, word 5-grams; the full dedup pass (hash, band sort, union-find).
    foreach (int threads in new[] { 1, Environment.ProcessorCount })
    {
        var dedup = ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { MaxDegreeOfParallelism = threads }).Fit(data);
        double s = Best(3, () => { using var c = dedup.Transform(data).GetRowCursor([]); c.MoveNext(); });
        Console.WriteLine($"MinHash dedup pass (112 permutations) threads={threads}: {mb / s,8:F1} MB/s  ({mb / s / threads:F1} MB/s per core; {mb / LastCpuSeconds:F1} MB per CPU-second)  {dedup.LastReport!.RowsOut} of {dedup.LastReport.RowsIn} kept");
    }
}

static long CountRows(IDataView view, int threads)
{
    var cursors = threads == 1 ? [view.GetRowCursor(view.Schema)] : view.GetRowCursorSet(view.Schema, threads);
    if (cursors.Length != threads)
        Console.WriteLine($"  (asked for {threads} cursors, got {cursors.Length})");
    long n = 0;
    Parallel.ForEach(cursors, c =>
    {
        long k = 0;
        while (c.MoveNext())
            k++;
        Interlocked.Add(ref n, k);
        c.Dispose();
    });
    return n;
}

static double Best(int runs, Action action)
{
    double best = double.MaxValue;
    double cpu = 0;
    var process = Process.GetCurrentProcess();
    for (int r = 0; r < runs; r++)
    {
        process.Refresh();
        var cpu0 = process.TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        action();
        double wall = sw.Elapsed.TotalSeconds;
        process.Refresh();
        if (wall < best)
        { best = wall; cpu = (process.TotalProcessorTime - cpu0).TotalSeconds; }
    }
    LastCpuSeconds = cpu;
    return best;
}

static void DedupAccuracy()
{
    const int Rounds = 40;
    var originals = RealText.Documents(words: 200);
    Console.WriteLine($"\n== dedup accuracy: {originals.Count} distinct 200-word documents cut from /usr/share/common-licenses; {Rounds} rounds, " +
        "each deduplicating all originals plus one edited copy of each (half with 0-4 word replacements, half with 5-80) ==");
    var rng = new Random(42);
    var ml = new MLContext(seed: 1);
    foreach (bool verify in new[] { false, true })
    {
        int high = 0, highFound = 0, low = 0, lowFound = 0, mid = 0, midFound = 0, originalsRemoved = 0;
        var sw = Stopwatch.StartNew();
        var roundRng = new Random(42);
        for (int round = 0; round < Rounds; round++)
        {
            var variants = new List<(string Text, double Jaccard)>();
            foreach (var doc in originals)
            {
                var words = doc.Split(' ');
                int edits = roundRng.Next(2) == 0 ? roundRng.Next(0, 5) : roundRng.Next(5, 81);
                var positions = Enumerable.Range(0, words.Length).OrderBy(_ => roundRng.Next()).Take(edits);
                foreach (int p in positions)
                    words[p] = "zq" + roundRng.Next(1_000_000);
                string variant = string.Join(' ', words);
                variants.Add((variant, RealText.TrueJaccard(doc, variant)));
            }
            var rows = originals.Select((t, i) => new IdRow { Text = t, Id = i }).Concat(variants.Select((v, i) => new IdRow { Text = v.Text, Id = originals.Count + i })).ToArray();
            var data = ml.Data.LoadFromEnumerable(rows);
            var model = ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { Verify = verify, Seed = round + 1 }).Fit(data);
            var kept = new HashSet<int>(ml.Data.CreateEnumerable<IdRow>(model.Transform(data), reuseRowObject: false).Select(r => r.Id));
            for (int i = 0; i < variants.Count; i++)
            {
                bool removed = !kept.Contains(originals.Count + i);
                double j = variants[i].Jaccard;
                if (j >= 0.85)
                { high++; if (removed) highFound++; }
                else if (j <= 0.5)
                { low++; if (removed) lowFound++; }
                else
                { mid++; if (removed) midFound++; }
            }
            originalsRemoved += Enumerable.Range(0, originals.Count).Count(i => !kept.Contains(i));
        }
        Console.WriteLine($"verify={verify,-5}: recall (J >= 0.85) {highFound}/{high} = {100.0 * highFound / Math.Max(1, high):F2}%   " +
            $"false-positive rate (J <= 0.5) {lowFound}/{low} = {100.0 * lowFound / Math.Max(1, low):F2}%   0.5 < J < 0.85 removed {midFound}/{mid}   " +
            $"originals removed {originalsRemoved}   ({sw.Elapsed.TotalSeconds:F1} s)");
    }
}

static void Pipeline(string[] vocabulary, int megabytes)
{
    Console.WriteLine($"\n== streaming pipeline: {megabytes} MB synthetic corpus -> NormalizeForLm -> FilterByQuality -> RemoveNearDuplicates ==");
    var ml = new MLContext(seed: 1);
    var source = new StreamingCorpus(vocabulary, (long)megabytes * 1_000_000);
    var pipeline = ml.Transforms.Text.NormalizeForLm("Clean", "Text")
        .Append(ml.Transforms.Text.FilterByQuality("Clean"))
        .Append(ml.Transforms.Text.RemoveNearDuplicates("Clean"));
    var sw = Stopwatch.StartNew();
    var model = pipeline.Fit(source);
    var output = model.Transform(source);
    long rows = 0, chars = 0;
    using (var cursor = output.GetRowCursor([output.Schema["Clean"]]))
    {
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(output.Schema["Clean"]);
        ReadOnlyMemory<char> text = default;
        while (cursor.MoveNext())
        { getter(ref text); rows++; chars += text.Length; }
    }
    sw.Stop();
    var filter = (TextQualityFilterTransformer)model.ElementAt(1);
    var dedup = (NearDuplicateRemoverTransformer)model.ElementAt(2);
    Console.WriteLine($"input {source.Bytes / 1e6:F0} MB UTF-8 in {source.Rows} documents; output {rows} documents, {chars / 1e6:F0} M chars; " +
        $"{sw.Elapsed.TotalSeconds:F1} s wall (two passes over the input: dedup signatures, then output)");
    Console.WriteLine($"quality: {filter.LastReport}");
    Console.WriteLine($"dedup:   {dedup.LastReport}");
    Console.WriteLine($"peak working set: {Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0:F0} MiB");
}

sealed class Row { public string Text { get; set; } = ""; }

static partial class Program
{
    /// <summary>Process CPU seconds of the best run of the last <c>Best</c> call (all threads, GC included).</summary>
    public static double LastCpuSeconds;
}

sealed class IdRow { public string Text { get; set; } = ""; public int Id { get; set; } }

/// <summary>Real English text shipped by every Debian system: the license texts.</summary>
static class RealText
{
    public static string[] AllWords()
    {
        var words = new List<string>();
        foreach (var f in Directory.GetFiles("/usr/share/common-licenses").Order(StringComparer.Ordinal))
        {
            if (new FileInfo(f).Attributes.HasFlag(FileAttributes.ReparsePoint))
                continue; // GPL -> GPL-3 etc.
            words.AddRange(File.ReadAllText(f).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
        }
        return words.ToArray();
    }

    public static string[] Vocabulary() =>
        AllWords().Select(w => new string(w.Where(char.IsLetter).ToArray()).ToLowerInvariant()).Where(w => w.Length > 0).Distinct().Order(StringComparer.Ordinal).ToArray();

    /// <summary>Non-overlapping windows of real text, keeping only those sharing no more than 10% of shingles with an earlier one.</summary>
    public static List<string> Documents(int words)
    {
        var all = AllWords();
        var docs = new List<string>();
        var index = new Dictionary<string, int>();
        for (int start = 0; start + words <= all.Length; start += words / 2)
        {
            string doc = string.Join(' ', all, start, words);
            var shingles = Shingles(doc);
            int shared = shingles.Count(s => index.ContainsKey(s));
            if (shared > shingles.Count / 10)
                continue;
            foreach (var s in shingles)
                index.TryAdd(s, docs.Count);
            docs.Add(doc);
        }
        return docs;
    }

    public static HashSet<string> Shingles(string text)
    {
        var norm = new StringBuilder(text.Length);
        foreach (char c in text.Normalize(NormalizationForm.FormD))
        {
            var cat = char.GetUnicodeCategory(c);
            if (cat == System.Globalization.UnicodeCategory.NonSpacingMark)
                continue;
            norm.Append(char.IsLetter(c) ? char.ToLowerInvariant(c) : char.IsDigit(c) ? '0' : ' ');
        }
        var w = norm.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var set = new HashSet<string>();
        for (int i = 0; i + 5 <= w.Length; i++)
            set.Add(string.Join(' ', w, i, 5));
        return set;
    }

    public static double TrueJaccard(string a, string b)
    {
        var sa = Shingles(a);
        var sb = Shingles(b);
        int inter = sa.Count(sb.Contains);
        return (double)inter / (sa.Count + sb.Count - inter);
    }
}

/// <summary>English-like documents from a real vocabulary: sentences on lines, paragraphs, some noise and repeats.</summary>
static class Synthetic
{
    private static readonly string[] s_stop = ["the", "of", "and", "to", "that", "with", "be", "have", "a", "in", "is", "for"];

    public static string Document(string[] vocabulary, Random rng, bool dirty)
    {
        var sb = new StringBuilder(2500);
        int lines = rng.Next(6, 14);
        for (int l = 0; l < lines; l++)
        {
            int words = rng.Next(8, 24);
            for (int w = 0; w < words; w++)
            {
                string word = rng.Next(3) == 0 ? s_stop[rng.Next(s_stop.Length)] : vocabulary[rng.Next(vocabulary.Length)];
                if (w == 0)
                    word = char.ToUpperInvariant(word[0]) + word[1..];
                sb.Append(word);
                if (w < words - 1)
                    sb.Append(dirty && rng.Next(40) == 0 ? "  " : (rng.Next(15) == 0 ? ", " : " "));
            }
            sb.Append(rng.Next(10) == 0 ? "!" : ".");
            if (dirty && rng.Next(8) == 0)
                sb.Append(" \u201Cquoted\u201D \u2014 caf\u00E9\u200B");
            sb.Append(l % 4 == 3 ? "\n\n" : "\n");
        }
        return sb.ToString();
    }

    public static IEnumerable<string> Documents(string[] vocabulary, int seed, int count, bool dirty)
    {
        var rng = new Random(seed);
        var recent = new List<string>();
        for (int i = 0; i < count; i++)
        {
            // about 5% exact or lightly edited repeats of a recent document
            if (recent.Count > 0 && rng.Next(20) == 0)
            {
                string d = recent[rng.Next(recent.Count)];
                yield return rng.Next(2) == 0 ? d : d.Replace(" the ", " a ", StringComparison.Ordinal);
                continue;
            }
            string doc = Document(vocabulary, rng, dirty);
            if (recent.Count < 64)
                recent.Add(doc);
            else
                recent[rng.Next(64)] = doc;
            yield return doc;
        }
    }
}

/// <summary>A streamed synthetic corpus of a given UTF-8 size: documents are generated on the fly, never stored.</summary>
sealed class StreamingCorpus : IDataView
{
    private readonly string[] _vocabulary;
    private readonly long _bytes;

    public StreamingCorpus(string[] vocabulary, long bytes)
    {
        _vocabulary = vocabulary;
        _bytes = bytes;
        var b = new DataViewSchema.Builder();
        b.AddColumn("Text", TextDataViewType.Instance);
        Schema = b.ToSchema();
    }

    public long Bytes { get; private set; }
    public long Rows { get; private set; }
    public bool CanShuffle => false;
    public DataViewSchema Schema { get; }
    public long? GetRowCount() => null;
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(this);
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [new Cursor(this)];

    private sealed class Cursor(StreamingCorpus parent) : DataViewRowCursor
    {
        private readonly IEnumerator<string> _docs = Synthetic.Documents(parent._vocabulary, seed: 7, count: int.MaxValue, dirty: true).GetEnumerator();
        private long _bytes, _position = -1;
        private string _current = "";

        public override long Position => _position;
        public override long Batch => 0;
        public override DataViewSchema Schema => parent.Schema;
        public override bool IsColumnActive(DataViewSchema.Column column) => true;
        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            ValueGetter<ReadOnlyMemory<char>> g = (ref ReadOnlyMemory<char> v) => v = _current.AsMemory();
            return (ValueGetter<TValue>)(Delegate)g;
        }

        public override bool MoveNext()
        {
            if (_bytes >= parent._bytes || !_docs.MoveNext())
            {
                parent.Bytes = _bytes;
                parent.Rows = _position + 1;
                return false;
            }
            _current = _docs.Current;
            _bytes += Encoding.UTF8.GetByteCount(_current);
            _position++;
            return true;
        }
    }
}
