// The token-level view of TextGenerator that LlmChatClient and GenerationBatcher need for exact usage counts (tokens in,
// tokens out). Kept in its own file so that Generation/TextGenerator.cs stays the generator's.
namespace Microsoft.ML.Llm;

public sealed partial class TextGenerator
{
    /// <summary>The token ids the generator starts from for <paramref name="prompt"/> (as <see cref="Generate(string, GenerationOptions?)"/>
    /// prepares and encodes it, long prompts handled by <see cref="GenerationOptions"/>' overflow option).</summary>
    internal int[] EncodePrompt(string prompt, GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        return PromptTokens(prompt, options);
    }

}
