using System.Buffers.Binary;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using static Microsoft.ML.Llm.Data.Tests.Tokenization.TokenizeForLmTests;

namespace Microsoft.ML.Llm.Data.Tests.Shards;

public class TokenShardTests
{
    private static IDataView Documents(MLContext ml, params int[][] documents)
        => ml.Data.LoadFromEnumerable(documents.Select(d => new TokensRow { Tokens = d }));

    private static List<T[]> Read<T>(IDataView data, string column)
    {
        var result = new List<T[]>();
        var col = data.Schema[column];
        using var cursor = data.GetRowCursor([col]);
        var getter = cursor.GetGetter<VBuffer<T>>(col);
        VBuffer<T> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    private static string NewDirectory() => Path.Combine(Path.GetTempPath(), "llm-shards-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public void PackedBlocksRoundTripThroughSeveralShardsWithDocumentsMaskAndTokenizer()
    {
        var ml = new MLContext(seed: 1);
        var text = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 60).Select(i => new TextRow { Text = $"document {i}: " + string.Concat(Enumerable.Repeat("to be or not to be, ", i % 9 + 1)) }));
        var packed = ml.Transforms.Text.TokenizeForLm("Ids", "Text", LmTokenizerKind.Bytes)
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", new TokenPackerOptions { ContextLength = 63, Mode = PackingMode.BestFit }))
            .Fit(text).Transform(text);
        string dir = NewDirectory();
        try
        {
            var report = ml.Data.SaveAsTokenShards(packed, dir, new TokenShardOptions
            {
                DocumentIdsColumnName = "DocumentIds",
                LossMaskColumnName = "LossMask",
                TokensPerShard = 2048,   // 32 blocks of 64 per shard
            });
            var expectedTokens = Read<int>(packed, "Tokens");
            Assert.Equal(expectedTokens.Count, report.Rows);
            Assert.Equal((expectedTokens.Count + 31) / 32, report.Shards);
            Assert.True(report.Shards >= 3, $"{report.Shards} shards");
            Assert.Equal(2, report.TokenBytes);   // the byte tokenizer's vocabulary fits uint16
            Assert.Equal(64, report.BlockLength);
            Assert.Empty(Directory.GetFiles(dir, "*.tmp"));

            var loaded = ml.Data.LoadTokenShards(dir);
            Assert.Equal(expectedTokens.Count, loaded.GetRowCount());
            Assert.Equal(expectedTokens, Read<int>(loaded, "Tokens"));
            Assert.Equal(Read<int>(packed, "DocumentIds"), Read<int>(loaded, "DocumentIds"));
            Assert.Equal(Read<bool>(packed, "LossMask"), Read<bool>(loaded, "LossMask"));
            Assert.True(loaded.Schema["Tokens"].TryGetTokenizer(out var tokenizer));
            Assert.Equal("to be", tokenizer.Decode(tokenizer.Encode("to be")));
            // Like PackTokens' blocks, the loaded blocks name their loss-mask and document-id columns for the trainer.
            Assert.True(loaded.Schema["Tokens"].TryGetLossMaskColumn(out var mask) && mask == "LossMask");
            Assert.True(loaded.Schema["Tokens"].TryGetDocumentIdsColumn(out var ids) && ids == "DocumentIds");
            Assert.Equal(packed.Schema["Tokens"].Type, loaded.Schema["Tokens"].Type);
            loaded.Shards.Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void RandomReadsStayCorrectAcrossReleasesOfTheMappedPages()
    {
        // More random block reads than TokenShardSet.ReleaseInterval (64), so the mapped pages are dropped from the
        // process (MADV_DONTNEED) several times while reading; every block must still read back exactly.
        var ml = new MLContext(seed: 1);
        var blocks = Enumerable.Range(0, 3000).Select(b => Enumerable.Range(0, 8).Select(t => (b * 8 + t) % 60_000).ToArray()).ToArray();
        string dir = NewDirectory();
        try
        {
            ml.Data.SaveAsTokenShards(ml.Data.LoadFromEnumerable(blocks.Select(b => new TokensRow { Tokens = b }), SchemaFor(8)), dir, new TokenShardOptions { VocabularySize = 60_000, TokensPerShard = 4096 });
            using var shards = ml.Data.LoadTokenShards(dir).Shards;
            Assert.Equal(3000, shards.BlockCount);
            var random = new Random(5);
            var block = new int[8];
            for (int i = 0; i < 5000; i++)
            {
                int b = random.Next(3000);
                shards.ReadBlock(b, block);
                Assert.Equal(blocks[b], block);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static SchemaDefinition SchemaFor(int length)
    {
        var schema = SchemaDefinition.Create(typeof(TokensRow));
        schema[nameof(TokensRow.Tokens)].ColumnType = new VectorDataViewType(NumberDataViewType.Int32, length);
        return schema;
    }

    [Fact]
    public void DocumentsBecomeAStreamCutIntoBlocksWhenRead()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3], [4, 5], [6, 7, 8, 9], [10]);
        string dir = NewDirectory();
        try
        {
            var report = ml.Data.SaveAsTokenShards(data, dir, new TokenShardOptions { VocabularySize = 70_000 });
            Assert.Equal(4, report.TokenBytes);   // a vocabulary beyond uint16
            Assert.Equal(0, report.BlockLength);
            var error = Assert.Throws<ArgumentException>(() => ml.Data.LoadTokenShards(dir));
            Assert.StartsWith($"The shards in '{dir}' hold a token stream, not blocks; give the block length", error.Message);
            using var loaded = ml.Data.LoadTokenShards(dir, blockLength: 4).Shards;
            var view = ml.Data.LoadTokenShards(dir, blockLength: 4);
            Assert.Equal([[1, 2, 3, 4], [5, 6, 7, 8]], Read<int>(view, "Tokens"));   // 10 tokens → 2 whole blocks
            // Each row was a document: ids restart per block and count the documents that start inside it.
            Assert.Equal([[0, 0, 0, 1], [0, 1, 1, 1]], Read<int>(view, "DocumentIds"));
            view.Shards.Dispose();
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void LlmCFilesAreReadAndOurShardsCarryLlmCsHeader()
    {
        var ml = new MLContext(seed: 1);
        string dir = NewDirectory();
        try
        {
            Directory.CreateDirectory(dir);
            // llm.c's GPT-2 token file: 256 int32 header (magic 20240520, version 1, token count), then uint16 tokens.
            var tokens = Enumerable.Range(0, 30).Select(i => (ushort)(i * 1000)).ToArray();
            var bytes = new byte[1024 + tokens.Length * 2];
            BinaryPrimitives.WriteInt32LittleEndian(bytes, 20240520);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4), 1);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), tokens.Length);
            for (int i = 0; i < tokens.Length; i++)
                BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(1024 + i * 2), tokens[i]);
            File.WriteAllBytes(Path.Combine(dir, "fineweb_train_000001.bin"), bytes);
            var view = ml.Data.LoadTokenShards(dir, blockLength: 10);
            Assert.Equal(3, view.GetRowCount());
            Assert.Equal(Enumerable.Range(10, 10).Select(i => i * 1000).ToArray(), Read<int>(view, "Tokens")[1]);
            Assert.False(view.Shards.HasDocumentIds);
            view.Shards.Dispose();

            string ours = Path.Combine(dir, "ours");
            ml.Data.SaveAsTokenShards(Documents(ml, [7, 8, 9]), ours, new TokenShardOptions { VocabularySize = 50257 });
            var header = File.ReadAllBytes(Path.Combine(ours, "shard-00000.bin"));
            Assert.Equal(20240520, BinaryPrimitives.ReadInt32LittleEndian(header));
            Assert.Equal(1, BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4)));
            Assert.Equal(3, BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8)));
            Assert.Equal(9, BinaryPrimitives.ReadUInt16LittleEndian(header.AsSpan(1024 + 4)));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void TruncatedCorruptMixedAndInvalidShardsAreReportedByName()
    {
        var ml = new MLContext(seed: 1);
        var data = Documents(ml, [1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12]);
        string dir = NewDirectory();
        try
        {
            ml.Data.SaveAsTokenShards(data, dir, new TokenShardOptions { VocabularySize = 100 });
            string shard = Path.Combine(dir, "shard-00000.bin");
            var good = File.ReadAllBytes(shard);

            File.WriteAllBytes(shard, good[..^3]);
            var truncated = Assert.Throws<InvalidDataException>(() => ml.Data.LoadTokenShards(dir, 4));
            Assert.StartsWith($"Token shard '{shard}' is {good.Length - 3} bytes but its header describes {good.Length} (12 tokens of 2 bytes, 2 segment markers): it is truncated or corrupt.", truncated.Message);

            File.WriteAllBytes(shard, good[..100]);
            Assert.StartsWith($"Token shard '{shard}' has 100 bytes, less than its 1024-byte header", Assert.Throws<InvalidDataException>(() => ml.Data.LoadTokenShards(dir, 4)).Message);

            var flipped = (byte[])good.Clone();
            flipped[1024 + 5] ^= 0x40;
            File.WriteAllBytes(shard, flipped);
            Assert.StartsWith($"Token shard '{shard}' fails its checksum", Assert.Throws<InvalidDataException>(() => ml.Data.LoadTokenShards(dir, 4)).Message);
            Assert.Equal(3, ml.Data.LoadTokenShards(dir, 4, verifyChecksums: false).GetRowCount());

            var badMagic = (byte[])good.Clone();
            badMagic[0] = 1;
            File.WriteAllBytes(shard, badMagic);
            Assert.Contains("starts with magic", Assert.Throws<InvalidDataException>(() => ml.Data.LoadTokenShards(dir, 4)).Message);

            // A shard of another dataset (another vocabulary) in the same directory.
            File.WriteAllBytes(shard, good);
            string other = Path.Combine(dir, "other");
            ml.Data.SaveAsTokenShards(data, other, new TokenShardOptions { VocabularySize = 200 });
            File.Copy(Path.Combine(other, "shard-00000.bin"), Path.Combine(dir, "shard-00001.bin"));
            var mixed = Assert.Throws<InvalidDataException>(() => ml.Data.LoadTokenShards(dir, 4));
            Assert.Contains("vocabulary 200", mixed.Message);
            Assert.EndsWith("the directory mixes shards of different datasets.", mixed.Message);

            var again = Assert.Throws<IOException>(() => ml.Data.SaveAsTokenShards(data, dir, new TokenShardOptions { VocabularySize = 100 }));
            Assert.StartsWith($"Directory '{dir}' already holds 2 token shard(s)", again.Message);
            var outOfVocabulary = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Data.SaveAsTokenShards(data, other, new TokenShardOptions { VocabularySize = 10, Overwrite = true }));
            Assert.StartsWith("Row 1 has token id 10 in column 'Tokens'; ids must be in [0, 10).", outOfVocabulary.Message);
            Assert.Empty(Directory.GetFiles(other, "*.tmp"));
            var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Data.SaveAsTokenShards(data, other, new TokenShardOptions { TokensColumnName = "Blocks" }));
            Assert.StartsWith("Could not find input column 'Blocks'", missing.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
