// Reading OpenAI request bodies by hand (JsonDocument), so that every bad field is answered with a message that names
// the field, its value and what is accepted — the error body OpenAI's own API returns.
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Samples.ChatServer;

/// <summary>A request the server refuses: answered with <see cref="Status"/> and OpenAI's error body.</summary>
public sealed class OpenAiException(int status, string message, string? param = null, string? code = null, string type = OpenAiException.InvalidRequest)
    : Exception(message)
{
    public const string InvalidRequest = "invalid_request_error";

    public int Status { get; } = status;

    public string? Param { get; } = param;

    public string? Code { get; } = code;

    public string Type { get; } = type;

    /// <summary>The body: <c>{"error":{"message","type","param","code"}}</c>.</summary>
    public object Body => ErrorBody(Message, Type, Param, Code);

    public static object ErrorBody(string message, string type, string? param, string? code) =>
        new { error = new { message, type, param, code } };

    public static OpenAiException BadRequest(string message, string? param = null, string? code = null) => new(400, message, param, code);
}

/// <summary>The fields of a chat or completion request that the server reads.</summary>
internal sealed class GenerationRequest
{
    public string? Model { get; set; }

    public List<ChatMessage> Messages { get; } = [];

    public string? Prompt { get; set; }

    public ChatOptions Options { get; } = new();

    public bool Stream { get; set; }

    public bool IncludeUsage { get; set; }

    /// <summary>Parses a <c>/v1/chat/completions</c> body (<paramref name="chat"/>) or a <c>/v1/completions</c> body.</summary>
    public static GenerationRequest Parse(JsonElement root, bool chat, ChatServerOptions limits)
    {
        if (root.ValueKind != JsonValueKind.Object)
            throw OpenAiException.BadRequest($"The request body is a JSON {Kind(root)}; expected an object.");
        var request = new GenerationRequest();
        foreach (var property in root.EnumerateObject())
        {
            var value = property.Value;
            switch (property.Name)
            {
                case "model":
                    request.Model = String(value, "model");
                    break;
                case "messages" when chat:
                    ReadMessages(value, request.Messages);
                    break;
                case "prompt" when !chat:
                    request.Prompt = ReadPrompt(value);
                    break;
                case "max_tokens":
                case "max_completion_tokens":
                    if (value.ValueKind != JsonValueKind.Null)
                    {
                        int max = Int(value, property.Name);
                        if (max < 1 || max > limits.MaxTokens)
                            throw OpenAiException.BadRequest(Invariant($"{property.Name} is {max}; this server generates 1 to {limits.MaxTokens} tokens per request."), property.Name);
                        request.Options.MaxOutputTokens = max;
                    }
                    break;
                case "temperature":
                    request.Options.Temperature = OptionalFloat(value, "temperature", 0, 2);
                    break;
                case "top_p":
                    request.Options.TopP = OptionalFloat(value, "top_p", 0, 1);
                    if (request.Options.TopP == 0)
                        throw OpenAiException.BadRequest("top_p is 0; expected a number in (0, 1].", "top_p");
                    break;
                case "top_k":
                    if (value.ValueKind != JsonValueKind.Null)
                    {
                        int k = Int(value, "top_k");
                        if (k < 0)
                            throw OpenAiException.BadRequest(Invariant($"top_k is {k}; expected 0 (off) or more."), "top_k");
                        request.Options.TopK = k;
                    }
                    break;
                case "frequency_penalty":
                case "presence_penalty":
                    {
                        float? penalty = OptionalFloat(value, property.Name, -2, 2);
                        if (penalty is { } p && p != 0)
                            throw OpenAiException.BadRequest(Invariant($"{property.Name} is {p}; this server supports 0 only."), property.Name);
                        break;
                    }
                case "seed":
                    if (value.ValueKind != JsonValueKind.Null)
                        request.Options.Seed = Int(value, "seed");
                    break;
                case "stop":
                    ReadStop(value, request.Options);
                    break;
                case "n":
                    if (value.ValueKind != JsonValueKind.Null && Int(value, "n") != 1)
                        throw OpenAiException.BadRequest($"n is {value.GetRawText()}; this server returns 1 choice per request.", "n");
                    break;
                case "stream":
                    request.Stream = value.ValueKind switch
                    {
                        JsonValueKind.True => true,
                        JsonValueKind.False or JsonValueKind.Null => false,
                        _ => throw OpenAiException.BadRequest($"stream is a JSON {Kind(value)}; expected true or false.", "stream"),
                    };
                    break;
                case "stream_options":
                    if (value.ValueKind == JsonValueKind.Object && value.TryGetProperty("include_usage", out var usage))
                        request.IncludeUsage = usage.ValueKind == JsonValueKind.True;
                    break;
                case "response_format" when value.ValueKind == JsonValueKind.Object && value.TryGetProperty("type", out var format) && format.GetString() != "text":
                    throw OpenAiException.BadRequest($"response_format type '{format.GetString()}' is not supported by this server; it generates free text.", "response_format");
                case "tools" when value.ValueKind == JsonValueKind.Array && value.GetArrayLength() > 0:
                    throw OpenAiException.BadRequest("tools are not supported by this server.", "tools");
                case "echo" when value.ValueKind == JsonValueKind.True:
                case "logprobs" when value.ValueKind is JsonValueKind.True or JsonValueKind.Number:
                case "best_of" when value.ValueKind == JsonValueKind.Number && value.GetRawText() != "1":
                case "suffix" when value.ValueKind == JsonValueKind.String:
                    throw OpenAiException.BadRequest($"{property.Name} is not supported by this server.", property.Name);
                default:
                    break;   // other OpenAI fields (user, metadata, logit_bias {}...) do not change generation here
            }
        }
        if (chat && request.Messages.Count == 0)
            throw OpenAiException.BadRequest(root.TryGetProperty("messages", out _) ? "messages is empty; give at least one message." : "messages is required.", "messages");
        if (!chat && request.Prompt is null)
            throw OpenAiException.BadRequest("prompt is required.", "prompt");
        request.Options.MaxOutputTokens ??= chat ? limits.DefaultChatMaxTokens : limits.DefaultCompletionMaxTokens;
        return request;
    }

