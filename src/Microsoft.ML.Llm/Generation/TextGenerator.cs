using System.Text;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Generates text from a trained <see cref="CausalLmTransformer"/>: prompt → completion, or a stream of text pieces.
/// Create one with <c>mlContext.Llm().CreateGenerator(model)</c>. Each call runs in its own dispose scope, so native
/// memory does not grow across calls. Not thread-safe: use one generator per thread.
/// </summary>
public sealed partial class TextGenerator
{
    private readonly GptModel _model;
    private readonly LmTokenizer _tokenizer;

    internal TextGenerator(GptModel model, LmTokenizer tokenizer)
    {
        _model = model;
        _tokenizer = tokenizer;
    }

    /// <summary>The tokenizer used to encode prompts and decode completions.</summary>
    public LmTokenizer Tokenizer => _tokenizer;

    /// <summary>Generates a completion of <paramref name="prompt"/> (the prompt itself is not included).</summary>
    public string Generate(string prompt, GenerationOptions? options = null)
    {
        var text = new StringBuilder();
        foreach (var piece in GenerateStreaming(prompt, options))
            text.Append(piece);
        return text.ToString();
    }

    /// <summary>Generates a completion, yielding text as soon as each new token decodes to complete characters.</summary>
    public IEnumerable<string> GenerateStreaming(string prompt, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        options.Validate();
        var context = PromptTokens(prompt);
        var generated = new List<int>();
        int emitted = 0;
        string decoded = "";
        foreach (int token in GenerateTokensCore(context, options))
        {
            generated.Add(token);
            decoded = _tokenizer.Decode(generated.ToArray());
            // Hold back a trailing replacement character: a byte-level token may end mid-way through a UTF-8 sequence.
            int safe = decoded.Length;
            while (safe > emitted && decoded[safe - 1] == '\uFFFD')
                safe--;
            int stop = FindStop(decoded, options.StopStrings, emitted);
            if (stop >= 0)
            {
                if (stop > emitted)
                    yield return decoded[emitted..stop];
                yield break;
            }
            if (safe > emitted)
            {
                yield return decoded[emitted..safe];
                emitted = safe;
            }
        }
        if (decoded.Length > emitted)
            yield return decoded[emitted..];
    }

    /// <summary>Generates token ids after <paramref name="promptTokens"/> (the prompt is not included).</summary>
    public int[] GenerateTokens(ReadOnlySpan<int> promptTokens, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        options.Validate();
        if (promptTokens.IsEmpty)
            throw new ArgumentException("The prompt has no tokens; give at least one token.", nameof(promptTokens));
        return GenerateTokensCore(promptTokens.ToArray(), options).ToArray();
    }

    private IEnumerable<int> GenerateTokensCore(int[] prompt, GenerationOptions options)
    {
        var config = _model.Config;
        config.CheckTokenIds(prompt, nameof(prompt), "Prompt token id");
        var history = new List<int>(prompt);
        using var generator = new torch.Generator((ulong)(options.Seed ?? Random.Shared.Next()));
        using var cache = new KvCache(_model);   // keys/values of the tokens already seen: one position's work per token
        int cachedFrom = 0;                      // history index of the cache's first position
        _model.eval();
        for (int i = 0; i < options.MaxNewTokens; i++)
        {
            int next;
            using (var scope = NewDisposeScope())
            using (Autocast.Enable(_model.Precision))   // the model's precision; logits come back in fp32
            {
                int uncached = history.Count - cachedFrom - (int)cache.Length;
                if (cache.Length + uncached > config.ContextLength)
                {
                    // Past the context, crop as nanoGPT's generate does: the oldest tokens fall out of view, and the
                    // window is run again from position 0 (the model never saw positions ≥ ContextLength).
                    cache.Reset();
                    cachedFrom = Math.Max(0, history.Count - config.ContextLength);
                    uncached = history.Count - cachedFrom;
                }
                var feed = new long[uncached];
                for (int j = 0; j < uncached; j++)
                    feed[j] = history[history.Count - uncached + j];
                var idx = ModelInputs.Int64(feed, 1, uncached, _model.Device);
                var logits = _model.forward(idx, cache)[0, -1, ..config.ResolvedVocabularySize];      // (V)
                next = TokenSampling.NextToken(logits, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(history), options, generator);
            }
            if (options.EosTokenIds.Contains(next))
                yield break;
            history.Add(next);
            yield return next;
        }
    }

    private int[] PromptTokens(string prompt)
    {
        var ids = _tokenizer.Encode(prompt);
        if (ids.Length > 0)
            return ids;
        if (_tokenizer.EndOfTextId is { } eos)
            return [eos];
        throw new ArgumentException("The prompt is empty and the tokenizer has no end-of-text token to start from; give a non-empty prompt.", nameof(prompt));
    }

    private static int FindStop(string text, IList<string> stops, int from)
    {
        int best = -1;
        foreach (var s in stops)
        {
            if (string.IsNullOrEmpty(s))
                continue;
            int at = text.IndexOf(s, Math.Max(0, from - s.Length + 1), StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
                best = at;
        }
        return best;
    }
}
