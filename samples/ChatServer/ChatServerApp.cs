// An OpenAI-compatible server for a model zip: POST /v1/chat/completions and /v1/completions (JSON, or server-sent
// events with stream: true) and GET /v1/models. Both generation endpoints go through LlmChatClient (the chat template
// for chat, a pass-through template for raw completions) over one GenerationBatcher: concurrent requests queue,
// asynchronously, while the model is busy and are decoded together in one batch (up to --max-batch-size rows) when it frees.
using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.AI;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Samples.ChatServer;

/// <summary>Builds the server: <c>ChatServerApp.Build(args).Run()</c>, or <see cref="Build(ChatServerOptions, string[])"/> from code and tests.</summary>
public static class ChatServerApp
{
    /// <summary>The server with options from the command line and environment (see <see cref="ChatServerOptions"/>).</summary>
    public static WebApplication Build(string[] args)
    {
        var configuration = new ConfigurationBuilder().AddCommandLine(args).AddEnvironmentVariables("CHATSERVER_").Build();
        int maxTokens = Number(configuration, "max-tokens", ChatServerOptions.Defaults.MaxTokens);
        var options = new ChatServerOptions
        {
            ModelPath = configuration["model"],
            ModelId = configuration["model-id"],
            Template = configuration["template"] ?? ChatServerOptions.Defaults.Template,
            Urls = configuration["urls"] ?? ChatServerOptions.Defaults.Urls,
            MaxTokens = maxTokens,
            DefaultChatMaxTokens = Number(configuration, "default-max-tokens", Math.Min(ChatServerOptions.Defaults.DefaultChatMaxTokens, maxTokens)),
            DefaultCompletionMaxTokens = Math.Min(ChatServerOptions.Defaults.DefaultCompletionMaxTokens, maxTokens),
            MaxPromptTokens = Number(configuration, "max-prompt-tokens", ChatServerOptions.Defaults.MaxPromptTokens),
            MaxRequestBodyBytes = Number(configuration, "max-body-bytes", ChatServerOptions.Defaults.MaxRequestBodyBytes),
            TimeoutSeconds = Number(configuration, "timeout-seconds", ChatServerOptions.Defaults.TimeoutSeconds),
            Seed = Number(configuration, "seed", ChatServerOptions.Defaults.Seed),
            MaxBatchSize = Number(configuration, "max-batch-size", ChatServerOptions.Defaults.MaxBatchSize),
            MaxQueueLength = Number(configuration, "max-queue-length", ChatServerOptions.Defaults.MaxQueueLength),
        };
        return Build(options, args);
    }

    /// <summary>The server for <paramref name="options"/>; not started (call <c>Run</c> or <c>StartAsync</c>).</summary>
    public static WebApplication Build(ChatServerOptions options, string[]? args = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var template = LoadTemplate(options.Template);
        var ml = new MLContext(options.Seed);
        var model = options.Model ?? ml.Model.Load(options.ModelPath!, out _);
        string modelId = options.ModelId ?? (options.ModelPath is null ? LlmChatClientOptions.Defaults.ModelId : Path.GetFileNameWithoutExtension(options.ModelPath));
        var generator = ml.Llm().CreateGenerator(model);
        var batcher = new GenerationBatcher(generator, new GenerationBatcherOptions { MaxBatchSize = options.MaxBatchSize, MaxQueueLength = options.MaxQueueLength });
        var server = new ChatServer(batcher, modelId, template, options);

        var builder = WebApplication.CreateSlimBuilder(args ?? []);
        builder.WebHost.UseUrls(options.Urls);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            kestrel.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(30);
        });
        builder.Services.AddSingleton(batcher);                        // for hosts and tests that look at its counters
        var app = builder.Build();
        app.Lifetime.ApplicationStopped.Register(batcher.Dispose);   // its worker stops with the server
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = WriteError, StatusCodeSelector = StatusOf });
        app.MapGet("/v1/models", server.Models);
        app.MapPost("/v1/chat/completions", (HttpContext context) => server.HandleAsync(context, chat: true));
        app.MapPost("/v1/completions", (HttpContext context) => server.HandleAsync(context, chat: false));
        app.MapFallback((HttpContext context) => Results.Json(
            OpenAiException.ErrorBody($"Unknown request: {context.Request.Method} {context.Request.Path}. This server has GET /v1/models, POST /v1/chat/completions and POST /v1/completions.",
                OpenAiException.InvalidRequest, null, "unknown_url"), statusCode: StatusCodes.Status404NotFound));
        return app;
    }

    /// <summary><c>default</c>, <c>chatml</c>, or a Hugging Face <c>tokenizer_config.json</c> (file or folder).</summary>
    public static ChatTemplate LoadTemplate(string template) => template.ToLowerInvariant() switch
    {
        "default" => ChatTemplate.Default,
        "chatml" => ChatTemplate.ChatML,
        _ when File.Exists(template) || Directory.Exists(template) => HuggingFaceChatTemplate.Load(template),
        _ => throw new ArgumentException($"--template is '{template}'; expected default, chatml, or the path of a tokenizer_config.json (or its folder)."),
    };

    // Every failure is a 4xx with OpenAI's error body, never a 500.
    private static int StatusOf(Exception exception) => Classify(exception).Status;

    private static async Task WriteError(HttpContext context)
    {
        var exception = context.Features.Get<IExceptionHandlerFeature>()?.Error;
        var error = Classify(exception);
        context.Response.StatusCode = error.Status;
        await context.Response.WriteAsJsonAsync(error.Body);
    }

    internal static OpenAiException Classify(Exception? exception) => exception switch
    {
        OpenAiException known => known,
        BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } tooLarge =>
            new(413, $"The request body is too large: {tooLarge.Message}", code: "request_too_large"),
        BadHttpRequestException bad => new(bad.StatusCode is >= 400 and < 500 ? bad.StatusCode : 400, bad.Message),
        JsonException json => OpenAiException.BadRequest($"The request body is not valid JSON: {json.Message}", code: "invalid_json"),
        ArgumentException or NotSupportedException or FormatException => OpenAiException.BadRequest(exception.Message),
        OperationCanceledException => new(408, "The request was cancelled or took longer than the server's time limit.", code: "timeout"),
        _ => OpenAiException.BadRequest($"The request could not be served: {exception?.Message}", code: "server_could_not_serve"),
    };

    private static T Number<T>(IConfiguration configuration, string key, T fallback)
        where T : IParsable<T>
    {
        string? text = configuration[key];
        if (text is null)
            return fallback;
        return T.TryParse(text, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ArgumentException($"--{key} is '{text}'; expected a number.");
    }
}

