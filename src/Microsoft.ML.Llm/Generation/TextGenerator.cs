using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Data.Internal;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Generates text from a trained <see cref="CausalLmTransformer"/>: prompt → completion, several prompts in one batch,
/// or a stream of text pieces (synchronous or asynchronous). Create one with <c>mlContext.Llm().CreateGenerator(model)</c>.
/// </summary>
/// <remarks>
/// <para>
/// Decoding follows Hugging Face's <c>generate</c> (see <see cref="GenerationOptions"/>): greedy, sampling, beam
/// search or beam sampling, with a KV cache: each new token costs one position's work. Several prompts run as one batch: left-padded,
/// with a key mask and per-row positions, so each prompt gets what it would get alone (greedy results are identical);
/// finished prompts leave the batch. Beam search moves cached keys and values with their beams instead of recomputing them.
/// </para>
/// <para>
/// Prompts first pass through the text transforms the model's pipeline applied to its training text before
/// tokenization (<c>NormalizeForLm</c>, <c>RedactPii</c>), when the generator was created from the whole pipeline.
/// Each forward pass runs in its own dispose scope, so native memory does not grow across calls. Not thread-safe:
/// use one generator per thread (they can share the model).
/// </para>
/// </remarks>
public sealed partial class TextGenerator
{
    private readonly GptModel _model;
    private readonly LmTokenizer _tokenizer;
    private readonly IReadOnlyList<AppendColumnsTransformerBase> _promptTransforms;

    internal TextGenerator(GptModel model, LmTokenizer tokenizer, IReadOnlyList<AppendColumnsTransformerBase>? promptTransforms = null)
    {
        _model = model;
        _tokenizer = tokenizer;
        _promptTransforms = promptTransforms ?? [];
    }

    /// <summary>The tokenizer used to encode prompts and decode completions.</summary>
    public LmTokenizer Tokenizer => _tokenizer;

    internal GptModel Model => _model;

    internal IReadOnlyList<AppendColumnsTransformerBase> PromptTransforms => _promptTransforms;

    /// <summary>
    /// The prompt as the model sees it: after the text transforms its pipeline applied to the training text before the
    /// tokenizer (<c>NormalizeForLm</c>, <c>RedactPii</c>); unchanged when there are none.
    /// </summary>
    public string PreparePrompt(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        foreach (var transform in _promptTransforms)
        {
            prompt = transform switch
            {
                TextNormalizerTransformer normalizer => LmTextNormalizer.Normalize(prompt, normalizer.Options),
                PiiRedactorTransformer redactor => PiiRedactor.Redact(prompt, redactor.Options),
                _ => throw new InvalidOperationException($"{transform.GetType().Name} is not a prompt transform."),
            };
        }

        return prompt;
    }

    /// <summary>Generates a completion of <paramref name="prompt"/> (the prompt itself is not included); with beam search or
    /// several return sequences, the best one.</summary>
    public string Generate(string prompt, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        options.Validate();
        if (options.NumBeams > 1 || options.NumReturnSequences > 1)
        {
            return GenerateCore([prompt], options, CancellationToken.None)[0];
        }

        var text = new StringBuilder();
        foreach (var piece in GenerateStreaming(prompt, options))
        {
            text.Append(piece);
        }

        return text.ToString();
    }

    /// <summary>
    /// Generates completions of several prompts in one batch (left padding, an attention mask, per-row positions, one KV
    /// cache; a finished prompt leaves the batch). Returns <see cref="GenerationOptions.NumReturnSequences"/> completions
    /// per prompt, in prompt order (those of prompt i at i·n … i·n + n − 1, as Hugging Face's <c>generate</c>). Greedy
    /// results are identical to generating each prompt alone; sampled ones draw from one generator, row after row.
    /// </summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options ??= new GenerationOptions();
        options.Validate();
        for (int i = 0; i < prompts.Count; i++)
        {
            if (prompts[i] is null)
            {
                throw new ArgumentException($"prompts[{i}] is null; expected a string (empty starts from the end-of-text token).", nameof(prompts));
            }
        }

