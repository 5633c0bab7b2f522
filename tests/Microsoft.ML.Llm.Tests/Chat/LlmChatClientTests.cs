using Microsoft.Extensions.AI;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests.Chat;

/// <summary>A tiny character model trained on conversations in the default template, shared by the chat tests.</summary>
public sealed class ChatModelFixture
{
    /// <summary>The training text: user/assistant exchanges in <see cref="ChatTemplate.Default"/>'s format.</summary>
    public static readonly string Conversations = string.Concat(Enumerable.Repeat(
        "User: to be or not\nAssistant: that is the question.\nUser: the mind\nAssistant: to suffer the slings.\n", 6));

    public ChatModelFixture()
    {
        Ml = new MLContext(seed: 1);
        Tokenizer = LmTokenizer.Character([Conversations + TestData.Corpus + "System:"], endOfTextToken: "<|endoftext|>");
        // Context 64 holds a prompt and its reply; overlapping blocks (stride 5, coprime with the 96-character period)
        // show every alignment, so the model continues a conversation from any starting point.
        var ids = Tokenizer.Encode(Conversations);
        var blocks = Enumerable.Range(0, (ids.Length - 65) / 5).Select(i => ids[(5 * i)..(5 * i + 65)]).ToArray();
        var options = TestData.TinyOptions(64, maxSteps: 300);
        options.Tokenizer = Tokenizer;
        Model = Ml.Llm().Trainers.CausalLm(options).Fit(TestData.FromTokens(Ml, blocks));
    }

    public MLContext Ml { get; }

    public LmTokenizer Tokenizer { get; }

    public CausalLmTransformer Model { get; }
}

public sealed class LlmChatClientTests(ChatModelFixture fixture) : IClassFixture<ChatModelFixture>
{
    private static readonly ChatMessage[] Question = [new(ChatRole.User, "to be or not")];

    private LlmChatClient Client(LlmChatClientOptions? options = null) => fixture.Ml.Llm().CreateChatClient(fixture.Model, options ?? new LlmChatClientOptions());

