using System.Buffers.Binary;
using System.IO.Hashing;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// The shard file layout: llm.c's token file (a 256 × int32 header, then the tokens), so llm.c and nanoGPT-style
/// readers read our shards, and we read theirs. uint16 tokens when the vocabulary fits (llm.c's GPT-2 files: magic
/// 20240520, version 1), uint32 otherwise (llm.c's Llama 3 files: magic 20240801, version 7); header[2] is the token
/// count. Header ints 16 and up, unused by llm.c, hold this library's fields (all zero in a plain llm.c file):
/// </summary>
/// <remarks>
/// <code>
/// [16] 0x53484B54 ("TKHS")   [17] our format version (1)      [18] vocabulary size (0: unknown)
/// [19] block length (0: a token stream, cut into blocks when read)                  [20] segment marker count
/// [21] flags (bit 0: a loss-mask bitset follows)     [22,23] XxHash64 of everything after the header (lo, hi)
/// </code>
/// After the tokens: the segment markers (int64 each: the token offset in this shard where a document starts, or,
/// with bit 62 set, where padding starts), then the loss-mask bitset (one bit per token, little-endian bit order).
/// Nothing else: the file length is determined by the header, so truncation is detected before any token is read.
/// </remarks>
internal static class TokenShardFormat
{
    public const int HeaderInts = 256;
    public const int HeaderBytes = HeaderInts * sizeof(int);
    public const int MagicUInt16 = 20240520;
    public const int VersionUInt16 = 1;
    public const int MagicUInt32 = 20240801;
    public const int VersionUInt32 = 7;
    public const int OurMagic = 0x53484B54;
    public const int OurVersion = 1;
    public const long PaddingFlag = 1L << 62;
    public const string FilePattern = "shard-*.bin";
    public const string TokenizerFile = "tokenizer.bin";

    /// <summary>What a shard's header says.</summary>
    public sealed record Header(string Path, int TokenBytes, long TokenCount, int VocabularySize, int BlockLength, int SegmentCount,
        bool HasLossMask, ulong Checksum, bool HasOurFields)
    {
        public long TokensOffset => HeaderBytes;

        public long SegmentsOffset => HeaderBytes + TokenCount * TokenBytes;

        public long MaskOffset => SegmentsOffset + SegmentCount * 8L;

        public long MaskBytes => HasLossMask ? (TokenCount + 7) / 8 : 0;

        public long FileLength => MaskOffset + MaskBytes;
    }

    public static string ShardName(int index) => $"shard-{index:D5}.bin";

    public static byte[] WriteHeader(int tokenBytes, long tokenCount, int vocabularySize, int blockLength, int segmentCount, bool hasLossMask, ulong checksum)
    {
        var header = new byte[HeaderBytes];
        void Put(int index, int value) => BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(index * 4), value);
        Put(0, tokenBytes == 2 ? MagicUInt16 : MagicUInt32);
        Put(1, tokenBytes == 2 ? VersionUInt16 : VersionUInt32);
        Put(2, checked((int)tokenCount));
        Put(16, OurMagic);
        Put(17, OurVersion);
        Put(18, vocabularySize);
        Put(19, blockLength);
        Put(20, segmentCount);
        Put(21, hasLossMask ? 1 : 0);
        Put(22, unchecked((int)(uint)checksum));
        Put(23, unchecked((int)(uint)(checksum >> 32)));
        return header;
    }

    /// <summary>Reads and checks the header of <paramref name="path"/>: magic, version, counts, and the file length they
    /// imply (a truncated or padded shard is reported by name).</summary>
    public static Header ReadHeader(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var bytes = new byte[HeaderBytes];
        int read = stream.ReadAtLeast(bytes, HeaderBytes, throwOnEndOfStream: false);
        if (read < HeaderBytes)
            throw new InvalidDataException($"Token shard '{path}' has {read} bytes, less than its {HeaderBytes}-byte header: it is truncated or not a token shard.");
        int Get(int index) => BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(index * 4));
        int magic = Get(0), version = Get(1);
        int tokenBytes = (magic, version) switch
        {
            (MagicUInt16, VersionUInt16) => 2,
            (MagicUInt32, VersionUInt32) => 4,
            _ => throw new InvalidDataException(
                $"Token shard '{path}' starts with magic {magic} version {version}; expected {MagicUInt16} version {VersionUInt16} (uint16 tokens) or {MagicUInt32} version {VersionUInt32} (uint32 tokens), llm.c's token file headers."),
        };
        long tokens = (uint)Get(2);
        bool ours = Get(16) == OurMagic;
        if (ours && Get(17) != OurVersion)
            throw new InvalidDataException($"Token shard '{path}' has format version {Get(17)}; this build reads version {OurVersion}.");
        int vocabulary = ours ? Get(18) : 0;
        int blockLength = ours ? Get(19) : 0;
        int segments = ours ? Get(20) : 0;
        bool mask = ours && (Get(21) & 1) != 0;
        ulong checksum = ours ? (uint)Get(22) | ((ulong)(uint)Get(23) << 32) : 0;
        if (vocabulary < 0 || blockLength < 0 || segments < 0 || (blockLength > 0 && tokens % blockLength != 0))
            throw new InvalidDataException($"Token shard '{path}' has an inconsistent header (vocabulary {vocabulary}, block length {blockLength}, tokens {tokens}, segments {segments}).");
        var header = new Header(path, tokenBytes, tokens, vocabulary, blockLength, segments, mask, checksum, ours);
        if (stream.Length != header.FileLength)
        {
            throw new InvalidDataException(
                $"Token shard '{path}' is {stream.Length} bytes but its header describes {header.FileLength} ({tokens} tokens of {tokenBytes} bytes" +
                (ours ? $", {segments} segment markers{(mask ? ", a loss mask" : "")}" : "") + "): it is truncated or corrupt.");
        }
        return header;
    }

    /// <summary>Checks the XxHash64 of a shard's body against its header (a flipped bit anywhere is reported by name).</summary>
    public static void VerifyChecksum(Header header)
    {
        if (!header.HasOurFields)
            return;
        using var stream = new FileStream(header.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        stream.Position = HeaderBytes;
        var hash = new XxHash64();
        hash.Append(stream);
        ulong actual = hash.GetCurrentHashAsUInt64();
        if (actual != header.Checksum)
            throw new InvalidDataException($"Token shard '{header.Path}' fails its checksum (stored {header.Checksum:X16}, computed {actual:X16}): it is corrupt.");
    }
}
