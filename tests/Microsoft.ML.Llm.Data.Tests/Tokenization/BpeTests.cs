using Microsoft.ML.Llm.Data;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

public class BpeTests
{
    private static readonly Lazy<string> s_text = new(() => File.ReadAllText(TestData.TinyShakespearePath)[..200_000]);
    private static readonly Lazy<LmTokenizer> s_bpe512 = new(() => LmTokenizer.TrainBpe([s_text.Value], new LmTokenizerOptions { VocabularySize = 512 }));

    [Fact]
    public void TrainedBpeHasTheRequestedVocabularyAndCompresses()
    {
        var tokenizer = LmTokenizer.TrainBpe([s_text.Value], new LmTokenizerOptions { VocabularySize = 512, PadToken = "<|pad|>" }, out var report);
        Assert.Equal(LmTokenizerKind.Bpe, tokenizer.Kind);
        Assert.Equal(512, tokenizer.VocabularySize);
        Assert.Equal(510, tokenizer.EndOfTextId);
        Assert.Equal(511, tokenizer.PadId);
        Assert.Equal(254, report.Merges);
        Assert.Equal(s_text.Value.Length, report.Characters);
        Assert.IsType<BpeTokenizer>(tokenizer.Tokenizer);
        string sample = s_text.Value[..20_000];
        int[] ids = tokenizer.Encode(sample);
        Assert.Equal(sample, tokenizer.Decode(ids));
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(sample), ids.Sum(tokenizer.GetByteCount));
        // 254 merges on English text give about 2 bytes per token (1 without merges).
        Assert.InRange(System.Text.Encoding.UTF8.GetByteCount(sample) / (double)ids.Length, 1.8, 4.0);
        // " the" is learned, as one token.
        Assert.Single(tokenizer.Encode(" the"));
    }

    [Fact]
    public void TrainingIsDeterministicAndIndependentOfThreads()
    {
        var one = LmTokenizer.TrainBpe([s_text.Value], new LmTokenizerOptions { VocabularySize = 400, MaxDegreeOfParallelism = 1 });
        var two = LmTokenizer.TrainBpe([s_text.Value], new LmTokenizerOptions { VocabularySize = 400, MaxDegreeOfParallelism = 2 });
        Assert.Equal(one.Encode(s_text.Value[..5000]), two.Encode(s_text.Value[..5000]));
        var dir = Directory.CreateTempSubdirectory("llm-tok-");
        try
        {
            one.SaveBpeFiles(Path.Combine(dir.FullName, "a.json"), Path.Combine(dir.FullName, "a.txt"));
            two.SaveBpeFiles(Path.Combine(dir.FullName, "b.json"), Path.Combine(dir.FullName, "b.txt"));
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir.FullName, "a.txt")), File.ReadAllBytes(Path.Combine(dir.FullName, "b.txt")));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void MinPairFrequencyAndMaxTokenLengthBoundTheMerges()
    {
        var few = LmTokenizer.TrainBpe(["abab abab"], new LmTokenizerOptions { VocabularySize = 1000, MinPairFrequency = 2 }, out var report);
        // Words: "abab" ×1, " abab" ×1 → "ab" (3×) then "abab"... until pairs occur once.
        Assert.True(report.Merges < 10);
        Assert.True(few.VocabularySize < 1000);
        var shortTokens = LmTokenizer.TrainBpe([s_text.Value], new LmTokenizerOptions { VocabularySize = 600, MaxTokenLength = 3 });
        for (int id = 0; id < shortTokens.VocabularySize; id++)
            Assert.InRange(shortTokens.GetByteCount(id), 0, 3);
    }

    [Fact]
    public void VocabularyAndMergesFilesRoundTrip()
    {
        var tokenizer = s_bpe512.Value;
        var dir = Directory.CreateTempSubdirectory("llm-tok-");
        try
        {
            string vocab = Path.Combine(dir.FullName, "vocab.json"), merges = Path.Combine(dir.FullName, "merges.txt");
            tokenizer.SaveBpeFiles(vocab, merges);
            Assert.Equal("#version: 0.2", File.ReadLines(merges).First());
            Assert.Equal(255, File.ReadLines(merges).Count() - 1);
            var loaded = LmTokenizer.FromBpeFiles(vocab, merges);
            Assert.Equal(tokenizer.VocabularySize, loaded.VocabularySize);
            Assert.Equal(tokenizer.EndOfTextId, loaded.EndOfTextId);
            string sample = s_text.Value[^3000..] + " <|endoftext|> 🙂";
            Assert.Equal(tokenizer.Encode(sample), loaded.Encode(sample));
            // Hugging Face's reader in Microsoft.ML.Tokenizers accepts the files too (without byte-level decoding it still ids the same).
            using var bpe = File.OpenRead(vocab);
            using var m = File.OpenRead(merges);
            Assert.NotNull(BpeTokenizer.Create(bpe, m));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void MissingOrGarbledFilesAreReported()
    {
        var dir = Directory.CreateTempSubdirectory("llm-tok-");
        try
        {
            string vocab = Path.Combine(dir.FullName, "vocab.json"), merges = Path.Combine(dir.FullName, "merges.txt");
            var e1 = Assert.Throws<FileNotFoundException>(() => LmTokenizer.FromBpeFiles(vocab, merges));
            Assert.Equal($"The vocabulary file '{vocab}' does not exist.", e1.Message);
            s_bpe512.Value.SaveBpeFiles(vocab, merges);
            File.WriteAllText(vocab, "{\"a\": 0, ");
            var e2 = Assert.Throws<FormatException>(() => LmTokenizer.FromBpeFiles(vocab, merges));
            Assert.StartsWith($"The vocabulary file '{vocab}' is not a BPE vocabulary: expected a JSON object of token → id (", e2.Message);
            File.WriteAllText(vocab, "{\"a\": 0, \"b\": 5}");
            var e3 = Assert.Throws<FormatException>(() => LmTokenizer.FromBpeFiles(vocab, merges));
            Assert.Equal($"The vocabulary file '{vocab}' is not a BPE vocabulary: token ids must be 0 to 1, each once; got 5 for 'b'.", e3.Message);
            s_bpe512.Value.SaveBpeFiles(vocab, merges);
            File.WriteAllText(merges, "#version: 0.2\nĠ t\nthis is garbage\n");
            var e4 = Assert.Throws<FormatException>(() => LmTokenizer.FromBpeFiles(vocab, merges));
            Assert.Equal($"The merges file '{merges}' is not a BPE merges list: line 3 is 'this is garbage', expected two tokens separated by one space.", e4.Message);
            File.Delete(merges);
            var e5 = Assert.Throws<FileNotFoundException>(() => LmTokenizer.FromBpeFiles(vocab, merges));
            Assert.Equal($"The merges file '{merges}' does not exist.", e5.Message);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void VocabularyBelowBytesPlusSpecialsIsRejected()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => LmTokenizer.TrainBpe(["abc"], new LmTokenizerOptions { VocabularySize = 256 }));
        Assert.Equal("LmTokenizerOptions.VocabularySize must be at least 256 + 1 special tokens = 257 for a byte-level BPE; got 256. (Parameter 'VocabularySize')\nActual value was 256.",
            e.Message.Replace("\r\n", "\n"));
        var ml = new MLContext(seed: 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.TokenizeForLm("Tokens", "Text", vocabularySize: 100));
    }

    [Fact]
    public void EmptyCorpusIsRejectedInFit()
    {
        var ml = new MLContext(seed: 1);
        var data = TokenizeForLmTests.Texts(ml, "", "");
        var e = Assert.Throws<InvalidOperationException>(() => ml.Transforms.Text.TokenizeForLm("Tokens", "Text").Fit(data));
        Assert.Equal("The input column 'Text' holds no text (an empty corpus); BPE training needs at least one character.", e.Message);
    }

    [Fact]
    public void FitTrainsBpeByDefaultAndTheZipCarriesVocabularyAndMerges()
    {
        var ml = new MLContext(seed: 1);
        var data = TokenizeForLmTests.Texts(ml, s_text.Value[..50_000], s_text.Value[50_000..100_000]);
        var estimator = ml.Transforms.Text.TokenizeForLm("Tokens", "Text", vocabularySize: 300, preTokenization: PreTokenizationPattern.O200k);
        var model = estimator.Fit(data);
        Assert.Equal(LmTokenizerKind.Bpe, model.Tokenizer.Kind);
        Assert.Equal(PreTokenizationPattern.O200k, model.Tokenizer.PreTokenization);
        Assert.NotNull(estimator.LastTrainingReport);
        string path = TestData.TempPath(".zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            var tokens = TokenizeForLmTests.ReadTokens(loaded.Transform(data), "Tokens");
            Assert.Equal(TokenizeForLmTests.ReadTokens(model.Transform(data), "Tokens"), tokens);
            Assert.True(loaded.Transform(data).Schema["Tokens"].TryGetTokenizer(out var tokenizer));
            Assert.Equal(s_text.Value[..50_000], tokenizer.Decode(tokens[0]));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(PreTokenizationPattern.Gpt2)]
    [InlineData(PreTokenizationPattern.Cl100k)]
    [InlineData(PreTokenizationPattern.O200k)]
    public void PreTokenizationPatternsSplitLikeTiktoken(PreTokenizationPattern pattern)
    {
        var tokenizer = LmTokenizer.TrainBpe([s_text.Value[..20_000]], new LmTokenizerOptions { VocabularySize = 300, PreTokenization = pattern });
        string text = "I'll say 12345 things\n\n  to you!";
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        var words = tokenizer.Tokenizer.PreTokenizer!.PreTokenize(text).Select(r => text[r.Offset..(r.Offset + r.Length)]).ToArray();
        string[] expected = pattern switch
        {
            PreTokenizationPattern.Gpt2 => ["I", "'ll", " say", " 12345", " things", "\n\n ", " to", " you", "!"],
            PreTokenizationPattern.Cl100k => ["I", "'ll", " say", " ", "123", "45", " things", "\n\n", " ", " to", " you", "!"],
            _ => ["I'll", " say", " ", "123", "45", " things", "\n\n", " ", " to", " you", "!"],   // o200k attaches contractions
        };
        Assert.Equal(expected, words);
    }
}
