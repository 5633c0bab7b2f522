// Byte-level BPE training (Sennrich et al. 2016; GPT-2's byte-level variant). Pre-tokenization with the GPT-2 /
// cl100k / o200k regex and word counting run in parallel over fixed, deterministic pieces of the corpus; the merge
// loop keeps pair counts and pair → words postings up to date incrementally and picks the next merge from a
// max-heap with lazy invalidation (as Hugging Face tokenizers does), instead of recounting after every merge.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Llm.Data;

/// <summary>The pre-tokenization regex that splits text into words before BPE (tiktoken's patterns).</summary>
public enum PreTokenizationPattern
{
    /// <summary>GPT-2 (r50k/p50k): contractions, optional-space letters, numbers, punctuation, whitespace.</summary>
    Gpt2 = 0,
    /// <summary>cl100k_base (GPT-4): case-insensitive contractions, numbers in groups of at most 3 digits.</summary>
    Cl100k = 1,
    /// <summary>o200k_base (GPT-4o): cased word pieces with attached contractions, numbers of at most 3 digits.</summary>
    O200k = 2,
}

/// <summary>What BPE training did and how long each phase took.</summary>
/// <param name="Characters">Characters of text read.</param>
/// <param name="Words">Pre-tokenized words counted (occurrences).</param>
/// <param name="DistinctWords">Distinct words.</param>
/// <param name="Merges">Merges learned.</param>
/// <param name="PreTokenization">Time to read, pre-tokenize and count words.</param>
/// <param name="Merging">Time of the merge loop.</param>
/// <param name="Building">Time to build the Microsoft.ML.Tokenizers BpeTokenizer.</param>
public sealed record BpeTrainingReport(long Characters, long Words, int DistinctWords, int Merges, TimeSpan PreTokenization, TimeSpan Merging, TimeSpan Building);

internal static class PreTokenizationRegexes
{
    public const string Gpt2 = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    // tiktoken's possessive quantifiers written as atomic groups (.NET has no possessive quantifiers).
    public const string Cl100k = @"'(?i:[sdmt]|ll|ve|re)|(?>[^\r\n\p{L}\p{N}]?)\p{L}+|\p{N}{1,3}| ?(?>[^\s\p{L}\p{N}]+)[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

    public const string O200k =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?" +
        @"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?" +
        @"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private static readonly Regex[] s_regexes =
    [
        new(Gpt2, RegexOptions.Compiled | RegexOptions.CultureInvariant),
        new(Cl100k, RegexOptions.Compiled | RegexOptions.CultureInvariant),
        new(O200k, RegexOptions.Compiled | RegexOptions.CultureInvariant),
    ];

    /// <summary>A new instance of the pattern's regex. A Regex caches a single matcher ("runner"): threads sharing one
    /// instance fall back to building matchers and lose the parallel speed-up, which one instance per thread keeps
    /// (measured in benchmarks/README.md, tokenizers).</summary>
    public static Regex Create(PreTokenizationPattern pattern) => new(Get(pattern).ToString(), Get(pattern).Options);

    public static Regex Get(PreTokenizationPattern pattern) => Enum.IsDefined(pattern)
        ? s_regexes[(int)pattern]
        : throw new ArgumentOutOfRangeException(nameof(pattern), pattern,
            $"PreTokenizationPattern {(int)pattern} is not a pre-tokenization pattern; accepted: {string.Join(", ", Enum.GetNames<PreTokenizationPattern>())}.");
}

/// <summary>GPT-2's reversible byte ↔ printable character mapping used by byte-level BPE vocabularies.</summary>
internal static class ByteLevelAlphabet
{
    public static readonly char[] ByteToChar = Build();
    public static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] Build()
    {
        var map = new char[256];
        int next = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + next++);
        }
        return map;
    }

    public static string Token(ReadOnlySpan<byte> bytes)
    {
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }
}

/// <summary>Trains a byte-level BPE: ids 0-255 are bytes, then one id per merge, then the special tokens.</summary>
internal sealed class BpeTrainer
{
    private const int PieceLength = 1 << 16;   // characters per parallel pre-tokenization piece
    private const int BatchCharacters = 8 << 20;

    private readonly int _vocabularySize;
    private readonly int _minPairFrequency;
    private readonly int _maxTokenLength;
    private readonly PreTokenizationPattern _pattern;
    private readonly IReadOnlyList<string> _specials;
    private readonly int _parallelism;

