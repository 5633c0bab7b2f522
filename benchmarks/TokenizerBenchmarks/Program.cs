// Tokenizer and packing benchmarks (issue 4). Prints measured figures and the machine; nothing is hard-coded.
//   dotnet run -c Release --project benchmarks/TokenizerBenchmarks [-- --bpe-mb 100] [--skip-bpe]
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

int bpeMegabytes = 100;
bool skipBpe = false, diverse = false, onlyBpe = false;
for (int i = 0; i < args.Length; i++)
{
    if (args[i] == "--bpe-mb")
        bpeMegabytes = int.Parse(args[++i]);
    else if (args[i] == "--skip-bpe")
        skipBpe = true;
    else if (args[i] == "--diverse")
        diverse = true;    // mutate one letter in 30% of words: a corpus with millions of distinct words
    else if (args[i] == "--only-bpe")
        onlyBpe = true;
}

PrintMachine();
string shakespeare = File.ReadAllText(FindData());
Console.WriteLine($"tinyshakespeare: {shakespeare.Length:N0} characters, {Encoding.UTF8.GetByteCount(shakespeare):N0} bytes");
Console.WriteLine();

// ---- 1. BPE training: vocabulary 8,192 on ~100 MB of English text ----
LmTokenizer? bpe8192 = null;
if (!skipBpe)
{
    var corpus = BuildCorpus(shakespeare, bpeMegabytes * 1_000_000L, diverse);
    long bytes = corpus.Sum(d => (long)Encoding.UTF8.GetByteCount(d));
    Console.WriteLine($"== BPE training: vocabulary 8192, GPT-2 pre-tokenization, corpus {bytes / 1e6:F1} MB in {corpus.Count:N0} documents " +
        (diverse ? "(tinyshakespeare paragraphs, shuffled and repeated, one letter of 30% of words replaced at random: many distinct words; fixed seed)"
                 : "(tinyshakespeare paragraphs, shuffled and repeated with a fixed seed)"));
    var clock = Stopwatch.StartNew();
    bpe8192 = LmTokenizer.TrainBpe(corpus, new LmTokenizerOptions { VocabularySize = 8192 }, out var report);
    clock.Stop();
    Console.WriteLine($"  pre-tokenization + counting: {report.PreTokenization.TotalSeconds,7:F2} s  ({report.Words:N0} words, {report.DistinctWords:N0} distinct, {bytes / 1e6 / report.PreTokenization.TotalSeconds:F1} MB/s)");
    Console.WriteLine($"  merging:                     {report.Merging.TotalSeconds,7:F2} s  ({report.Merges:N0} merges)");
    Console.WriteLine($"  building BpeTokenizer:       {report.Building.TotalSeconds,7:F2} s");
    Console.WriteLine($"  total:                       {clock.Elapsed.TotalSeconds,7:F2} s");
    Console.WriteLine();
    corpus = null;
    GC.Collect();
}
if (onlyBpe)
    return;

// ---- 2. Quality: bytes per token on tinyshakespeare ----
Console.WriteLine("== Bytes per token on tinyshakespeare (BPE trained on the first 90%, measured on the last 10%; and on the whole file)");
int split = shakespeare.LastIndexOf('\n', shakespeare.Length * 9 / 10) + 1;
string train = shakespeare[..split], heldOut = shakespeare[split..];
var byVocabulary = new List<(string Name, LmTokenizer Tokenizer)>();
foreach (int vocabulary in new[] { 512, 2048, 8192 })
{
    var clock = Stopwatch.StartNew();
    var tokenizer = LmTokenizer.TrainBpe([train], new LmTokenizerOptions { VocabularySize = vocabulary });
    byVocabulary.Add(($"BPE {vocabulary} (trained here, {clock.Elapsed.TotalSeconds:F1} s)", tokenizer));
}
byVocabulary.Add(("o200k_base", LmTokenizer.Tiktoken("o200k_base")));
byVocabulary.Add(("cl100k_base", LmTokenizer.Tiktoken("cl100k_base")));
foreach (var (name, tokenizer) in byVocabulary)
{
    double heldOutRatio = Encoding.UTF8.GetByteCount(heldOut) / (double)tokenizer.Encode(heldOut).Length;
    double wholeRatio = Encoding.UTF8.GetByteCount(shakespeare) / (double)tokenizer.Encode(shakespeare).Length;
    Console.WriteLine($"  {name,-36} held-out {heldOutRatio:F3} bytes/token   whole file {wholeRatio:F3} bytes/token");
}
Console.WriteLine();

// ---- 3. Encoding throughput: TokenizeForLm vs raw Microsoft.ML.Tokenizers ----
var ml = new MLContext(seed: 1);
var documents = Paragraphs(shakespeare);
var repeated = Enumerable.Repeat(documents, 8).SelectMany(d => d).ToArray();
long encodeBytes = repeated.Sum(d => (long)Encoding.UTF8.GetByteCount(d));
Console.WriteLine($"== Encoding throughput: {repeated.Length:N0} documents, {encodeBytes / 1e6:F1} MB (tinyshakespeare paragraphs x8)");
var data = ml.Data.LoadFromEnumerable(repeated.Select(t => new TextRow { Text = t }));
var encoders = new List<(string Name, LmTokenizer Tokenizer)>
{
    ("BPE 8192", bpe8192 ?? byVocabulary[2].Tokenizer),
    ("o200k_base", LmTokenizer.Tiktoken("o200k_base")),
    ("bytes", LmTokenizer.Bytes()),
};
foreach (var (name, tokenizer) in encoders)
{
    // Warm caches, then measure.
    RawEncode(tokenizer, repeated.AsSpan(0, 2000));
    double raw = Best(3, () => RawEncode(tokenizer, repeated));
    var model = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", new LmTokenizerOptions { Tokenizer = tokenizer }).Fit(data);
    model.MaxDegreeOfParallelism = 1;
    double serial = Best(3, () => CountTokens(model.Transform(data), "Tokens"));
    model.MaxDegreeOfParallelism = null;   // all cores
    double parallel = Best(3, () => CountTokens(model.Transform(data), "Tokens"));
    Console.WriteLine($"  {name,-11} raw Tokenizer.EncodeToIds 1 thread: {encodeBytes / 1e6 / raw,7:F1} MB/s | TokenizeForLm 1 thread: {encodeBytes / 1e6 / serial,7:F1} MB/s " +
        $"({raw / serial * 100:F0}% of raw) | TokenizeForLm {Environment.ProcessorCount} threads: {encodeBytes / 1e6 / parallel,7:F1} MB/s ({raw / parallel * 100:F0}% of raw 1-thread, x{serial / parallel:F2} vs 1 thread)");
}
Console.WriteLine();

