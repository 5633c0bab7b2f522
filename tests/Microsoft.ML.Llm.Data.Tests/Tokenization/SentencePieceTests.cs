using Google.Protobuf;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

public class SentencePieceTests
{
    private static readonly string[] s_words = ["▁", "e", "h", "l", "o", "w", "r", "d", "ll", "he", "▁he", "llo", "▁hello", "▁w", "or", "▁wor", "ld", "▁world"];

    /// <summary>
    /// Writes a small SentencePiece BPE model protobuf (sentencepiece_model.proto: ModelProto.pieces = 1,
    /// trainer_spec = 2, normalizer_spec = 3): &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;, 256 byte-fallback pieces, then words.
    /// </summary>
    internal static byte[] BuildModel()
    {
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream);
        void Piece(string piece, float score, int type)
        {
            using var inner = new MemoryStream();
            var p = new CodedOutputStream(inner);
            p.WriteTag(1, WireFormat.WireType.LengthDelimited);
            p.WriteString(piece);
            p.WriteTag(2, WireFormat.WireType.Fixed32);
            p.WriteFloat(score);
            p.WriteTag(3, WireFormat.WireType.Varint);
            p.WriteEnum(type);
            p.Flush();
            output.WriteTag(1, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(inner.ToArray()));
        }
        Piece("<unk>", 0, 2);
        Piece("<s>", 0, 3);
        Piece("</s>", 0, 3);
        for (int b = 0; b < 256; b++)
            Piece($"<0x{b:X2}>", 0, 6);
        for (int i = 0; i < s_words.Length; i++)
            Piece(s_words[i], -i, 1);
        using (var trainer = new MemoryStream())
        {
            var t = new CodedOutputStream(trainer);
            t.WriteTag(3, WireFormat.WireType.Varint);
            t.WriteEnum(2);              // model_type = BPE
            t.WriteTag(4, WireFormat.WireType.Varint);
            t.WriteInt32(259 + s_words.Length);
            t.WriteTag(35, WireFormat.WireType.Varint);
            t.WriteBool(true);          // byte_fallback
            t.WriteTag(40, WireFormat.WireType.Varint);
            t.WriteInt32(0);            // unk_id
            t.WriteTag(41, WireFormat.WireType.Varint);
            t.WriteInt32(1);            // bos_id
            t.WriteTag(42, WireFormat.WireType.Varint);
            t.WriteInt32(2);            // eos_id
            t.WriteTag(43, WireFormat.WireType.Varint);
            t.WriteInt32(-1);           // pad_id
            t.Flush();
            output.WriteTag(2, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(trainer.ToArray()));
        }
        using (var normalizer = new MemoryStream())
        {
            var n = new CodedOutputStream(normalizer);
            n.WriteTag(1, WireFormat.WireType.LengthDelimited);
            n.WriteString("identity");
            n.WriteTag(3, WireFormat.WireType.Varint);
            n.WriteBool(true);           // add_dummy_prefix
            n.WriteTag(4, WireFormat.WireType.Varint);
            n.WriteBool(false);          // remove_extra_whitespaces
            n.WriteTag(5, WireFormat.WireType.Varint);
            n.WriteBool(true);           // escape_whitespaces
            n.Flush();
            output.WriteTag(3, WireFormat.WireType.LengthDelimited);
            output.WriteBytes(ByteString.CopyFrom(normalizer.ToArray()));
        }
        output.Flush();
        return stream.ToArray();
    }

    [Fact]
    public void LoadsAModelFileEncodesDecodesAndPersists()
    {
        string path = TestData.TempPath(".model");
        File.WriteAllBytes(path, BuildModel());
        try
        {
            var tokenizer = LmTokenizer.FromSentencePiece(path);
            Assert.Equal(LmTokenizerKind.SentencePiece, tokenizer.Kind);
            Assert.Equal(259 + s_words.Length, tokenizer.VocabularySize);
            Assert.Equal(2, tokenizer.EndOfTextId);
            int hello = 259 + Array.IndexOf(s_words, "▁hello"), world = 259 + Array.IndexOf(s_words, "▁world");
            Assert.Equal([hello, world], tokenizer.Encode("hello world"));
            Assert.Equal("hello world", tokenizer.Decode([hello, world]));
            Assert.Equal(6, tokenizer.GetByteCount(hello));       // " hello"
            Assert.Equal(0, tokenizer.GetByteCount(2));
            // Characters outside the pieces fall back to bytes.
            int[] ids = tokenizer.Encode("hello ß");
            Assert.Equal("hello ß", tokenizer.Decode(ids));
            Assert.Contains(3 + 0xC3, ids);

            using var stream = new MemoryStream();
            using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
                tokenizer.Save(writer);
            stream.Position = 0;
            var loaded = LmTokenizer.Load(new BinaryReader(stream));
            Assert.Equal(tokenizer.Encode("hello world hello"), loaded.Encode("hello world hello"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void AFileThatIsNotAModelIsReported()
    {
        string path = TestData.TempPath(".model");
        File.WriteAllText(path, "this is not a protobuf, just some text\n");
        try
        {
            var e = Assert.Throws<FormatException>(() => LmTokenizer.FromSentencePiece(path));
            Assert.StartsWith($"The file '{path}' is not a SentencePiece model", e.Message);
            var missing = Assert.Throws<FileNotFoundException>(() => LmTokenizer.FromSentencePiece(path + ".missing"));
            Assert.Equal($"The SentencePiece model file '{path}.missing' does not exist.", missing.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