    public BpeTrainer(int vocabularySize, int minPairFrequency, int maxTokenLength, PreTokenizationPattern pattern, IReadOnlyList<string> specials, int parallelism)
    {
        _vocabularySize = vocabularySize;
        _minPairFrequency = minPairFrequency;
        _maxTokenLength = maxTokenLength;
        _pattern = pattern;
        _specials = specials;
        _parallelism = Math.Max(1, parallelism);
    }

    /// <summary>The learned merges (pairs of ids) in order; merge i creates id 256 + i.</summary>
    public List<(int Left, int Right)> Merges { get; } = [];

    public BpeTrainingReport? Report { get; private set; }

    public void Train(IEnumerable<ReadOnlyMemory<char>> corpus)
    {
        var clock = Stopwatch.StartNew();
        var (words, counts, characters, occurrences) = CountWords(corpus);
        if (characters == 0)
            throw new ArgumentException("The corpus is empty: BPE training needs at least one character of text.", nameof(corpus));
        var preTokenization = clock.Elapsed;
        clock.Restart();
        Merge(words, counts);
        var merging = clock.Elapsed;
        Report = new BpeTrainingReport(characters, occurrences, words.Length, Merges.Count, preTokenization, merging, TimeSpan.Zero);
    }

    internal void SetBuildTime(TimeSpan building) => Report = Report! with { Building = building };

    // ---- Pre-tokenization and counting ----