    [Fact]
    public async Task ResponseIsTheGeneratorsCompletionOfTheRenderedPromptWithExactUsage()
    {
        using var client = Client(new LlmChatClientOptions { UseTemplateStopStrings = false, ModelId = "tiny-chat" });
        var messages = new List<ChatMessage> { new(ChatRole.System, "be brief"), new(ChatRole.User, "the mind") };
        string prompt = client.RenderPrompt(messages);
        Assert.Equal("System: be brief\nUser: the mind\nAssistant: ", prompt);

        var response = await client.GetResponseAsync(messages, new ChatOptions { Temperature = 0, MaxOutputTokens = 25 });

        var generator = fixture.Ml.Llm().CreateGenerator(fixture.Model);
        string expected = generator.Generate(prompt, new GenerationOptions { DoSample = false, MaxNewTokens = 25, EosTokenIds = [fixture.Tokenizer.EndOfTextId!.Value] });
        Assert.Equal(25, expected.Length);
        Assert.Equal(expected, response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);
        Assert.Equal("tiny-chat", response.ModelId);
        Assert.StartsWith("chatcmpl-", response.ResponseId, StringComparison.Ordinal);
        Assert.NotNull(response.Usage);
        Assert.Equal(fixture.Tokenizer.Encode(prompt).Length, response.Usage.InputTokenCount);
        Assert.Equal(prompt.Length, response.Usage.InputTokenCount);   // one character, one token
        Assert.Equal(25, response.Usage.OutputTokenCount);
        Assert.Equal(prompt.Length + 25, response.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task TemplateStopStringEndsTheReplyBeforeTheNextUserTurn()
    {
        using var free = Client(new LlmChatClientOptions { UseTemplateStopStrings = false });
        string unstopped = (await free.GetResponseAsync(Question, new ChatOptions { Temperature = 0, MaxOutputTokens = 60 })).Text;
        int user = unstopped.IndexOf("\nUser:", StringComparison.Ordinal);
        Assert.True(user > 0, $"the model should have learned to write the next user turn: '{unstopped}'");

        using var client = Client();
        Assert.Equal(["\nUser:", "\nSystem:"], client.Template.StopStrings);
        var response = await client.GetResponseAsync(Question, new ChatOptions { Temperature = 0, MaxOutputTokens = 60 });
        Assert.Equal(unstopped[..user], response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        // One character per token: generation ran until the stop string's last character.
        Assert.Equal(user + "\nUser:".Length, response.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task EndOfTextEndsTheReplyAndIsNotCounted()
    {
        // A model that learned to end each reply with the end-of-text token, as supervised fine-tuning teaches.
        var ml = new MLContext(seed: 2);
        var tokenizer = LmTokenizer.Character(["User: to be\nAssistant: or not the mind"], endOfTextToken: "<|endoftext|>");
        int eos = tokenizer.EndOfTextId!.Value;
        var conversation = tokenizer.Encode("User: to be\nAssistant: or not").Append(eos).Concat(tokenizer.Encode("User: the mind\nAssistant: to be")).Append(eos).ToArray();
        var ids = Enumerable.Repeat(conversation, 12).SelectMany(c => c).ToArray();
        var blocks = Enumerable.Range(0, (ids.Length - 65) / 3).Select(i => ids[(3 * i)..(3 * i + 65)]).ToArray();
        var options = TestData.TinyOptions(64, maxSteps: 200);
        options.Tokenizer = tokenizer;
        var model = ml.Llm().Trainers.CausalLm(options).Fit(TestData.FromTokens(ml, blocks));

        using var client = ml.Llm().CreateChatClient(model, new LlmChatClientOptions { UseTemplateStopStrings = false });
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "to be")], new ChatOptions { Temperature = 0, MaxOutputTokens = 30 });
        Assert.Equal("or not", response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(6, response.Usage!.OutputTokenCount);   // "or not"; the end-of-text token is not counted
        Assert.Equal("User: to be\nAssistant: ".Length, response.Usage.InputTokenCount);

        // Without StopAtEndOfText the model writes past it, up to the token limit.
        using var unstopped = ml.Llm().CreateChatClient(model, new LlmChatClientOptions { UseTemplateStopStrings = false, StopAtEndOfText = false });
        var longer = await unstopped.GetResponseAsync([new ChatMessage(ChatRole.User, "to be")], new ChatOptions { Temperature = 0, MaxOutputTokens = 30 });
        Assert.Equal(ChatFinishReason.Length, longer.FinishReason);
        Assert.Equal(30, longer.Usage!.OutputTokenCount);
        Assert.StartsWith("or not", longer.Text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task StopSequencesAreCutAlsoWhenStreamed()
    {
        using var client = Client(new LlmChatClientOptions { UseTemplateStopStrings = false });
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 40 };
        string free = (await client.GetResponseAsync(Question, greedy)).Text;
        // A stop sequence of three characters from the middle of the free text: nothing of it may be returned, not even
        // its first characters in an earlier streamed piece.
        string stop = free.Substring(6, 3);
        int at = free.IndexOf(stop, StringComparison.Ordinal);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 40, StopSequences = [stop] };

        var response = await client.GetResponseAsync(Question, options);
        Assert.Equal(free[..at], response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal(at + stop.Length, response.Usage!.OutputTokenCount);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Question, options))
            updates.Add(update);
        Assert.Equal(free[..at], string.Concat(updates.Select(u => u.Text)));
        Assert.Equal(ChatFinishReason.Stop, updates[^1].FinishReason);
    }

    [Fact]
    public async Task StreamingConcatenationEqualsTheNonStreamingResponse()
    {
        using var client = Client();
        var sampled = new ChatOptions { Temperature = 0.9f, TopK = 8, TopP = 0.95f, Seed = 5, MaxOutputTokens = 40, Instructions = "be brief" };
        var response = await client.GetResponseAsync(Question, sampled);

        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Question, sampled))
            updates.Add(update);
        Assert.True(updates.Count > 2, "expected several pieces");
        Assert.All(updates, u => Assert.Equal(ChatRole.Assistant, u.Role));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());
        var combined = updates.ToChatResponse();
        Assert.Equal(response.Text, combined.Text);
        Assert.Equal(response.FinishReason, combined.FinishReason);
        Assert.Equal(response.Usage!.InputTokenCount, combined.Usage!.InputTokenCount);
        Assert.Equal(response.Usage.OutputTokenCount, combined.Usage.OutputTokenCount);
        Assert.Equal(response.Usage.TotalTokenCount, combined.Usage.TotalTokenCount);
        Assert.Equal(client.RenderPrompt(Question, sampled).Length, combined.Usage.InputTokenCount);
        Assert.StartsWith("System: be brief\nUser:", client.RenderPrompt(Question, sampled), StringComparison.Ordinal);

