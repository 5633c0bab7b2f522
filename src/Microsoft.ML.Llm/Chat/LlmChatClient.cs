// Microsoft.Extensions.AI's IChatClient over a TextGenerator: a conversation is rendered with a ChatTemplate, the
// reply is generated token by token (so usage counts are exact and cancellation is honoured between tokens), and stop
// sequences are cut before any of their text is returned, also when streaming.
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.AI;
using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>
/// A <see cref="IChatClient"/> (Microsoft.Extensions.AI) over a <see cref="TextGenerator"/>: chat with a model trained or
/// fine-tuned with this library through .NET's AI abstractions, alone or in a <c>ChatClientBuilder</c> pipeline
/// (<c>client.AsBuilder().Use…().Build()</c>). Create one with <c>mlContext.Llm().CreateChatClient(model)</c>.
/// </summary>
/// <remarks>
/// <para>
/// A request's messages become <see cref="ChatTurn"/>s (role and text), <see cref="ChatOptions.Instructions"/> a
/// leading system turn; the template renders them followed by its <see cref="ChatTemplate.GenerationPrompt"/>, and the
/// model writes the reply. <see cref="ChatOptions"/> map onto <see cref="GenerationOptions"/>:
/// <see cref="ChatOptions.Temperature"/> → <see cref="GenerationOptions.Temperature"/> (0 = greedy, as OpenAI's
/// temperature 0), <see cref="ChatOptions.TopP"/> → <see cref="GenerationOptions.TopP"/>, <see cref="ChatOptions.TopK"/>
/// → <see cref="GenerationOptions.TopK"/>, <see cref="ChatOptions.MaxOutputTokens"/> →
/// <see cref="GenerationOptions.MaxNewTokens"/>, <see cref="ChatOptions.StopSequences"/> → stop strings (with the
/// template's own), <see cref="ChatOptions.Seed"/> → <see cref="GenerationOptions.Seed"/>. Options the model cannot
/// honour (tools, a non-zero frequency or presence penalty) are refused with <see cref="NotSupportedException"/>
/// rather than ignored.
/// </para>
/// <para>
/// The response carries <see cref="UsageDetails"/> (prompt tokens, generated tokens — end-of-text not counted — and
/// their sum), <see cref="ChatFinishReason.Stop"/> (end-of-text or a stop sequence) or
/// <see cref="ChatFinishReason.Length"/> (the token limit), and the model id. A stop sequence is not part of the
/// text; streaming holds back text that may be the start of one, so the streamed pieces concatenate to exactly the
/// non-streamed text.
/// </para>
/// <para>
/// Concurrency: requests go through a <see cref="GenerationBatcher"/>, so concurrent <see cref="GetResponseAsync"/> and
/// <see cref="GetStreamingResponseAsync"/> calls (each with its own options and cancellation) are decoded together in
/// one batch, each reply the one it would be alone. Every client over the same trained model that was not given a
/// batcher (<see cref="LlmChatClientOptions.Batcher"/>) shares one with the default bounds; batchers over one model
/// take turns, one forward pass at a time. Don't call a generator of that model directly while a client over it is busy.
/// </para>
/// </remarks>
public sealed class LlmChatClient : IChatClient
{
    private readonly TextGenerator _generator;
    private readonly GenerationOptions _baseOptions;
    private readonly GenerationBatcher _batcher;

    /// <summary>A chat client over <paramref name="generator"/>.</summary>
    /// <param name="generator">The generator (from <c>mlContext.Llm().CreateGenerator(model)</c>).</param>
    /// <param name="options">Template, model id and default generation settings; null for the defaults.</param>
    /// <exception cref="ArgumentException">An option is invalid (names the option and the value), or the batcher serves another model.</exception>
    public LlmChatClient(TextGenerator generator, LlmChatClientOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(generator);
        options ??= new LlmChatClientOptions();
        if (string.IsNullOrWhiteSpace(options.ModelId))
            throw new ArgumentException($"LlmChatClientOptions.ModelId is '{options.ModelId}'; expected a non-empty model name.", nameof(options));
        _generator = generator;
        _baseOptions = Copy(options.GenerationOptions ?? new GenerationOptions());
        _baseOptions.Validate();
        Template = options.Template ?? ChatTemplate.Default;
        ModelId = options.ModelId;
        UseTemplateStopStrings = options.UseTemplateStopStrings;
        StopAtEndOfText = options.StopAtEndOfText;
        Metadata = new ChatClientMetadata(nameof(LlmChatClient), providerUri: null, defaultModelId: ModelId);
        if (options.Batcher is { } batcher && batcher.Generator.Model != generator.Model)
            throw new ArgumentException("LlmChatClientOptions.Batcher serves another model than the generator's; give a batcher over the same trained model, or null for the shared one.", nameof(options));
        _batcher = options.Batcher ?? GenerationBatcher.Shared(generator);
    }

    /// <summary>The generator that writes the replies.</summary>
    public TextGenerator Generator => _generator;

    /// <summary>The batcher that decodes this client's requests together with concurrent ones.</summary>
    public GenerationBatcher Batcher => _batcher;