    private (int[][] Words, long[] Counts, long Characters, long Occurrences) CountWords(IEnumerable<ReadOnlyMemory<char>> corpus)
    {
        var regex = PreTokenizationRegexes.Get(_pattern);
        var tables = new Dictionary<string, long>[_parallelism];
        for (int i = 0; i < tables.Length; i++)
            tables[i] = new Dictionary<string, long>(StringComparer.Ordinal);
        var pieces = new List<ReadOnlyMemory<char>>();
        long characters = 0, batchCharacters = 0;

        void Flush()
        {
            if (pieces.Count == 0)
                return;
            var batch = pieces.ToArray();
            pieces.Clear();
            batchCharacters = 0;
            // Worker w takes pieces w, w + P, w + 2P, ...: its own table, no locks.
            Parallel.For(0, tables.Length, new ParallelOptions { MaxDegreeOfParallelism = _parallelism }, w =>
            {
                var lookup = tables[w].GetAlternateLookup<ReadOnlySpan<char>>();
                for (int p = w; p < batch.Length; p += tables.Length)
                {
                    ReadOnlySpan<char> text = batch[p].Span;
                    foreach (ValueMatch match in regex.EnumerateMatches(text))
                    {
                        ref long count = ref CollectionsMarshal.GetValueRefOrAddDefault(lookup, text.Slice(match.Index, match.Length), out _);
                        count++;
                    }
                }
            });
        }

        foreach (var document in corpus)
        {
            var rest = document;
            characters += rest.Length;
            while (rest.Length > 0)
            {
                // Cut long documents after a newline so pieces are independent and the cut points deterministic.
                int length = rest.Length;
                if (length > PieceLength)
                {
                    int newline = rest.Span[..PieceLength].LastIndexOf('\n');
                    length = newline > 0 ? newline + 1 : PieceLength;
                    if (char.IsHighSurrogate(rest.Span[length - 1]))
                        length--;
                }
                pieces.Add(rest[..length]);
                batchCharacters += length;
                rest = rest[length..];
                if (batchCharacters >= BatchCharacters)
                    Flush();
            }
        }
        Flush();

        var merged = tables[0];
        for (int i = 1; i < tables.Length; i++)
        {
            foreach (var (word, count) in tables[i])
                CollectionsMarshal.GetValueRefOrAddDefault(merged, word, out _) += count;
        }
        // Ordinal order makes everything after this independent of hashing and thread count.
        var keys = merged.Keys.ToArray();
        Array.Sort(keys, StringComparer.Ordinal);
        var words = new int[keys.Length][];
        var counts = new long[keys.Length];
        long occurrences = 0;
        for (int i = 0; i < keys.Length; i++)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(keys[i]);
            var symbols = new int[bytes.Length];
            for (int j = 0; j < bytes.Length; j++)
                symbols[j] = bytes[j];
            words[i] = symbols;
            counts[i] = merged[keys[i]];
            occurrences += counts[i];
        }
        return (words, counts, characters, occurrences);
    }

    // ---- Merge loop ----

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    private sealed class HeapOrder : IComparer<(long Count, long Pair)>
    {
        public static readonly HeapOrder Instance = new();

        // Highest count first; ties go to the smaller pair (left id, then right id): deterministic.
        public int Compare((long Count, long Pair) x, (long Count, long Pair) y)
            => x.Count != y.Count ? y.Count.CompareTo(x.Count) : x.Pair.CompareTo(y.Pair);
    }

    private void Merge(int[][] words, long[] counts)
    {
        int targetMerges = _vocabularySize - 256 - _specials.Count;
        var lengths = new int[words.Length];
        var pairCounts = new Dictionary<long, long>();
        var postings = new Dictionary<long, List<int>>();
        for (int w = 0; w < words.Length; w++)
        {
            int[] symbols = words[w];
            lengths[w] = symbols.Length;
            for (int i = 0; i + 1 < symbols.Length; i++)
            {
                long key = Key(symbols[i], symbols[i + 1]);
                CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, key, out _) += counts[w];
                var list = CollectionsMarshal.GetValueRefOrAddDefault(postings, key, out _) ??= [];
                if (list.Count == 0 || list[^1] != w)
                    list.Add(w);
            }
        }
        var heap = new PriorityQueue<long, (long Count, long Pair)>(HeapOrder.Instance);
        foreach (var (pair, count) in pairCounts)
            heap.Enqueue(pair, (count, pair));

        var tokenLength = new List<int>(Enumerable.Repeat(1, 256));
        var seen = new int[words.Length];
        Array.Fill(seen, -1);
        var touched = new HashSet<long>();
        while (Merges.Count < targetMerges && heap.TryDequeue(out long best, out var priority))
        {
            long current = pairCounts.GetValueOrDefault(best);
            if (current != priority.Count)
            {
                // Stale entry: a decreased count goes back in; an increased one was pushed when it increased.
                if (current > 0 && current < priority.Count)
                    heap.Enqueue(best, (current, best));
                continue;
            }
            if (current < _minPairFrequency)
                break;
            int left = (int)(best >> 32), right = (int)best;
            if (_maxTokenLength > 0 && tokenLength[left] + tokenLength[right] > _maxTokenLength)
            {
                pairCounts.Remove(best);   // never merged; its count is no longer tracked
                postings.Remove(best);
                continue;
            }
            int merged = 256 + Merges.Count;
            Merges.Add((left, right));
            tokenLength.Add(tokenLength[left] + tokenLength[right]);
            touched.Clear();
            int stamp = Merges.Count;
            foreach (int w in postings[best])
            {
                if (seen[w] == stamp)
                    continue;
                seen[w] = stamp;
                int[] symbols = words[w];
                int length = lengths[w];
                long count = counts[w];
                if (!Contains(symbols, length, left, right))
                    continue;
                for (int i = 0; i + 1 < length; i++)
                {
                    long key = Key(symbols[i], symbols[i + 1]);
                    if (pairCounts.ContainsKey(key))
                        CollectionsMarshal.GetValueRefOrNullRef(pairCounts, key) -= count;
                }
                int n = 0;
                for (int i = 0; i < length; i++)
                {
                    if (i + 1 < length && symbols[i] == left && symbols[i + 1] == right)
                    {
                        symbols[n++] = merged;
                        i++;
                    }
                    else
                    {
                        symbols[n++] = symbols[i];
                    }
                }
                lengths[w] = n;
                for (int i = 0; i + 1 < n; i++)
                {
                    int a = symbols[i], b = symbols[i + 1];
                    long key = Key(a, b);
                    if (a != merged && b != merged)
                    {
                        if (pairCounts.ContainsKey(key))
                            CollectionsMarshal.GetValueRefOrNullRef(pairCounts, key) += count;
                        continue;
                    }
                    CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, key, out _) += count;
                    var list = CollectionsMarshal.GetValueRefOrAddDefault(postings, key, out _) ??= [];
                    if (list.Count == 0 || list[^1] != w)
                        list.Add(w);
                    touched.Add(key);
                }
            }
            pairCounts.Remove(best);
            postings.Remove(best);
            foreach (long key in touched)
            {
                long count = pairCounts.GetValueOrDefault(key);
                if (count > 0)
                    heap.Enqueue(key, (count, key));
            }
        }
    }

    private static bool Contains(int[] symbols, int length, int left, int right)
    {
        for (int i = 0; i + 1 < length; i++)
        {
            if (symbols[i] == left && symbols[i + 1] == right)
                return true;
        }

        return false;
    }
}
