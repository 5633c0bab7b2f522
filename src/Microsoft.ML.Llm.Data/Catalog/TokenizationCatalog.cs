using Microsoft.ML.Llm.Data;

namespace Microsoft.ML;

/// <summary>Text transforms for language-model data (<c>mlContext.Transforms.Text.*</c>).</summary>
public static partial class LlmTextCatalog
{
    /// <summary>
    /// Tokenizes a text column into a variable-length Int32 token column for language modelling. The output column
    /// carries the <see cref="LmTokenizer"/> as an annotation (see <see cref="LmAnnotations.TryGetTokenizer"/>), and the
    /// tokenizer's definition is saved with the model.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the token column to add.</param>
    /// <param name="inputColumnName">Name of the text column; null means <paramref name="outputColumnName"/>.</param>
    /// <param name="kind">Which tokenizer Fit builds when <paramref name="tokenizer"/> is null.</param>
    /// <param name="tokenizer">A ready tokenizer to use instead of building one.</param>
    /// <param name="tiktokenEncoding">The encoding for <see cref="LmTokenizerKind.Tiktoken"/>: "o200k_base" or "cl100k_base".</param>
    /// <param name="endOfTextToken">The end-of-text special token of tokenizers built in Fit (null for none).</param>
    /// <param name="vocabularySize">BPE: the target vocabulary size (256 bytes + merges + special tokens).</param>
    /// <param name="preTokenization">BPE: the pre-tokenization regex (GPT-2, cl100k, o200k).</param>
    public static LmTokenizerEstimator TokenizeForLm(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName = null,
        LmTokenizerKind kind = LmTokenizerOptions.Defaults.Kind, LmTokenizer? tokenizer = null,
        string tiktokenEncoding = LmTokenizerOptions.Defaults.TiktokenEncoding, string? endOfTextToken = LmTokenizerOptions.Defaults.EndOfTextToken,
        int vocabularySize = LmTokenizerOptions.Defaults.VocabularySize, PreTokenizationPattern preTokenization = LmTokenizerOptions.Defaults.PreTokenization)
        => TokenizeForLm(catalog, outputColumnName, inputColumnName, new LmTokenizerOptions
        {
            Kind = kind,
            Tokenizer = tokenizer,
            TiktokenEncoding = tiktokenEncoding,
            EndOfTextToken = endOfTextToken,
            VocabularySize = vocabularySize,
            PreTokenization = preTokenization,
        });

    /// <summary>Tokenizes a text column for language modelling, with all options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the token column to add.</param>
    /// <param name="inputColumnName">Name of the text column; null means <paramref name="outputColumnName"/>.</param>
    /// <param name="options">Tokenizer choice and building options.</param>
    public static LmTokenizerEstimator TokenizeForLm(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName,
        LmTokenizerOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new LmTokenizerEstimator(outputColumnName, inputColumnName, options);
    }

    /// <summary>
    /// Packs token documents into fixed blocks of <paramref name="contextLength"/> + 1 tokens for causal LM training.
    /// The row count changes; every cursor yields the same blocks in the same order.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the packed column (Int32 vector of length <paramref name="contextLength"/> + 1).</param>
    /// <param name="inputColumnName">Name of the token column; null means <paramref name="outputColumnName"/>.</param>
    /// <param name="contextLength">The model's context length T (at least 2).</param>
    /// <param name="mode">How documents become blocks.</param>
    /// <param name="padLastBlock">Concatenate mode: pad the last partial block instead of dropping it.</param>
    /// <param name="endOfTextId">The separator id; null takes the tokenizer's end-of-text id from the input column.</param>
    public static TokenPackerEstimator PackTokens(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName,
        int contextLength, PackingMode mode = TokenPackerOptions.Defaults.Mode, bool padLastBlock = TokenPackerOptions.Defaults.PadLastBlock, int? endOfTextId = null)
        => PackTokens(catalog, outputColumnName, inputColumnName, new TokenPackerOptions
        {
            ContextLength = contextLength,
            Mode = mode,
            PadLastBlock = padLastBlock,
            EndOfTextId = endOfTextId,
        });

    /// <summary>Packs token documents into fixed blocks, with all options.</summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the packed column.</param>
    /// <param name="inputColumnName">Name of the token column; null means <paramref name="outputColumnName"/>.</param>
    /// <param name="options">Context length, mode and the rest.</param>
    public static TokenPackerEstimator PackTokens(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName,
        TokenPackerOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new TokenPackerEstimator(outputColumnName, inputColumnName, options);
    }
}