        return prompts.Count == 0 ? [] : GenerateCore(prompts, options, CancellationToken.None);
    }

    /// <summary>Generates a completion, yielding text as soon as each new token decodes to complete characters.</summary>
    /// <exception cref="ArgumentException">Beam search or several return sequences: their text is known only at the end.</exception>
    public IEnumerable<string> GenerateStreaming(string prompt, GenerationOptions? options = null) =>
        Stream(prompt, options, CancellationToken.None);

    /// <summary>
    /// Generates a completion as an asynchronous stream of text pieces, each made of complete UTF-8 characters; the pieces
    /// concatenate to <see cref="Generate(string, GenerationOptions?)"/>'s result. Each token is computed on the thread
    /// pool; cancelling <paramref name="cancellationToken"/> stops generation within one token
    /// (<see cref="OperationCanceledException"/>).
    /// </summary>
    public async IAsyncEnumerable<string> GenerateStreamingAsync(string prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var pieces = Stream(prompt, options, cancellationToken).GetEnumerator();
        while (await Task.Run(pieces.MoveNext, cancellationToken).ConfigureAwait(false))
        {
            yield return pieces.Current;
        }
    }

    /// <summary>Generates token ids after <paramref name="promptTokens"/> (the prompt is not included); with beam search, the best sequence.</summary>
    public int[] GenerateTokens(ReadOnlySpan<int> promptTokens, GenerationOptions? options = null)
    {
        options ??= new GenerationOptions();
        options.Validate();
        if (promptTokens.IsEmpty)
        {
            throw new ArgumentException("The prompt has no tokens; give at least one token.", nameof(promptTokens));
        }

        var prompt = Decoding.PreparePrompt(_model, promptTokens.ToArray(), options, nameof(promptTokens));
        if (options.NumBeams > 1)
        {
            return Decoding.BeamSearch(_model, [prompt], options, CancellationToken.None)[0][0].Tokens;
        }

        var sequence = new GeneratedSequence(prompt);
        using var generator = NewGenerator(options);
        foreach (var _ in Decoding.Sample(_model, [sequence], options, generator, CancellationToken.None))
        {
        }

        return sequence.Generated.ToArray();
    }

    /// <summary>
    /// Generates token ids after each of several token prompts in one batch (see <see cref="Generate(IReadOnlyList{string}, GenerationOptions?)"/>):
    /// <see cref="GenerationOptions.NumReturnSequences"/> sequences per prompt, in prompt order, the prompts not included.
    /// </summary>
    public IReadOnlyList<int[]> GenerateTokens(IReadOnlyList<int[]> prompts, GenerationOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options ??= new GenerationOptions();
        options.Validate();
        var checkedPrompts = new int[prompts.Count][];
        for (int i = 0; i < prompts.Count; i++)
        {
            if (prompts[i] is not { Length: > 0 } prompt)
            {
                throw new ArgumentException($"prompts[{i}] has no tokens; give at least one token per prompt.", nameof(prompts));
            }

            checkedPrompts[i] = Decoding.PreparePrompt(_model, prompt, options, nameof(prompts));
        }

        if (checkedPrompts.Length == 0)
        {
            return [];
        }

        if (options.NumBeams > 1)
        {
            return Decoding.BeamSearch(_model, checkedPrompts, options, CancellationToken.None)
                .SelectMany(h => h.Take(options.NumReturnSequences).Select(x => x.Tokens)).ToArray();
        }

        var sequences = checkedPrompts.SelectMany(p => Enumerable.Range(0, options.NumReturnSequences).Select(_ => new GeneratedSequence(p))).ToArray();
        using var generator = NewGenerator(options);
        foreach (var _ in Decoding.Sample(_model, sequences, options, generator, CancellationToken.None))
        {
        }

        return sequences.Select(s => s.Generated.ToArray()).ToArray();
    }

    private IEnumerable<string> Stream(string prompt, GenerationOptions? options, CancellationToken cancellation)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options ??= new GenerationOptions();
        options.Validate();
        if (options.NumBeams > 1 || options.NumReturnSequences > 1)
        {
            throw new ArgumentException(
                $"Streaming yields one completion as it is generated; GenerationOptions.NumBeams is {options.NumBeams} and NumReturnSequences {options.NumReturnSequences} (both must be 1). Call Generate for beam search or several sequences.",
                nameof(options));
        }

        return StreamCore(PromptTokens(prompt, options), options, cancellation);
    }

    private IEnumerable<string> StreamCore(int[] prompt, GenerationOptions options, CancellationToken cancellation)
    {
        var sequence = new GeneratedSequence(prompt);
        var text = new CompletionText(_tokenizer, options.StopStrings);
        using var generator = NewGenerator(options);
        foreach (var step in Decoding.Sample(_model, [sequence], options, generator, cancellation))
        {
            if (step[0] < 0)
            {
                continue;
            }

            var piece = text.Add(step[0]);
            if (piece.Length > 0)
            {
                yield return piece;
            }

            if (text.Stopped)
            {
                sequence.Finished = true;
                yield break;
            }
        }

        var rest = text.Flush();
        if (rest.Length > 0)
        {
            yield return rest;
        }
    }

    /// <summary>
    /// The completions of one prompt (beam search or several return sequences: <see cref="GenerationBatcher"/>'s requests
    /// that run alone), stopping within one token when <paramref name="cancellation"/> is cancelled;
    /// <paramref name="stepped"/> is called after each decoding step. <paramref name="options"/> must be validated.
    /// </summary>
    internal string[] GenerateCancellably(string prompt, GenerationOptions options, CancellationToken cancellation, Action? stepped) =>
        GenerateCore([prompt], options, cancellation, stepped);

    /// <summary>Batched generation of every prompt's sequences; the text of each, in HF's order.</summary>
    private string[] GenerateCore(IReadOnlyList<string> prompts, GenerationOptions options, CancellationToken cancellation, Action? stepped = null)
    {
        var tokens = prompts.Select(p => PromptTokens(p, options)).ToArray();
        int n = options.NumReturnSequences;
        var results = new string[prompts.Count * n];
        if (options.NumBeams > 1)
        {
            // A beam whose text completes a stop string is finished, as an end-of-sequence id finishes it.
            Func<int[], bool>? hitsStop = options.StopStrings.Count == 0 ? null
                : generated => CompletionText.ContainsStop(_tokenizer.Decode(generated), options.StopStrings);
            var hypotheses = Decoding.BeamSearch(_model, tokens, options, cancellation, hitsStop, stepped);
            for (int p = 0; p < prompts.Count; p++)
            {
                for (int i = 0; i < n; i++)
                {
                    // The text of a hypothesis ended by a stop string is cut before it.
                    var text = new CompletionText(_tokenizer, options.StopStrings);
                    var sb = new StringBuilder();
                    foreach (int token in hypotheses[p][i].Tokens)
                    {
                        sb.Append(text.Add(token));
                        if (text.Stopped)
                        {
                            break;
                        }
                    }

                    results[p * n + i] = sb.Append(text.Stopped ? "" : text.Flush()).ToString();
                }
            }

            return results;
        }

        var sequences = tokens.SelectMany(t => Enumerable.Range(0, n).Select(_ => new GeneratedSequence(t))).ToArray();
        var texts = sequences.Select(_ => new CompletionText(_tokenizer, options.StopStrings)).ToArray();
        var outputs = sequences.Select(_ => new StringBuilder()).ToArray();
        using var generator = NewGenerator(options);
        foreach (var step in Decoding.Sample(_model, sequences, options, generator, cancellation))
        {
            stepped?.Invoke();
            for (int s = 0; s < sequences.Length; s++)
            {
                if (step[s] < 0)
                {
                    continue;
                }

                outputs[s].Append(texts[s].Add(step[s]));
                if (texts[s].Stopped)
                {
                    sequences[s].Finished = true;
                }
            }
        }

        for (int s = 0; s < sequences.Length; s++)
        {
            results[s] = texts[s].Stopped ? outputs[s].ToString() : outputs[s].Append(texts[s].Flush()).ToString();
        }

        return results;
    }

    private static torch.Generator NewGenerator(GenerationOptions options) =>
        new((ulong)(options.Seed ?? Random.Shared.Next()));

    private int[] PromptTokens(string prompt, GenerationOptions options)
    {
        var ids = _tokenizer.Encode(PreparePrompt(prompt));
        if (ids.Length == 0)
        {
            if (_tokenizer.EndOfTextId is not { } eos)
            {
                throw new ArgumentException("The prompt is empty and the tokenizer has no end-of-text token to start from; give a non-empty prompt.", nameof(prompt));
            }

            ids = [eos];
        }

        return Decoding.PreparePrompt(_model, ids, options, nameof(prompt));
    }
}
