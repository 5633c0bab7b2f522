using System.Text;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

/// <summary>decode(encode(x)) == x for generated valid UTF-16 strings (no lone surrogates) across scripts and classes.</summary>
public class RoundTripPropertyTests
{
    private static readonly (int From, int To)[] s_ranges =
    [
        (0x20, 0x7E),       // ASCII printable
        (0x00, 0x1F),       // C0 controls incl. \t \n \r
        (0x7F, 0x9F),       // DEL + C1 controls
        (0xA0, 0x24F),      // Latin-1 supplement, Latin extended
        (0x300, 0x36F),     // combining marks
        (0x370, 0x3FF),     // Greek
        (0x400, 0x4FF),     // Cyrillic
        (0x590, 0x6FF),     // Hebrew, Arabic
        (0x900, 0x97F),     // Devanagari
        (0x3040, 0x30FF),   // Hiragana, Katakana
        (0x4E00, 0x9FFF),   // CJK ideographs
        (0xAC00, 0xD7A3),   // Hangul
        (0x2000, 0x206F),   // general punctuation incl. zero-width chars
        (0xFE00, 0xFE0F),   // variation selectors
        (0x1F300, 0x1FAFF), // emoji (surrogate pairs)
        (0x1D400, 0x1D7FF), // math alphanumerics
        (0x20000, 0x2A6DF), // CJK extension B
    ];

    internal static string RandomText(Random random, int maxLength)
    {
        var sb = new StringBuilder();
        int length = random.Next(maxLength + 1);
        while (sb.Length < length)
        {
            var (from, to) = s_ranges[random.Next(s_ranges.Length)];
            int runLength = random.Next(1, 8);
            for (int i = 0; i < runLength; i++)
            {
                int cp = random.Next(from, to + 1);
                if (cp is >= 0xD800 and <= 0xDFFF)
                    continue;
                sb.Append(char.ConvertFromUtf32(cp));
                if (random.Next(4) == 0)
                    sb.Append(' ');
            }
        }
        return sb.ToString();
    }

    private static readonly Lazy<LmTokenizer[]> s_tokenizers = new(() =>
    {
        var random = new Random(7);
        // Train on English plus generated text so multi-byte merges exist too.
        var corpus = new[] { File.ReadAllText(TestData.TinyShakespearePath)[..50_000] }
            .Concat(Enumerable.Range(0, 200).Select(_ => RandomText(random, 200))).ToArray();
        return
        [
            LmTokenizer.Bytes(),
            LmTokenizer.TrainBpe(corpus, new LmTokenizerOptions { VocabularySize = 600, PreTokenization = PreTokenizationPattern.Gpt2 }),
            LmTokenizer.TrainBpe(corpus, new LmTokenizerOptions { VocabularySize = 600, PreTokenization = PreTokenizationPattern.Cl100k }),
            LmTokenizer.TrainBpe(corpus, new LmTokenizerOptions { VocabularySize = 600, PreTokenization = PreTokenizationPattern.O200k }),
            LmTokenizer.Tiktoken("o200k_base"),
            LmTokenizer.Tiktoken("cl100k_base"),
        ];
    });

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void DecodeOfEncodeIsIdentityOnGeneratedStrings(int tokenizerIndex)
    {
        var tokenizer = s_tokenizers.Value[tokenizerIndex];
        var random = new Random(1234 + tokenizerIndex);
        for (int trial = 0; trial < 300; trial++)
        {
            string text = RandomText(random, 120);
            int[] ids = tokenizer.Encode(text);
            Assert.All(ids, id => Assert.InRange(id, 0, tokenizer.VocabularySize - 1));
            string decoded = tokenizer.Decode(ids);
            if (decoded != text)
                Assert.Fail($"{tokenizer} trial {trial}: round trip failed for [{string.Join(" ", text.EnumerateRunes().Select(r => $"U+{r.Value:X4}"))}]");
            Assert.Equal(Encoding.UTF8.GetByteCount(text), ids.Sum(tokenizer.GetByteCount));
        }
    }

    [Fact]
    public void CharacterTokenizerRoundTripsItsOwnCorpus()
    {
        var random = new Random(99);
        for (int trial = 0; trial < 50; trial++)
        {
            string text = RandomText(random, 200);
            if (text.Length == 0)
                continue;
            var tokenizer = LmTokenizer.Character([text]);
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
            Assert.Equal(Encoding.UTF8.GetByteCount(text), tokenizer.Encode(text).Sum(tokenizer.GetByteCount));
        }
    }
}
