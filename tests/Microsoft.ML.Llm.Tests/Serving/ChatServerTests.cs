using System.ClientModel;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Samples.ChatServer;
using Microsoft.ML.Llm.Tests.Chat;
using OpenAI;

namespace Microsoft.ML.Llm.Tests.Serving;

/// <summary>
/// The chat model of <see cref="ChatModelFixture"/> saved as a model zip and served by samples/ChatServer on a free
/// loopback port; a generator over the same zip, loaded separately, is the reference.
/// </summary>
public sealed class ChatServerFixture : IAsyncLifetime
{
    public const string ModelId = "tiny-chat";
    public const int MaxRequestBodyBytes = 4096;
    public const int MaxPromptTokens = 200;

    private readonly string _zip = Path.Combine(Path.GetTempPath(), $"chat-server-{Guid.NewGuid():N}.zip");
    private WebApplication? _app;

    public string ZipPath => _zip;

    public Uri BaseAddress { get; private set; } = null!;

    public TextGenerator Reference { get; private set; } = null!;

    /// <summary>The server's batcher (its counters show how requests were grouped).</summary>
    public GenerationBatcher Batcher => _app!.Services.GetRequiredService<GenerationBatcher>();

    /// <summary>The zip loaded separately from the server's copy.</summary>
    public ITransformer ReferenceModel { get; private set; } = null!;

    public HttpClient Http { get; } = new();

    public async Task InitializeAsync()
    {
        var trained = new ChatModelFixture();
        trained.Ml.Model.Save(trained.Model, null, _zip);
        var ml = new MLContext(seed: 3);
        ReferenceModel = ml.Model.Load(_zip, out _);
        Reference = ml.Llm().CreateGenerator(ReferenceModel);
        _app = ChatServerApp.Build(new ChatServerOptions
        {
            ModelPath = _zip,
            ModelId = ModelId,
            Urls = "http://127.0.0.1:0",
            MaxTokens = 64,
            DefaultChatMaxTokens = 32,
            MaxPromptTokens = MaxPromptTokens,
            MaxRequestBodyBytes = MaxRequestBodyBytes,
            TimeoutSeconds = 120,
        }, ["--Logging:LogLevel:Default=Warning"]);
        await _app.StartAsync();
        BaseAddress = new Uri(_app.Urls.Single());
        Http.BaseAddress = BaseAddress;
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        File.Delete(_zip);
    }

    /// <summary>The official OpenAI .NET client pointed at the server, as a Microsoft.Extensions.AI chat client.</summary>
    public OpenAIClient OpenAi() => new(new ApiKeyCredential("not-checked"), new OpenAIClientOptions { Endpoint = new Uri(BaseAddress, "/v1") });

    /// <summary>The reference reply: the generator's greedy completion of the rendered prompt, cut at the template's stops.</summary>
    public string ExpectedChat(string user, int maxTokens)
    {
        string prompt = ChatTemplate.Default.Render([new ChatTurn(ChatRoles.User, user)], addGenerationPrompt: true);
        string free = Reference.Generate(prompt, Greedy(maxTokens));
        int cut = ChatTemplate.Default.StopStrings.Select(s => free.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(free.Length).Min();
        return free[..cut];
    }

    public GenerationOptions Greedy(int maxTokens) => new() { DoSample = false, MaxNewTokens = maxTokens, EosTokenIds = [Reference.Tokenizer.EndOfTextId!.Value] };
}

public sealed class ChatServerTests(ChatServerFixture server) : IClassFixture<ChatServerFixture>
{
    [Fact]
    public async Task ModelsListsTheServedModel()
    {
        var models = (await server.OpenAi().GetOpenAIModelClient().GetModelsAsync()).Value;
        Assert.Equal(ChatServerFixture.ModelId, Assert.Single(models).Id);

        using var json = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/models"));
        Assert.Equal("list", json.RootElement.GetProperty("object").GetString());
        Assert.Equal("model", json.RootElement.GetProperty("data")[0].GetProperty("object").GetString());
    }

