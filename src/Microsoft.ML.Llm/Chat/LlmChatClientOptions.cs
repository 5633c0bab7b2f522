namespace Microsoft.ML.Llm;

/// <summary>
/// How an <see cref="LlmChatClient"/> turns a conversation into a prompt and generates the reply: the chat template,
/// the model name it reports, and the generation settings that a request's <c>ChatOptions</c> override.
/// </summary>
public sealed class LlmChatClientOptions
{
    /// <summary>The default value of every option, written once.</summary>
    public static class Defaults
    {
        /// <summary>The model name reported when none is given.</summary>
        public const string ModelId = "microsoft-ml-llm";

        /// <summary>Whether the template's <see cref="ChatTemplate.StopStrings"/> end a reply.</summary>
        public const bool UseTemplateStopStrings = true;

        /// <summary>Whether the tokenizer's end-of-text token ends a reply.</summary>
        public const bool StopAtEndOfText = true;
    }

    /// <summary>
    /// The chat template that renders the conversation, followed by its <see cref="ChatTemplate.GenerationPrompt"/>.
    /// Null: <see cref="ChatTemplate.Default"/> (<c>System: …\nUser: …\nAssistant: </c>), plain text that needs no
    /// special tokens. Use the template the model was fine-tuned with (<see cref="ChatTemplate.ChatML"/>, a
    /// <see cref="HuggingFaceChatTemplate"/>, or your own role formats).
    /// </summary>
    public ChatTemplate? Template { get; set; }

    /// <summary>The model name reported in responses and in <c>ChatClientMetadata.DefaultModelId</c>.</summary>
    public string ModelId { get; set; } = Defaults.ModelId;

    /// <summary>
    /// The generation settings of every request; a request's <c>ChatOptions</c> (temperature, top-p, top-k, max output
    /// tokens, stop sequences, seed) override them one by one. Null: <see cref="GenerationOptions"/>'s defaults. The
    /// object is copied per request, never changed.
    /// </summary>
    public GenerationOptions? GenerationOptions { get; set; }

    /// <summary>
    /// Whether the template's <see cref="ChatTemplate.StopStrings"/> (e.g. <c>"\nUser:"</c>, <c>&lt;|im_end|&gt;</c>) end
    /// a reply, so that a model that has not learned to emit end-of-text does not write the next user turn.
    /// </summary>
    public bool UseTemplateStopStrings { get; set; } = Defaults.UseTemplateStopStrings;

    /// <summary>
    /// The batcher that decodes this client's requests together with concurrent ones (a server gives its chat and
    /// completion clients one batcher, sized to its load). Null: the batcher shared by every client over the same
    /// trained model, with <see cref="GenerationBatcherOptions"/>' defaults. It must serve the client's model.
    /// </summary>
    public GenerationBatcher? Batcher { get; set; }

    /// <summary>Whether the tokenizer's end-of-text token (appended after every assistant turn in fine-tuning) ends a reply.</summary>
    public bool StopAtEndOfText { get; set; } = Defaults.StopAtEndOfText;
}