/// <summary>The endpoints: request parsing, limits, and the two <see cref="LlmChatClient"/>s (over one batcher) that generate.</summary>
internal sealed class ChatServer
{
    // A raw completion is a one-turn conversation whose template writes the user's text and nothing else.
    private static readonly ChatTemplate PassThrough = new(new Dictionary<string, string> { ["user"] = "{content}", ["assistant"] = "{content}" });

    private readonly LlmChatClient _chat;
    private readonly LlmChatClient _completion;
    private readonly string _modelId;
    private readonly ChatServerOptions _limits;
    private readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public ChatServer(GenerationBatcher batcher, string modelId, ChatTemplate template, ChatServerOptions limits)
    {
        _modelId = modelId;
        _limits = limits;
        _chat = new LlmChatClient(batcher.Generator, new LlmChatClientOptions { Template = template, ModelId = modelId, Batcher = batcher });
        _completion = new LlmChatClient(batcher.Generator, new LlmChatClientOptions { Template = PassThrough, ModelId = modelId, UseTemplateStopStrings = false, Batcher = batcher });
    }

    /// <summary>The batcher both endpoints generate through.</summary>
    public GenerationBatcher Batcher => _chat.Batcher;

    public IResult Models() => Results.Json(new
    {
        @object = "list",
        data = new[] { new { id = _modelId, @object = "model", created = _created, owned_by = "microsoft-ml-llm" } },
    });

