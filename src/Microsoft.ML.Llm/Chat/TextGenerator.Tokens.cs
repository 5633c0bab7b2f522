// The token-level view of TextGenerator that LlmChatClient needs for exact usage counts (tokens in, tokens out) and
// for cancellation between tokens. Kept in its own file so that Generation/TextGenerator.cs stays the generator's.
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

    /// <summary>
    /// The ids generated after <paramref name="prompt"/>, one at a time, lazily: an end-of-sequence id ends the stream and
    /// is not yielded. Disposing the enumerator stops generation and frees its cache.
    /// </summary>
    internal IEnumerable<int> StreamTokens(int[] prompt, GenerationOptions options, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (prompt.Length == 0)
            throw new ArgumentException("The prompt has no tokens; give at least one token.", nameof(prompt));
        return StreamTokensCore(Decoding.PreparePrompt(_model, prompt, options, nameof(prompt)), options, cancellation);
    }

    private IEnumerable<int> StreamTokensCore(int[] prompt, GenerationOptions options, CancellationToken cancellation)
    {
        var sequence = new GeneratedSequence(prompt);
        using var generator = NewGenerator(options);
        foreach (var step in Decoding.Sample(_model, [sequence], options, generator, cancellation))
        {
            if (step[0] < 0)
                yield break;   // end of sequence
            yield return step[0];
        }
    }
}