// ---- 4. Packing throughput ----
var tokenDocs = new List<TokensRow>();
var rng = new Random(5);
long packTokens = 0;
while (packTokens < 50_000_000)
{
    int length = rng.Next(50, 2000);
    var tokens = new int[length];
    for (int i = 0; i < length; i++)
        tokens[i] = rng.Next(50_000);
    tokenDocs.Add(new TokensRow { Tokens = tokens });
    packTokens += length;
}
var tokenData = ml.Data.LoadFromEnumerable(tokenDocs);
Console.WriteLine($"== Packing throughput: {tokenDocs.Count:N0} documents, {packTokens / 1e6:F1} M tokens (random lengths 50-1999), context 1024, EOS 50000");
double readOnly = Best(3, () => CountTokens(tokenData, "Tokens"));
Console.WriteLine($"  reading the input IDataView alone (LoadFromEnumerable): {packTokens / readOnly / 1e6,8:F1} M tokens/s");
foreach (var mode in new[] { PackingMode.Concatenate, PackingMode.BestFit, PackingMode.Padded })
{
    var packer = ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 1024, Mode = mode, EndOfTextId = 50_000 }).Fit(tokenData);
    var packed = packer.Transform(tokenData);
    double seconds = Best(3, () => CountTokens(packed, "Blocks"));
    var stats = packer.LastPassStatistics!;
    Console.WriteLine($"  {mode,-11} {stats.InputTokens / seconds / 1e6,8:F1} M tokens/s   blocks {stats.Blocks:N0}   padding {stats.PaddingFraction:P2}   truncated {stats.TruncatedFraction:P2}");
}

static void PrintMachine()
{
    string cpu = "unknown";
    if (File.Exists("/proc/cpuinfo"))
        cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':', 2)[1].Trim() ?? cpu;
    Console.WriteLine($"Machine: {Environment.ProcessorCount} cores, {cpu}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}, " +
        $"{GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1L << 30)} GiB available to the GC");
#if DEBUG
    Console.WriteLine("WARNING: Debug build; measure with -c Release.");
#endif
    Console.WriteLine($"Date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
}

static string FindData()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
    {
        string candidate = Path.Combine(dir.FullName, "samples", "data", "tinyshakespeare.txt");
        if (File.Exists(candidate))
            return candidate;
    }
    throw new FileNotFoundException("samples/data/tinyshakespeare.txt not found");
}

static string[] Paragraphs(string text) => text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(p => p + "\n\n").ToArray();

static List<string> BuildCorpus(string text, long targetBytes, bool diverse)
{
    var paragraphs = Paragraphs(text);
    var random = new Random(42);
    var corpus = new List<string>();
    long bytes = 0;
    while (bytes < targetBytes)
    {
        var copy = (string[])paragraphs.Clone();
        random.Shuffle(copy);
        foreach (string paragraph in copy)
        {
            string p = paragraph;
            if (diverse)
            {
                var chars = p.ToCharArray();
                for (int i = 1; i < chars.Length; i++)
                {
                    if (char.IsLetter(chars[i]) && !char.IsLetter(chars[i - 1]) && random.Next(10) < 3)
                    {
                        int end = i;
                        while (end < chars.Length && char.IsLetter(chars[end]))
                            end++;
                        chars[random.Next(i, end)] = (char)('a' + random.Next(26));
                    }
                }

                p = new string(chars);
            }
            corpus.Add(p);
            bytes += p.Length;   // ASCII
            if (bytes >= targetBytes)
                break;
        }
    }
    return corpus;
}

static double Best(int repeats, Action action)
{
    double best = double.MaxValue;
    for (int i = 0; i < repeats; i++)
    {
        var clock = Stopwatch.StartNew();
        action();
        best = Math.Min(best, clock.Elapsed.TotalSeconds);
    }
    return best;
}

static long RawEncode(LmTokenizer tokenizer, ReadOnlySpan<string> texts)
{
    long count = 0;
    foreach (string text in texts)
        count += tokenizer.Tokenizer.EncodeToIds(text).Count;
    return count;
}

/// <summary>Reads every row of a token-vector column through a cursor; returns the number of tokens read.</summary>
static long CountTokens(IDataView data, string columnName)
{
    var column = data.Schema[columnName];
    using var cursor = data.GetRowCursor([column]);
    var getter = cursor.GetGetter<VBuffer<int>>(column);
    VBuffer<int> value = default;
    long count = 0;
    while (cursor.MoveNext())
    {
        getter(ref value);
        count += value.Length;
    }
    return count;
}

internal sealed class TextRow
{
    public string Text { get; set; } = "";
}

internal sealed class TokensRow
{
    [VectorType]
    public int[] Tokens { get; set; } = [];
}
