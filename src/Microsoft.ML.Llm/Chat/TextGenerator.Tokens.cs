// The token-level view of TextGenerator that LlmChatClient needs for exact usage counts (tokens in, tokens out) and
// for cancellation between tokens. Kept in its own file so that Generation/TextGenerator.cs stays the generator's.
namespace Microsoft.ML.Llm;

public sealed partial class TextGenerator
{
    /// <summary>The model this generator runs: generators made from the same trained model share it.</summary>
    internal GptModel Model => _model;

    /// <summary>The token ids the generator starts from for <paramref name="prompt"/> (as <see cref="Generate"/> encodes it).</summary>
    /// <param name="prompt">The prompt text.</param>
    /// <param name="options">The settings it will be generated with (kept for prompt preparation that depends on them).</param>
    internal int[] EncodePrompt(string prompt, GenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        return PromptTokens(prompt);
    }

    /// <summary>
    /// The ids generated after <paramref name="prompt"/>, one at a time, lazily: an end-of-sequence id ends the stream and
    /// is not yielded. Disposing the enumerator stops generation and frees its cache.
    /// </summary>
    internal IEnumerable<int> StreamTokens(int[] prompt, GenerationOptions options, CancellationToken cancellation = default)
    {
        // The caller checks the token between tokens; the core loop of this version takes none.
        _ = cancellation;
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (prompt.Length == 0)
            throw new ArgumentException("The prompt has no tokens; give at least one token.", nameof(prompt));
        return GenerateTokensCore(prompt, options);
    }
}