    public async Task HandleAsync(HttpContext context, bool chat)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
        timeout.CancelAfter(TimeSpan.FromSeconds(_limits.TimeoutSeconds));
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(context.Request.Body, cancellationToken: timeout.Token);
        }
        catch (JsonException e)
        {
            throw OpenAiException.BadRequest($"The request body is not valid JSON: {e.Message}", code: "invalid_json");
        }
        using (document)
        {
            var request = GenerationRequest.Parse(document.RootElement, chat, _limits);
            if (request.Model is null)
                throw OpenAiException.BadRequest("model is required.", "model");
            if (request.Model != _modelId)
                throw new OpenAiException(404, $"The model '{request.Model}' does not exist; this server serves '{_modelId}'.", "model", "model_not_found");
            var client = chat ? _chat : _completion;
            var messages = chat ? request.Messages : [new ChatMessage(ChatRole.User, request.Prompt)];

            // Everything that can be refused is refused before a byte of the response is written.
            string prompt;
            try
            {
                prompt = client.RenderPrompt(messages, request.Options);
                client.ToGenerationOptions(request.Options);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                throw OpenAiException.BadRequest(e.Message, chat ? "messages" : null);
            }
            int promptTokens = client.Generator.Tokenizer.Encode(prompt).Length;
            if (promptTokens > _limits.MaxPromptTokens)
            {
                throw OpenAiException.BadRequest(
                    string.Create(CultureInfo.InvariantCulture, $"The prompt is {promptTokens} tokens; this server accepts at most {_limits.MaxPromptTokens}."),
                    chat ? "messages" : "prompt", "context_length_exceeded");
            }

            try
            {
                if (request.Stream)
                    await StreamAsync(context, client, messages, request, chat, timeout.Token);
                else
                    await RespondAsync(context, client, messages, request, chat, timeout.Token);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested && !context.RequestAborted.IsCancellationRequested)
            {
                throw new OpenAiException(408, string.Create(CultureInfo.InvariantCulture, $"The request took longer than the server's limit of {_limits.TimeoutSeconds} s."), code: "timeout");
            }
        }
    }

    private async Task RespondAsync(HttpContext context, LlmChatClient client, IList<ChatMessage> messages, GenerationRequest request, bool chat, CancellationToken cancellationToken)
    {
        var response = await client.GetResponseAsync(messages, request.Options, cancellationToken);
        long created = response.CreatedAt?.ToUnixTimeSeconds() ?? DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        object body = chat
            ? new
            {
                id = response.ResponseId,
                @object = "chat.completion",
                created,
                model = _modelId,
                choices = new[] { new { index = 0, message = new { role = "assistant", content = response.Text }, logprobs = (object?)null, finish_reason = Finish(response.FinishReason) } },
                usage = Usage(response.Usage),
            }
            : new
            {
                id = CompletionId(response.ResponseId),
                @object = "text_completion",
                created,
                model = _modelId,
                choices = new[] { new { text = response.Text, index = 0, logprobs = (object?)null, finish_reason = Finish(response.FinishReason) } },
                usage = Usage(response.Usage),
            };
        await context.Response.WriteAsJsonAsync(body, cancellationToken);
    }

    // Server-sent events as OpenAI writes them: "data: {chunk}\n\n" per piece, the finish reason, usage when asked for,
    // then "data: [DONE]".
    private async Task StreamAsync(HttpContext context, LlmChatClient client, IList<ChatMessage> messages, GenerationRequest request, bool chat, CancellationToken cancellationToken)
    {
        // The first update (after the wait for the model and the first token) comes before the status line: a failure
        // up to there still gets its 4xx status and JSON body.
        await using var updates = client.GetStreamingResponseAsync(messages, request.Options, cancellationToken).GetAsyncEnumerator(cancellationToken);
        bool more = await updates.MoveNextAsync();
        context.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        bool first = true;
        try
        {
            for (; more; more = await updates.MoveNextAsync())
            {
                var update = updates.Current;
                string id = chat ? update.ResponseId! : CompletionId(update.ResponseId);
                long created = update.CreatedAt?.ToUnixTimeSeconds() ?? 0;
                string? finish = update.FinishReason is null ? null : Finish(update.FinishReason);
                string text = update.Text;
                if (chat && (first || text.Length > 0 || finish is not null))
                {
                    object delta = first ? new { role = "assistant", content = text } : finish is null ? new { content = text } : new { };
                    await SendAsync(context, new { id, @object = "chat.completion.chunk", created, model = _modelId, choices = new[] { new { index = 0, delta, logprobs = (object?)null, finish_reason = finish } } }, cancellationToken);
                }
                else if (!chat && (text.Length > 0 || finish is not null))
                {
                    await SendAsync(context, new { id, @object = "text_completion", created, model = _modelId, choices = new[] { new { text, index = 0, logprobs = (object?)null, finish_reason = finish } } }, cancellationToken);
                }
                first = false;
                if (finish is not null && request.IncludeUsage)
                {
                    var usage = update.Contents.OfType<UsageContent>().FirstOrDefault()?.Details;
                    await SendAsync(context, new { id, @object = chat ? "chat.completion.chunk" : "text_completion", created, model = _modelId, choices = Array.Empty<object>(), usage = Usage(usage) }, cancellationToken);
                }
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            return;   // the client went away: generation stopped at the next token, the model is free again
        }
        catch (Exception e)
        {
            // The status line is sent: report the error as an event, as OpenAI does mid-stream.
            var error = ChatServerApp.Classify(e);
            await SendAsync(context, error.Body, CancellationToken.None);
        }
        await context.Response.WriteAsync("data: [DONE]\n\n", CancellationToken.None);
        await context.Response.Body.FlushAsync(CancellationToken.None);
    }

    private static async Task SendAsync(HttpContext context, object chunk, CancellationToken cancellationToken)
    {
        await context.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk) + "\n\n", cancellationToken);
        await context.Response.Body.FlushAsync(cancellationToken);
    }

    private static string Finish(ChatFinishReason? reason) => reason == ChatFinishReason.Length ? "length" : "stop";

    private static string CompletionId(string? responseId) => "cmpl-" + (responseId ?? Guid.NewGuid().ToString("N")).Replace("chatcmpl-", "", StringComparison.Ordinal);

    private static object? Usage(UsageDetails? usage) => usage is null
        ? null
        : new { prompt_tokens = usage.InputTokenCount ?? 0, completion_tokens = usage.OutputTokenCount ?? 0, total_tokens = usage.TotalTokenCount ?? 0 };
}