        // Same seed, same text; another seed, another text.
        Assert.Equal(response.Text, (await client.GetResponseAsync(Question, sampled)).Text);
        sampled.Seed = 6;
        Assert.NotEqual(response.Text, (await client.GetResponseAsync(Question, sampled)).Text);
    }

    [Fact]
    public void ChatOptionsMapOntoGenerationOptions()
    {
        var defaults = new GenerationOptions { RepetitionPenalty = 1.3f, MaxNewTokens = 99, StopStrings = ["END"] };
        using var client = Client(new LlmChatClientOptions { GenerationOptions = defaults });
        int eos = fixture.Tokenizer.EndOfTextId!.Value;

        var mapped = client.ToGenerationOptions(new ChatOptions { Temperature = 0.5f, TopP = 0.9f, TopK = 7, MaxOutputTokens = 12, StopSequences = ["xy"], Seed = 42 });
        Assert.True(mapped.DoSample);
        Assert.Equal(0.5f, mapped.Temperature);
        Assert.Equal(0.9f, mapped.TopP);
        Assert.Equal(7, mapped.TopK);
        Assert.Equal(12, mapped.MaxNewTokens);
        Assert.Equal(42, mapped.Seed);
        Assert.Equal(1.3f, mapped.RepetitionPenalty);                       // from the client's defaults
        Assert.Equal(["END", "xy", "\nUser:", "\nSystem:"], mapped.StopStrings);
        Assert.Equal([eos], mapped.EosTokenIds);
        Assert.Equal(["END"], defaults.StopStrings);                        // the defaults are copied, never changed
        Assert.Empty(defaults.EosTokenIds);

        var unset = client.ToGenerationOptions(null);
        Assert.Equal(99, unset.MaxNewTokens);
        Assert.True(unset.DoSample);
        Assert.Null(unset.Seed);
        Assert.False(client.ToGenerationOptions(new ChatOptions { Temperature = 0 }).DoSample);

        var plain = Client(new LlmChatClientOptions { UseTemplateStopStrings = false, StopAtEndOfText = false }).ToGenerationOptions(new ChatOptions());
        Assert.Empty(plain.StopStrings);
        Assert.Empty(plain.EosTokenIds);
        Assert.Equal(GenerationOptions.Defaults.MaxNewTokens, plain.MaxNewTokens);

        Assert.Equal("ChatOptions.Temperature is -1; expected a finite number of at least 0 (0 = greedy). (Parameter 'options')",
            Assert.Throws<ArgumentOutOfRangeException>(() => client.ToGenerationOptions(new ChatOptions { Temperature = -1 })).Message);
        Assert.Equal("ChatOptions.TopP is 1.5; expected a number in (0, 1] (1 turns top-p off). (Parameter 'options')",
            Assert.Throws<ArgumentOutOfRangeException>(() => client.ToGenerationOptions(new ChatOptions { TopP = 1.5f })).Message);
        Assert.Equal("ChatOptions.MaxOutputTokens is 0; expected an integer of at least 1. (Parameter 'options')",
            Assert.Throws<ArgumentOutOfRangeException>(() => client.ToGenerationOptions(new ChatOptions { MaxOutputTokens = 0 })).Message);
        Assert.Equal("ChatOptions.Seed is 1099511627776; expected a 32-bit integer. (Parameter 'options')",
            Assert.Throws<ArgumentOutOfRangeException>(() => client.ToGenerationOptions(new ChatOptions { Seed = 1L << 40 })).Message);
        Assert.Equal("ChatOptions.FrequencyPenalty is 0.5; LlmChatClient supports 0 only (use GenerationOptions.RepetitionPenalty).",
            Assert.Throws<NotSupportedException>(() => client.ToGenerationOptions(new ChatOptions { FrequencyPenalty = 0.5f })).Message);
        Assert.Equal("ChatOptions.ResponseFormat asks for JSON; LlmChatClient generates free text only (ChatResponseFormat.Text).",
            Assert.Throws<NotSupportedException>(() => client.ToGenerationOptions(new ChatOptions { ResponseFormat = ChatResponseFormat.Json })).Message);
        Assert.Equal("ChatOptions.StopSequences[0] is empty; expected a non-empty string. (Parameter 'options')",
            Assert.Throws<ArgumentException>(() => client.ToGenerationOptions(new ChatOptions { StopSequences = [""] })).Message);
        Assert.Equal(0, client.ToGenerationOptions(new ChatOptions { PresencePenalty = 0 }).TopK);
    }

    [Fact]
    public async Task UsersOwnTemplateRendersTheConversationAndUnknownRolesAreRefused()
    {
        var template = new ChatTemplate(new Dictionary<string, string>
        {
            ["user"] = "Q: {content}\n",
            ["assistant"] = "A: {content}\n",
        });
        using var client = Client(new LlmChatClientOptions { Template = template });
        Assert.Same(template, client.Template);
        Assert.Equal("Q: to be\nA: that\nQ: the mind\nA: ",
            client.RenderPrompt([new(ChatRole.User, "to be"), new(ChatRole.Assistant, "that"), new(ChatRole.User, "the mind")]));
        Assert.Equal(["\nQ:"], client.ToGenerationOptions(null).StopStrings);
        Assert.Equal("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
            Client(new LlmChatClientOptions { Template = ChatTemplate.ChatML }).RenderPrompt([new(ChatRole.User, "hi")]));

        var error = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new(ChatRole.System, "be brief")]));
        Assert.StartsWith("Chat turn 0 has role 'system'; the template formats 'user', 'assistant'.", error.Message, StringComparison.Ordinal);
        var image = new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2 }, "image/png")]);
        Assert.Equal("Chat message 0 (user) holds DataContent; LlmChatClient accepts text content only.",
            (await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync([image]))).Message);
    }

    [Fact]
    public async Task CancellationStopsStreamingWithinOneTokenAndReleasesTheModel()
    {
        using var client = Client(new LlmChatClientOptions { UseTemplateStopStrings = false });
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 200 };
        using var cts = new CancellationTokenSource();
        int received = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var update in client.GetStreamingResponseAsync(Question, options, cts.Token))
            {
                received++;
                cts.Cancel();
            }
        });
        Assert.Equal(1, received);   // one character per token: the token after the cancel was never generated

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetResponseAsync(Question, options, cts.Token));

        // The model is free again: a later request runs to its limit.
        var response = await client.GetResponseAsync(Question, new ChatOptions { Temperature = 0, MaxOutputTokens = 5 });
        Assert.Equal(5, response.Usage!.OutputTokenCount);
    }

    [Fact]
    public async Task ConcurrentRequestsOfClientsOverOneModelShareItsBatcherWithTheSameResults()
    {
        using var client = Client(new LlmChatClientOptions { UseTemplateStopStrings = false });
        // Another client with another generator over the same model: both go through the model's shared batcher.
        using var other = Client(new LlmChatClientOptions { UseTemplateStopStrings = false });
        Assert.NotSame(client.Generator, other.Generator);
        Assert.Same(client.Batcher, other.Batcher);
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 20 };
        string alone = (await client.GetResponseAsync(Question, options)).Text;
        var tasks = Enumerable.Range(0, 6).Select(i => (i % 2 == 0 ? client : other).GetResponseAsync(Question, options)).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.All(results, r => Assert.Equal(alone, r.Text));
    }

    [Fact]
    public async Task ConcurrentRequestsWithTheirOwnOptionsShareABatchAndEachGetsItsSoloReply()
    {
        using var batcher = fixture.Ml.Llm().CreateBatcher(fixture.Model, maxBatchSize: 4);
        Assert.Equal(4, batcher.MaxBatchSize);
        Assert.Equal(GenerationBatcherOptions.Defaults.MaxQueueLength, batcher.MaxQueueLength);
        using var client = Client(new LlmChatClientOptions { UseTemplateStopStrings = false, Batcher = batcher });
        Assert.Same(batcher, client.Batcher);
        var options = Enumerable.Range(0, 8).Select(i => i % 2 == 0
            ? new ChatOptions { Temperature = 0, MaxOutputTokens = 5 + 3 * i }
            : new ChatOptions { Temperature = 0.8f, TopK = 5, Seed = 11 + i, MaxOutputTokens = 40, StopSequences = ["."] }).ToArray();
        var solo = new List<ChatResponse>();
        foreach (var option in options)
            solo.Add(await client.GetResponseAsync(Question, option));   // one at a time: batches of one
        Assert.Equal(8, batcher.BatchCount);

        var tasks = options.Select(async (option, i) =>
        {
            if (i % 3 != 0)
                return await client.GetResponseAsync(Question, option);
            var updates = new List<ChatResponseUpdate>();
            await foreach (var update in client.GetStreamingResponseAsync(Question, option))
                updates.Add(update);
            return updates.ToChatResponse();
        }).ToArray();
        var batched = await Task.WhenAll(tasks);
        for (int i = 0; i < 8; i++)
        {
            Assert.Equal(solo[i].Text, batched[i].Text);
            Assert.Equal(solo[i].FinishReason, batched[i].FinishReason);
            Assert.Equal(solo[i].Usage!.OutputTokenCount, batched[i].Usage!.OutputTokenCount);
        }
        Assert.Equal(4, batcher.LargestBatch);
        Assert.Contains(solo, r => r.FinishReason == ChatFinishReason.Stop);
        Assert.Contains(solo, r => r.FinishReason == ChatFinishReason.Length);

        using var otherModel = Generation.GenerationTestModel.Create();
        using var other = new GenerationBatcher(Generation.GenerationTestModel.Generator(otherModel));
        Assert.StartsWith("LlmChatClientOptions.Batcher serves another model than the generator's;",
            Assert.Throws<ArgumentException>(() => Client(new LlmChatClientOptions { Batcher = other })).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task WorksInAChatClientBuilderPipelineAndAnswersGetService()
    {
        using var inner = Client(new LlmChatClientOptions { ModelId = "tiny" });
        using IChatClient pipeline = inner.AsBuilder()
            .ConfigureOptions(o => o.MaxOutputTokens ??= 7)
            .Build();
        var response = await pipeline.GetResponseAsync(Question);
        Assert.Equal(7, response.Usage!.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);

        Assert.Same(inner, pipeline.GetService<LlmChatClient>());
        var metadata = pipeline.GetService<ChatClientMetadata>();
        Assert.Equal("tiny", metadata!.DefaultModelId);
        Assert.Equal(nameof(LlmChatClient), metadata.ProviderName);
        Assert.Same(inner.Generator, inner.GetService<TextGenerator>());
        Assert.Same(inner.Template, inner.GetService<ChatTemplate>());
        Assert.Null(inner.GetService<LlmChatClient>(serviceKey: "other"));
        Assert.Null(inner.GetService<string>());
    }
}
