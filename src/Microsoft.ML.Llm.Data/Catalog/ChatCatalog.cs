using Microsoft.ML.Llm.Data;

namespace Microsoft.ML;

public static partial class LlmTextCatalog
{
    /// <summary>
    /// Instruction tuning (SFT): turns instruction records into the tokens of a conversation rendered with a chat template,
    /// plus a loss-mask column that is true only on the response tokens (and the end-of-text appended after each
    /// response, so the model learns to stop). The token column carries the tokenizer and names its loss mask in its
    /// annotations, so <c>PackTokens</c>, the trainer and <c>Evaluate</c> use the mask without being told.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the token column to add (variable-length Int32 vector).</param>
    /// <param name="instructionColumnName">The instruction (text) column.</param>
    /// <param name="responseColumnName">The response (text) column: what the model learns to write.</param>
    /// <param name="inputColumnName">The optional input (context) column; null for none.</param>
    /// <param name="tokenizer">The tokenizer (for fine-tuning: the model's <c>Tokenizer</c>).</param>
    /// <param name="template">The chat template; null means <see cref="ChatTemplate.Default"/>.</param>
    public static ChatTokenizerEstimator TokenizeChat(this TransformsCatalog.TextTransforms catalog, string outputColumnName,
        string instructionColumnName, string responseColumnName, string? inputColumnName = null, LmTokenizer? tokenizer = null, ChatTemplate? template = null)
        => TokenizeChat(catalog, outputColumnName, new ChatTokenizerOptions
        {
            InstructionColumnName = instructionColumnName,
            ResponseColumnName = responseColumnName,
            InputColumnName = inputColumnName,
            Tokenizer = tokenizer,
            Template = template,
        });

    /// <summary>
    /// Instruction tuning (SFT) from instruction records or chat messages (see <see cref="ChatTokenizerOptions"/> for the
    /// input representations), with all options.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the token column to add (variable-length Int32 vector).</param>
    /// <param name="options">Input columns, template, tokenizer, loss-mask column name.</param>
    public static ChatTokenizerEstimator TokenizeChat(this TransformsCatalog.TextTransforms catalog, string outputColumnName, ChatTokenizerOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ChatTokenizerEstimator(outputColumnName, options);
    }
}