    /// <summary>The template that renders conversations.</summary>
    public ChatTemplate Template { get; }

    /// <summary>The model name reported in responses.</summary>
    public string ModelId { get; }

    /// <summary>Whether the template's stop strings end a reply.</summary>
    public bool UseTemplateStopStrings { get; }

    /// <summary>Whether the tokenizer's end-of-text token ends a reply.</summary>
    public bool StopAtEndOfText { get; }

    /// <summary>Provider name (<c>LlmChatClient</c>) and default model id.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <summary>
    /// The prompt text the model is given for <paramref name="messages"/>: the rendered conversation (with
    /// <paramref name="options"/>' instructions as a leading system turn) followed by the generation prompt.
    /// </summary>
    /// <exception cref="ArgumentException">A message's role is not one of the template's, or a message is null.</exception>
    /// <exception cref="NotSupportedException">A message holds content other than text (images, tool calls...).</exception>
    public string RenderPrompt(IEnumerable<ChatMessage> messages, ChatOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrEmpty(options?.Instructions))
            turns.Add(new ChatTurn(ChatRoles.System, options.Instructions));
        int index = 0;
        foreach (var message in messages)
        {
            if (message is null)
                throw new ArgumentException(Invariant($"Chat message {index} is null."), nameof(messages));
            foreach (var content in message.Contents)
            {
                if (content is not TextContent and not UsageContent and not TextReasoningContent)
                {
                    throw new NotSupportedException(
                        Invariant($"Chat message {index} ({message.Role}) holds {content.GetType().Name}; LlmChatClient accepts text content only."));
                }
            }
            turns.Add(new ChatTurn(message.Role.Value, message.Text));
            index++;
        }
        return Template.Render(turns, addGenerationPrompt: true);
    }

    /// <summary>
    /// The generation settings a request runs with: the client's <see cref="LlmChatClientOptions.GenerationOptions"/>,
    /// overridden by <paramref name="options"/>, plus the stop strings and end-of-text id the client adds.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A chat option is outside the range a model accepts (names the option and value).</exception>
    /// <exception cref="NotSupportedException">The options ask for tools, JSON output, or a frequency or presence penalty.</exception>
    public GenerationOptions ToGenerationOptions(ChatOptions? options)
    {
        var generation = Copy(_baseOptions);
        if (options is not null)
        {
            if (options.Tools is { Count: > 0 })
                throw new NotSupportedException(Invariant($"ChatOptions.Tools holds {options.Tools.Count} tools; LlmChatClient does not call tools."));
            if (options.ResponseFormat is ChatResponseFormatJson)
                throw new NotSupportedException("ChatOptions.ResponseFormat asks for JSON; LlmChatClient generates free text only (ChatResponseFormat.Text).");
            if (options.FrequencyPenalty is { } frequency && frequency != 0)
                throw new NotSupportedException(Invariant($"ChatOptions.FrequencyPenalty is {frequency}; LlmChatClient supports 0 only (use GenerationOptions.RepetitionPenalty)."));
            if (options.PresencePenalty is { } presence && presence != 0)
                throw new NotSupportedException(Invariant($"ChatOptions.PresencePenalty is {presence}; LlmChatClient supports 0 only (use GenerationOptions.RepetitionPenalty)."));
            if (options.Temperature is { } temperature)
            {
                if (!(temperature >= 0 && float.IsFinite(temperature)))
                    throw OutOfRange(nameof(ChatOptions.Temperature), temperature, "a finite number of at least 0 (0 = greedy)");
                if (temperature == 0)
                {
                    generation.DoSample = false;
                }
                else
                {
                    generation.DoSample = true;
                    generation.Temperature = temperature;
                }
            }
            if (options.TopP is { } topP)
            {
                if (!(topP > 0 && topP <= 1))
                    throw OutOfRange(nameof(ChatOptions.TopP), topP, "a number in (0, 1] (1 turns top-p off)");
                generation.TopP = topP;
            }
            if (options.TopK is { } topK)
            {
                if (topK < 0)
                    throw OutOfRange(nameof(ChatOptions.TopK), topK, "a non-negative integer (0 turns top-k off)");
                generation.TopK = topK;
            }
            if (options.MaxOutputTokens is { } maxTokens)
            {
                if (maxTokens < 1)
                    throw OutOfRange(nameof(ChatOptions.MaxOutputTokens), maxTokens, "an integer of at least 1");
                generation.MaxNewTokens = maxTokens;
            }
            if (options.Seed is { } seed)
            {
                if (seed is < int.MinValue or > int.MaxValue)
                    throw OutOfRange(nameof(ChatOptions.Seed), seed, "a 32-bit integer");
                generation.Seed = (int)seed;
            }
            if (options.StopSequences is { } stops)
            {
                for (int i = 0; i < stops.Count; i++)
                {
                    if (string.IsNullOrEmpty(stops[i]))
                        throw new ArgumentException(Invariant($"ChatOptions.StopSequences[{i}] is {(stops[i] is null ? "null" : "empty")}; expected a non-empty string."), nameof(options));
                    Add(generation.StopStrings, stops[i]);
                }
            }
        }
        if (UseTemplateStopStrings)
        {
            foreach (var stop in Template.StopStrings)
                Add(generation.StopStrings, stop);
        }
        if (StopAtEndOfText && _generator.Tokenizer.EndOfTextId is { } eos && !generation.EosTokenIds.Contains(eos))
            generation.EosTokenIds.Add(eos);
        generation.Validate();
        return generation;

        static void Add(IList<string> list, string value)
        {
            if (!list.Contains(value))
                list.Add(value);
        }
    }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        var reply = new StringBuilder();
        await foreach (var piece in Run(request, whole: true, cancellationToken).ConfigureAwait(false))
            reply.Append(piece);
        string text = reply.ToString();
        var message = new ChatMessage(ChatRole.Assistant, text) { MessageId = request.MessageId, CreatedAt = request.CreatedAt };
        return new ChatResponse(message)
        {
            ResponseId = request.ResponseId,
            ModelId = ModelId,
            CreatedAt = request.CreatedAt,
            FinishReason = request.FinishReason,
            Usage = request.Usage(),
        };
    }

    /// <inheritdoc/>
    /// <remarks>
    /// One update per piece of text (complete characters), then a last update with the finish reason and a
    /// <see cref="UsageContent"/>. Cancellation is checked before every token.
    /// </remarks>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = Prepare(messages, options);
        await foreach (var piece in Run(request, whole: false, cancellationToken).ConfigureAwait(false))
            yield return Update(request, [new TextContent(piece)]);
        var last = Update(request, [new UsageContent(request.Usage())]);
        last.FinishReason = request.FinishReason;
        yield return last;
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null)
            return null;
        if (serviceType == typeof(ChatClientMetadata))
            return Metadata;
        if (serviceType == typeof(TextGenerator))
            return _generator;
        if (serviceType == typeof(ChatTemplate))
            return Template;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <summary>Nothing to release: the generator and its model belong to the caller.</summary>
    public void Dispose()
    {
    }

    private Request Prepare(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        string prompt = RenderPrompt(messages, options);
        var generation = ToGenerationOptions(options);
        return new Request(_generator.EncodePrompt(prompt, generation), generation);
    }

    // Generates token by token in the batcher's next batch; yields text that can no longer become part of a stop string,
    // cut at the first stop (CompletionText, as TextGenerator's own streams do).
    private async IAsyncEnumerable<string> Run(Request request, bool whole, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        bool stopped = false;
        await foreach (var piece in _batcher.StreamAsync(request.PromptTokens, request.Options, _generator.Tokenizer, whole, cancellationToken).ConfigureAwait(false))
        {
            if (piece.Token >= 0)
            {
                request.OutputTokens++;
                stopped |= piece.Stopped;
            }
            if (piece.Text.Length > 0)
                yield return piece.Text;
        }
        // Length: the token limit was reached without an end-of-text or a stop sequence; otherwise Stop.
        request.FinishReason = !stopped && request.OutputTokens >= request.Options.MaxNewTokens ? ChatFinishReason.Length : ChatFinishReason.Stop;
    }

    private ChatResponseUpdate Update(Request request, IList<AIContent> contents) => new(ChatRole.Assistant, contents)
    {
        ResponseId = request.ResponseId,
        MessageId = request.MessageId,
        ModelId = ModelId,
        CreatedAt = request.CreatedAt,
    };

    // A copy of every public settable property, lists copied too (so options added to GenerationOptions later carry over).
    internal static GenerationOptions Copy(GenerationOptions source)
    {
        var copy = new GenerationOptions();
        foreach (var property in typeof(GenerationOptions).GetProperties())
        {
            if (!property.CanRead || !property.CanWrite || property.GetIndexParameters().Length > 0)
                continue;
            object? value = property.GetValue(source);
            value = value switch
            {
                IList<string> strings => new List<string>(strings),
                IList<int> ints => new List<int>(ints),
                IList<int[]> arrays => arrays.Select(a => (int[])a.Clone()).ToList(),
                _ => value,
            };
            property.SetValue(copy, value);
        }
        return copy;
    }

    private static ArgumentOutOfRangeException OutOfRange(string name, object value, string accepted) =>
        new("options", Invariant($"ChatOptions.{name} is {value}; expected {accepted}."));

    private sealed class Request(int[] promptTokens, GenerationOptions options)
    {
        public int[] PromptTokens { get; } = promptTokens;
        public GenerationOptions Options { get; } = options;
        public string ResponseId { get; } = "chatcmpl-" + Guid.NewGuid().ToString("N");
        public string MessageId { get; } = "msg-" + Guid.NewGuid().ToString("N");
        public DateTimeOffset CreatedAt { get; } = DateTimeOffset.UtcNow;
        public int OutputTokens { get; set; }
        public ChatFinishReason? FinishReason { get; set; }

        public UsageDetails Usage() => new()
        {
            InputTokenCount = PromptTokens.Length,
            OutputTokenCount = OutputTokens,
            TotalTokenCount = PromptTokens.Length + OutputTokens,
        };
    }
}
