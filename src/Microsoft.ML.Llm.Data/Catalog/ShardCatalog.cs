using Microsoft.ML.Llm.Data;

namespace Microsoft.ML;

/// <summary>Token shards on <c>mlContext.Data</c>: corpora larger than memory, written once and read memory-mapped.</summary>
public static class LlmDataCatalog
{
    /// <summary>
    /// Writes a token column (PackTokens' blocks, or one document per row) to shard files in llm.c's token format
    /// (uint16 when the vocabulary fits, else uint32), with document boundaries, loss mask, a checksum per shard and the
    /// tokenizer beside them. Each shard is written under a temporary name, then renamed.
    /// </summary>
    /// <param name="catalog">The data catalog.</param>
    /// <param name="data">The data to write.</param>
    /// <param name="directory">The shard directory (created if needed).</param>
    /// <param name="options">Columns, shard size, vocabulary; defaults for PackTokens' "Tokens" column.</param>
    public static TokenShardReport SaveAsTokenShards(this DataOperationsCatalog catalog, IDataView data, string directory, TokenShardOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return TokenShardWriter.Write(data, directory, options);
    }

    /// <summary>
    /// Opens the token shards of <paramref name="directory"/> as an <see cref="IDataView"/> of fixed-length blocks
    /// (see <see cref="TokenShardDataView"/>); the trainer reads them without materialising them.
    /// </summary>
    /// <param name="catalog">The data catalog.</param>
    /// <param name="directory">The shard directory.</param>
    /// <param name="blockLength">For shards holding a token stream (llm.c's files, or documents): the block length to cut
    /// it into (the context length + 1). Leave null for shards written as blocks.</param>
    /// <param name="verifyChecksums">Hash every shard once to detect corruption (about a second per GB).</param>
    public static TokenShardDataView LoadTokenShards(this DataOperationsCatalog catalog, string directory, int? blockLength = null, bool verifyChecksums = true)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new TokenShardDataView(TokenShardSet.Open(directory, blockLength, verifyChecksums));
    }
}