    private static void ReadMessages(JsonElement value, List<ChatMessage> messages)
    {
        if (value.ValueKind != JsonValueKind.Array)
            throw OpenAiException.BadRequest($"messages is a JSON {Kind(value)}; expected an array of messages.", "messages");
        int i = 0;
        foreach (var message in value.EnumerateArray())
        {
            string at = Invariant($"messages[{i}]");
            if (message.ValueKind != JsonValueKind.Object)
                throw OpenAiException.BadRequest($"{at} is a JSON {Kind(message)}; expected an object with role and content.", at);
            if (!message.TryGetProperty("role", out var roleValue))
                throw OpenAiException.BadRequest($"{at}.role is required.", at + ".role");
            string role = String(roleValue, at + ".role") ?? throw OpenAiException.BadRequest($"{at}.role is null.", at + ".role");
            if (role == "developer")
                role = ChatRoles.System;   // OpenAI's newer name for system instructions
            string content = message.TryGetProperty("content", out var contentValue) ? Content(contentValue, at + ".content") : "";
            messages.Add(new ChatMessage(new ChatRole(role), content));
            i++;
        }
    }

    // A message's content: a string, or an array of text parts.
    private static string Content(JsonElement value, string name)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.String:
                return value.GetString()!;
            case JsonValueKind.Null:
                return "";
            case JsonValueKind.Array:
                var text = new StringBuilder();
                int i = 0;
                foreach (var part in value.EnumerateArray())
                {
                    string at = Invariant($"{name}[{i++}]");
                    if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
                        throw OpenAiException.BadRequest($"{at} is not a content part with a type.", at);
                    if (type.GetString() != "text" || !part.TryGetProperty("text", out var partText) || partText.ValueKind != JsonValueKind.String)
                        throw OpenAiException.BadRequest($"{at} has type '{type.GetString()}'; this server accepts text parts only.", at);
                    text.Append(partText.GetString());
                }
                return text.ToString();
            default:
                throw OpenAiException.BadRequest($"{name} is a JSON {Kind(value)}; expected a string or an array of text parts.", name);
        }
    }

    private static string ReadPrompt(JsonElement value)
    {
        if (value.ValueKind == JsonValueKind.String)
            return value.GetString()!;
        if (value.ValueKind == JsonValueKind.Array && value.GetArrayLength() == 1 && value[0].ValueKind == JsonValueKind.String)
            return value[0].GetString()!;
        throw OpenAiException.BadRequest($"prompt is a JSON {Kind(value)}{(value.ValueKind == JsonValueKind.Array ? Invariant($" of {value.GetArrayLength()} items") : "")}; this server accepts one prompt string per request.", "prompt");
    }

    private static void ReadStop(JsonElement value, ChatOptions options)
    {
        var stops = new List<string>();
        switch (value.ValueKind)
        {
            case JsonValueKind.Null:
                return;
            case JsonValueKind.String:
                stops.Add(value.GetString()!);
                break;
            case JsonValueKind.Array:
                foreach (var stop in value.EnumerateArray())
                {
                    if (stop.ValueKind != JsonValueKind.String)
                        throw OpenAiException.BadRequest($"stop holds a JSON {Kind(stop)}; expected strings.", "stop");
                    stops.Add(stop.GetString()!);
                }
                if (stops.Count > 4)
                    throw OpenAiException.BadRequest(Invariant($"stop holds {stops.Count} sequences; expected at most 4."), "stop");
                break;
            default:
                throw OpenAiException.BadRequest($"stop is a JSON {Kind(value)}; expected a string or an array of up to 4 strings.", "stop");
        }
        if (stops.Any(string.IsNullOrEmpty))
            throw OpenAiException.BadRequest("stop holds an empty string; expected non-empty sequences.", "stop");
        options.StopSequences = stops;
    }

    private static string? String(JsonElement value, string name) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Null => null,
        _ => throw OpenAiException.BadRequest($"{name} is a JSON {Kind(value)}; expected a string.", name),
    };

    private static int Int(JsonElement value, string name)
    {
        if (value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int result))
            return result;
        throw OpenAiException.BadRequest($"{name} is {Shown(value)}; expected a 32-bit integer.", name);
    }

    private static float? OptionalFloat(JsonElement value, string name, float min, float max)
    {
        if (value.ValueKind == JsonValueKind.Null)
            return null;
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetDouble(out double number))
            throw OpenAiException.BadRequest($"{name} is {Shown(value)}; expected a number from {Invariant($"{min}")} to {Invariant($"{max}")}.", name);
        if (number < min || number > max)
            throw OpenAiException.BadRequest(Invariant($"{name} is {number}; expected a number from {min} to {max}."), name);
        return (float)number;
    }

    private static string Shown(JsonElement value) => value.ValueKind == JsonValueKind.String ? $"the string \"{value.GetString()}\"" : value.GetRawText();

    private static string Kind(JsonElement value) => value.ValueKind.ToString().ToLowerInvariant();

    private static string Invariant(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
