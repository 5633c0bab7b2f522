using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML;

/// <summary><c>TokenizeChat</c> with the tokenizer of the model being fine-tuned.</summary>
public static class LlmChatCatalog
{
    /// <summary>
    /// Instruction tuning (SFT) for fine-tuning <paramref name="model"/>: <c>TokenizeChat</c> with that model's tokenizer
    /// (the same value as <see cref="CausalLmTrainerOptions.InitialModel"/>: a loaded model, a model zip or a Hugging
    /// Face folder). <see cref="ChatTokenizerOptions.Tokenizer"/> must be left null.
    /// </summary>
    /// <param name="catalog">The text transforms catalog.</param>
    /// <param name="outputColumnName">Name of the token column to add.</param>
    /// <param name="options">Input columns, template and the rest (see <see cref="ChatTokenizerOptions"/>).</param>
    /// <param name="model">The model to be fine-tuned.</param>
    /// <exception cref="ArgumentException">The options name a tokenizer too, or the model has none.</exception>
    public static ChatTokenizerEstimator TokenizeChat(this TransformsCatalog.TextTransforms catalog, string outputColumnName, ChatTokenizerOptions options,
        InitialModel model)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(model);
        if (options.Tokenizer is not null || options.TokenizerColumnName is not null)
            throw new ArgumentException("ChatTokenizerOptions.Tokenizer/TokenizerColumnName are set, and a model to take the tokenizer from is given too; set one.", nameof(options));
        var (gpt, tokenizer, owned) = model.Load();
        if (owned)
            gpt.Dispose();
        var withTokenizer = new ChatTokenizerOptions
        {
            InstructionColumnName = options.InstructionColumnName,
            InputColumnName = options.InputColumnName,
            ResponseColumnName = options.ResponseColumnName,
            RolesColumnName = options.RolesColumnName,
            ContentsColumnName = options.ContentsColumnName,
            MessagesColumnName = options.MessagesColumnName,
            Template = options.Template,
            EndOfTextId = options.EndOfTextId,
            LossMaskColumnName = options.LossMaskColumnName,
            Tokenizer = tokenizer ?? throw new ArgumentException($"The model {model} has no tokenizer to tokenize conversations with; set ChatTokenizerOptions.Tokenizer.", nameof(model)),
        };
        return catalog.TokenizeChat(outputColumnName, withTokenizer);
    }
}
