using Microsoft.ML.Llm;

namespace Microsoft.ML;

/// <summary><c>mlContext.Llm().CreateChatClient(model)</c>: a Microsoft.Extensions.AI chat client over a trained model.</summary>
public static class LlmChatClientCatalog
{
    /// <summary>
    /// An <see cref="LlmChatClient"/> (Microsoft.Extensions.AI <c>IChatClient</c>) over the language model in
    /// <paramref name="model"/> (a <see cref="CausalLmTransformer"/> or a chain ending in one, e.g. a loaded model zip).
    /// </summary>
    /// <param name="catalog">The language-model catalog.</param>
    /// <param name="model">The trained model.</param>
    /// <param name="template">The chat template the model was fine-tuned with; null for <see cref="ChatTemplate.Default"/>.</param>
    /// <param name="modelId">The model name reported in responses.</param>
    public static LlmChatClient CreateChatClient(this LlmCatalog catalog, ITransformer model, ChatTemplate? template = null,
        string modelId = LlmChatClientOptions.Defaults.ModelId) =>
        catalog.CreateChatClient(model, new LlmChatClientOptions { Template = template, ModelId = modelId });

    /// <summary>An <see cref="LlmChatClient"/> over the language model in <paramref name="model"/>, configured by <paramref name="options"/>.</summary>
    /// <param name="catalog">The language-model catalog.</param>
    /// <param name="model">The trained model.</param>
    /// <param name="options">Template, model id, default generation settings.</param>
    public static LlmChatClient CreateChatClient(this LlmCatalog catalog, ITransformer model, LlmChatClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new LlmChatClient(catalog.CreateGenerator(model), options);
    }
}