    [Fact]
    public async Task ChatThroughTheOpenAiClientEqualsTheDirectGenerator()
    {
        using IChatClient chat = server.OpenAi().GetChatClient(ChatServerFixture.ModelId).AsIChatClient();
        var response = await chat.GetResponseAsync([new ChatMessage(ChatRole.User, "to be or not")], new ChatOptions { Temperature = 0, MaxOutputTokens = 40 });

        string expected = server.ExpectedChat("to be or not", 40);
        Assert.Equal(expected, response.Text);
        Assert.Equal(ChatFinishReason.Stop, response.FinishReason);   // the model writes the next "\nUser:" turn
        Assert.Equal(ChatServerFixture.ModelId, response.ModelId);
        string prompt = "User: to be or not\nAssistant: ";
        Assert.Equal(prompt.Length, response.Usage!.InputTokenCount);
        Assert.Equal(expected.Length + "\nUser:".Length, response.Usage.OutputTokenCount);
        Assert.Equal(response.Usage.InputTokenCount + response.Usage.OutputTokenCount, response.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task StreamingChatThroughTheOpenAiClientConcatenatesToTheSameReply()
    {
        using IChatClient chat = server.OpenAi().GetChatClient(ChatServerFixture.ModelId).AsIChatClient();
        var messages = new[] { new ChatMessage(ChatRole.User, "the mind") };
        var options = new ChatOptions { Temperature = 0, MaxOutputTokens = 40 };
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in chat.GetStreamingResponseAsync(messages, options))
            updates.Add(update);
        Assert.True(updates.Count(u => u.Text.Length > 0) > 2, "expected several streamed pieces");
        var combined = updates.ToChatResponse();
        Assert.Equal(server.ExpectedChat("the mind", 40), combined.Text);
        Assert.Equal(ChatFinishReason.Stop, combined.FinishReason);
        var whole = await chat.GetResponseAsync(messages, options);
        Assert.Equal(whole.Text, combined.Text);
        Assert.Equal(whole.Usage!.OutputTokenCount, combined.Usage!.OutputTokenCount);
        Assert.Equal(whole.Usage.InputTokenCount, combined.Usage.InputTokenCount);
    }

    [Fact]
    public async Task CompletionsOverHttpEqualTheDirectGenerator()
    {
        // The OpenAI .NET client 2.x has no legacy completions API: /v1/completions is called with HttpClient.
        string expected = server.Reference.Generate("to be or", server.Greedy(20));
        Assert.Equal(20, expected.Length);

        using var json = await PostAsync("/v1/completions", """{"model":"tiny-chat","prompt":"to be or","max_tokens":20,"temperature":0}""", HttpStatusCode.OK);
        var root = json.RootElement;
        Assert.Equal("text_completion", root.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", root.GetProperty("id").GetString(), StringComparison.Ordinal);
        var choice = root.GetProperty("choices")[0];
        Assert.Equal(expected, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal("to be or".Length, root.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(20, root.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(28, root.GetProperty("usage").GetProperty("total_tokens").GetInt32());

        // Streamed: server-sent events, one JSON chunk per "data:" line, then [DONE].
        using var content = new StringContent("""{"model":"tiny-chat","prompt":"to be or","max_tokens":20,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""", Encoding.UTF8, "application/json");
        using var response = await server.Http.PostAsync("/v1/completions", content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e, StringComparison.Ordinal));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement).ToList();
        string streamed = string.Concat(chunks.Where(c => c.GetProperty("choices").GetArrayLength() > 0).Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
        Assert.Equal(expected, streamed);
        Assert.Equal(20, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("length", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task BadRequestsGetOpenAiStyleErrorsNever500()
    {
        // Through the OpenAI client: the server's 400 and message reach the caller.
        using IChatClient chat = server.OpenAi().GetChatClient(ChatServerFixture.ModelId).AsIChatClient();
        var error = await Assert.ThrowsAsync<ClientResultException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.User, "hi")], new ChatOptions { Temperature = 5 }));
        Assert.Equal(400, error.Status);
        Assert.Contains("temperature is 5; expected a number from 0 to 2.", error.Message, StringComparison.Ordinal);

        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"user","content":"hi"}""", 400, null, "invalid_json", "The request body is not valid JSON");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat"}""", 400, "messages", null, "messages is required.");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"tool","content":"x"}]}""", 400, "messages", null,
            "Chat turn 0 has role 'tool'; the template formats 'system', 'user', 'assistant'.");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"user","content":"x"}],"max_tokens":100000}""", 400, "max_tokens", null,
            "max_tokens is 100000; this server generates 1 to 64 tokens per request.");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"user","content":"x"}],"n":3}""", 400, "n", null, "n is 3; this server returns 1 choice per request.");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}""", 400,
            "messages[0].content[0]", null, "messages[0].content[0] has type 'image_url'; this server accepts text parts only.");
        await ExpectError("/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}""", 404, "model", "model_not_found",
            "The model 'gpt-4o' does not exist; this server serves 'tiny-chat'.");
        await ExpectError("/v1/chat/completions", """{"model":"tiny-chat","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}""", 400,
            "response_format", null, "response_format type 'json_object' is not supported by this server; it generates free text.");
        await ExpectError("/v1/completions", """{"model":"tiny-chat","prompt":["a","b"]}""", 400, "prompt", null, "prompt is a JSON array of 2 items; this server accepts one prompt string per request.");
        await ExpectError("/v1/completions", """{"model":"tiny-chat","prompt":"x","temperature":"hot"}""", 400, "temperature", null, "temperature is the string \"hot\"; expected a number from 0 to 2.");
        string longPrompt = new('a', ChatServerFixture.MaxPromptTokens + 1);
        await ExpectError("/v1/completions", $$"""{"model":"tiny-chat","prompt":"{{longPrompt}}"}""", 400, "prompt", "context_length_exceeded",
            $"The prompt is {ChatServerFixture.MaxPromptTokens + 1} tokens; this server accepts at most {ChatServerFixture.MaxPromptTokens}.");
        string huge = new('a', ChatServerFixture.MaxRequestBodyBytes * 2);
        await ExpectError("/v1/completions", $$"""{"model":"tiny-chat","prompt":"{{huge}}"}""", 413, null, "request_too_large", "The request body is too large");
        await ExpectError("/v1/embeddings", "{}", 404, null, "unknown_url", "Unknown request: POST /v1/embeddings.");

        using (var get = await server.Http.GetAsync("/v1/chat/completions"))
        {
            Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
            using var json = JsonDocument.Parse(await get.Content.ReadAsStringAsync());
            Assert.StartsWith("Unknown request: GET /v1/chat/completions.", json.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        }

        // The server still answers after all that.
        using var ok = await PostAsync("/v1/completions", """{"model":"tiny-chat","prompt":"to be","max_tokens":3}""", HttpStatusCode.OK);
        Assert.Equal(3, ok.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task SixteenConcurrentRequestsAreAllAnsweredAsTheDirectGeneratorWould()
    {
        // Mixed streaming and not, different max tokens: the server's batcher decodes them together, each row as alone.
        string[] questions = ["to be or not", "the mind", "that is", "to suffer"];
        int MaxTokens(int i) => 8 + 2 * i;
        var expected = Enumerable.Range(0, 16).Select(i => server.ExpectedChat(questions[i % questions.Length], MaxTokens(i))).ToArray();
        var batcher = server.Batcher;
        long batchesBefore = batcher.BatchCount, requestsBefore = batcher.RequestCount;
        var client = server.OpenAi().GetChatClient(ChatServerFixture.ModelId).AsIChatClient();
        var tasks = Enumerable.Range(0, 16).Select(async i =>
        {
            var options = new ChatOptions { Temperature = 0, MaxOutputTokens = MaxTokens(i) };
            ChatMessage[] messages = [new ChatMessage(ChatRole.User, questions[i % questions.Length])];
            if (i % 4 == 3)
            {
                var updates = new List<ChatResponseUpdate>();
                await foreach (var update in client.GetStreamingResponseAsync(messages, options))
                    updates.Add(update);
                return updates.ToChatResponse().Text;
            }
            return (await client.GetResponseAsync(messages, options)).Text;
        }).ToArray();
        var results = await Task.WhenAll(tasks);
        Assert.Equal(expected, results);
        Assert.Equal(16, batcher.RequestCount - requestsBefore);
        Assert.True(batcher.BatchCount - batchesBefore < 16, $"16 concurrent requests ran in {batcher.BatchCount - batchesBefore} batches; expected some to share one");
        Assert.InRange(batcher.LargestBatch, 2, ChatServerOptions.Defaults.MaxBatchSize);
    }

    [Fact]
    public async Task AClientThatLeavesMidStreamFreesTheModelForTheNext()
    {
        for (int i = 0; i < 3; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent("""{"model":"tiny-chat","messages":[{"role":"user","content":"the mind"}],"max_tokens":64,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);
        }   // disposed after the first event: the connection is dropped
        using var ok = await PostAsync("/v1/completions", """{"model":"tiny-chat","prompt":"to be","max_tokens":5,"temperature":0}""", HttpStatusCode.OK);
        Assert.Equal(server.Reference.Generate("to be", server.Greedy(5)), ok.RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact]
    public async Task ARequestThatWaitsPastTheTimeLimitGets408()
    {
        // A second server over the reference model itself, with a 1 s limit. A chat client over the same model holds it
        // (a stream suspended after its first piece keeps its turn), so the server's request waits in the queue.
        await using var app = ChatServerApp.Build(new ChatServerOptions
        {
            Model = server.ReferenceModel,
            ModelId = "held",
            Urls = "http://127.0.0.1:0",
            TimeoutSeconds = 1,
        }, ["--Logging:LogLevel:Default=Warning"]);
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
        using var holder = new MLContext().Llm().CreateChatClient(server.ReferenceModel);
        await using (var held = holder.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "to be")], new ChatOptions { MaxOutputTokens = 10 }).GetAsyncEnumerator())
        {
            Assert.True(await held.MoveNextAsync());
            foreach (bool stream in (bool[])[false, true])
            {
                using var content = new StringContent($$"""{"model":"held","prompt":"to be","max_tokens":3,"stream":{{(stream ? "true" : "false")}}}""", Encoding.UTF8, "application/json");
                var clock = System.Diagnostics.Stopwatch.StartNew();
                using var response = await http.PostAsync("/v1/completions", content);
                Assert.Equal(HttpStatusCode.RequestTimeout, response.StatusCode);
                Assert.InRange(clock.Elapsed.TotalSeconds, 0.9, 30);
                using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                Assert.Equal("The request took longer than the server's limit of 1 s.", json.RootElement.GetProperty("error").GetProperty("message").GetString());
                Assert.Equal("timeout", json.RootElement.GetProperty("error").GetProperty("code").GetString());
            }
        }
        // The holder has let go: the same request is served.
        using var again = new StringContent("""{"model":"held","prompt":"to be","max_tokens":3}""", Encoding.UTF8, "application/json");
        using var ok = await http.PostAsync("/v1/completions", again);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        await app.StopAsync();
    }

    [Fact]
    public async Task CommandLineOptionsConfigureTheServer()
    {
        await using (var app = ChatServerApp.Build(["--model", server.ZipPath, "--model-id", "from-args", "--urls", "http://127.0.0.1:0", "--max-tokens", "8", "--template", "chatml", "--Logging:LogLevel:Default=Warning"]))
        {
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
            using (var models = JsonDocument.Parse(await http.GetStringAsync("/v1/models")))
                Assert.Equal("from-args", models.RootElement.GetProperty("data")[0].GetProperty("id").GetString());
            using var content = new StringContent("""{"model":"from-args","prompt":"x","max_tokens":9}""", Encoding.UTF8, "application/json");
            using var response = await http.PostAsync("/v1/completions", content);
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("max_tokens is 9; this server generates 1 to 8 tokens per request.", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            await app.StopAsync();
        }
        Assert.Equal("--max-tokens is 'many'; expected a number.",
            Assert.Throws<ArgumentException>(() => ChatServerApp.Build(["--model", server.ZipPath, "--max-tokens", "many"])).Message);
        Assert.Equal("--template is 'llama'; expected default, chatml, or the path of a tokenizer_config.json (or its folder).",
            Assert.Throws<ArgumentException>(() => ChatServerApp.Build(["--model", server.ZipPath, "--template", "llama"])).Message);
        Assert.Equal("No model: give --model path/to/model.zip.", Assert.Throws<ArgumentException>(() => ChatServerApp.Build([])).Message);
        Assert.StartsWith("ChatServerOptions.MaxBatchSize is 0; expected a positive number.",
            Assert.Throws<ArgumentOutOfRangeException>(() => ChatServerApp.Build(["--model", server.ZipPath, "--max-batch-size", "0"])).Message, StringComparison.Ordinal);
    }

    private async Task<JsonDocument> PostAsync(string path, string body, HttpStatusCode status)
    {
        using var content = new StringContent(body, Encoding.UTF8, "application/json");
        using var response = await server.Http.PostAsync(path, content);
        string text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"{path}: expected {(int)status}, got {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text);
    }

    private async Task ExpectError(string path, string body, int status, string? param, string? code, string messageStart)
    {
        using var json = await PostAsync(path, body, (HttpStatusCode)status);
        var error = json.RootElement.GetProperty("error");
        Assert.StartsWith(messageStart, error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
    }
}
