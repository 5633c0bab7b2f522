// Server overhead at one client: the same greedy generation timed as a direct call and as an HTTP request to
// samples/ChatServer on the loopback interface (same process, same model zip, loaded twice), interleaved request by
// request (alternating which goes first) so that the machine's load affects both alike. Three pairs: TextGenerator.Generate vs POST /v1/completions,
// LlmChatClient.GetResponseAsync vs POST /v1/chat/completions, and the streaming versions (server-sent events).
// The model is Shakespeare-char shaped (4 layers, 4 heads, 128 wide; context 256) over bytes, or has GPT-2 124M's body
// (third argument "gpt2"), randomly initialised: generation costs the same as a trained one's, and greedy decoding with
// no end-of-text runs exactly the asked tokens.
// Then throughput under load: 1 and 8 concurrent clients, each sending its requests one after another to
// POST /v1/completions (different prompts, the same token count), side by side: total generated tokens/s, per-request
// latency, and how the server's GenerationBatcher grouped them (requests per batch: with requests joining a running
// batch, more than its row bound). Fourth argument: requests per
// client (default 4).
using System.Diagnostics;
using System.Net.Http.Json;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.ML;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Samples.ChatServer;
using TorchSharp;

int requests = args.Length > 0 ? int.Parse(args[0]) : 20;
int newTokens = args.Length > 1 ? int.Parse(args[1]) : 64;
// Third argument "gpt2": a GPT-2 124M-bodied model (12 layers, 12 heads, 768 wide, context 512; byte vocabulary).
bool gpt2 = args.Length > 2 && args[2] == "gpt2";
int perClient = args.Length > 3 ? int.Parse(args[3]) : 4;
const string Prompt = "ROMEO: But soft, what light thro";
Console.WriteLine($"Machine: {RuntimeInformation.OSDescription}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}, " +
    $"torch threads {torch.get_num_threads()}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at start");

string root = Path.Combine(Path.GetTempPath(), "chat-serving-" + Guid.NewGuid().ToString("N"));
Directory.CreateDirectory(root);
string zip = Path.Combine(root, "model.zip");
var ml = new MLContext(0);
torch.manual_seed(1);
// Bytes for both (a model zip needs a tokenizer it can save; tiktoken's cannot go through the Hugging Face layout used
// here): the GPT-2 row has GPT-2's body with a 257-entry output layer instead of 50257 (about 70 % of its per-token work).
var tokenizer = LmTokenizer.Bytes();
var config = gpt2 ? GptConfig.Gpt2Small(tokenizer.VocabularySize, 512) : GptConfig.ShakespeareChar(tokenizer.VocabularySize) with { ContextLength = 256 };
Console.WriteLine($"Model: {(gpt2 ? "GPT-2 124M body" : "Shakespeare-char shape")} ({config.LayerCount} layers, {config.HeadCount} heads, {config.EmbeddingSize} wide, vocabulary {config.VocabularySize}, context {config.ContextLength}), random weights");
using (var model = new GptModel(config))
    HuggingFaceCheckpoint.Save(model, tokenizer, Path.Combine(root, "hf"));
using (var lm = ml.Llm().LoadHuggingFace(Path.Combine(root, "hf")))
    ml.Model.Save(lm, null, zip);

await using var app = ChatServerApp.Build(new ChatServerOptions
{
    ModelPath = zip,
    ModelId = "bench",
    Urls = "http://127.0.0.1:0",
    MaxTokens = newTokens,
    DefaultChatMaxTokens = Math.Min(newTokens, ChatServerOptions.Defaults.DefaultChatMaxTokens),
    DefaultCompletionMaxTokens = Math.Min(newTokens, ChatServerOptions.Defaults.DefaultCompletionMaxTokens),
}, ["--Logging:LogLevel:Default=Warning"]);
await app.StartAsync();
using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };

var generator = ml.Llm().CreateGenerator(ml.Model.Load(zip, out _));
using var chat = new LlmChatClient(generator, new LlmChatClientOptions { ModelId = "bench" });   // as the server's chat client
// The chat clients (direct and the server's) stop at end-of-text; the direct generator is told the same.
int[] eos = tokenizer.EndOfTextId is { } id ? [id] : [];
var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = newTokens, EosTokenIds = eos };
var chatOptions = new ChatOptions { Temperature = 0, MaxOutputTokens = newTokens };
ChatMessage[] messages = [new(ChatRole.User, Prompt)];
string completionBody = JsonSerializer.Serialize(new { model = "bench", prompt = Prompt, max_tokens = newTokens, temperature = 0 });
string chatBody = JsonSerializer.Serialize(new { model = "bench", messages = new[] { new { role = "user", content = Prompt } }, max_tokens = newTokens, temperature = 0, stop = Array.Empty<string>() });
string streamBody = JsonSerializer.Serialize(new { model = "bench", messages = new[] { new { role = "user", content = Prompt } }, max_tokens = newTokens, temperature = 0, stream = true });

var oneToken = new GenerationOptions { DoSample = false, MaxNewTokens = 1, EosTokenIds = eos };
string oneTokenBody = JsonSerializer.Serialize(new { model = "bench", prompt = Prompt, max_tokens = 1, temperature = 0 });
var pairs = new (string Name, Func<Task<string>> Direct, Func<Task<string>> Server)[]
{
    ("fixed cost, 1 new token: TextGenerator.Generate vs POST /v1/completions",
        () => Task.FromResult(generator.Generate(Prompt, oneToken)),
        async () => (await PostJson("/v1/completions", oneTokenBody)).GetProperty("choices")[0].GetProperty("text").GetString()!),
    ("completion: TextGenerator.Generate vs POST /v1/completions",
        () => Task.FromResult(generator.Generate(Prompt, greedy)),
        async () => (await PostJson("/v1/completions", completionBody)).GetProperty("choices")[0].GetProperty("text").GetString()!),
    ("chat: LlmChatClient.GetResponseAsync vs POST /v1/chat/completions",
        async () => (await chat.GetResponseAsync(messages, chatOptions)).Text,
        async () => (await PostJson("/v1/chat/completions", chatBody)).GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!),
    ("chat streaming: GetStreamingResponseAsync vs stream: true (SSE, until [DONE])",
        async () =>
        {
            var text = new StringBuilder();
            await foreach (var update in chat.GetStreamingResponseAsync(messages, chatOptions))
                text.Append(update.Text);
            return text.ToString();
        },
        () => PostStream("/v1/chat/completions", streamBody)),
};

Console.WriteLine($"Prompt {Prompt.Length} bytes, {newTokens} new tokens per request (greedy) unless the row says otherwise, {requests} timed requests per row after 3 warm-up pairs.");
Console.WriteLine();
Console.WriteLine("| path | direct mean ms | server mean ms | direct median ms | server median ms | overhead (mean) | overhead (median) | median difference ms |");
Console.WriteLine("|---|---|---|---|---|---|---|---|");
foreach (var (name, direct, server) in pairs)
{
    for (int i = 0; i < 3; i++)
    {
        string a = await direct();
        string b = await server();
        if (a != b)
            throw new InvalidOperationException($"{name}: the server's text differs from the direct call's:\n{a}\n---\n{b}");
    }
    var directMs = new List<double>();
    var serverMs = new List<double>();
    for (int i = 0; i < requests; i++)
    {
        // Alternate which goes first, so that neither always follows the other.
        if (i % 2 == 0)
        {
            directMs.Add(await Time(direct));
            serverMs.Add(await Time(server));
        }
        else
        {
            serverMs.Add(await Time(server));
            directMs.Add(await Time(direct));
        }
    }
    double dMean = directMs.Average(), sMean = serverMs.Average(), dMed = Median(directMs), sMed = Median(serverMs);
    Console.WriteLine($"| {name} | {dMean:F1} | {sMean:F1} | {dMed:F1} | {sMed:F1} | {(sMean / dMean - 1) * 100:+0.0;-0.0}% | {(sMed / dMed - 1) * 100:+0.0;-0.0}% | {sMed - dMed:+0.00;-0.00} |");
}
Console.WriteLine();

// Throughput: N clients, each sending perClient requests in turn; every text is checked against the direct call.
string[] prompts = ["ROMEO: But soft, what light thro", "JULIET: O Romeo, Romeo! wherefore", "HAMLET: To be, or not to be, th", "MACBETH: Is this a dagger which",
    "LEAR: Blow, winds, and crack your", "PORTIA: The quality of mercy is", "PROSPERO: We are such stuff as d", "OTHELLO: Speak of me as I am; no"];
var expectedText = prompts.ToDictionary(p => p, p => generator.Generate(p, greedy));
var batcher = app.Services.GetRequiredService<GenerationBatcher>();
Console.WriteLine($"Throughput through the server (POST /v1/completions, greedy, {newTokens} new tokens, {perClient} requests per client, server batch bound {batcher.MaxBatchSize}):");
Console.WriteLine();
Console.WriteLine("| clients | requests | generated tokens | wall s | tokens/s (total) | latency mean ms | latency median ms | latency max ms | requests per batch (mean) | tokens/s vs 1 client |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
double single = 0;
foreach (int clients in (int[])[1, 8])
{
    await Task.WhenAll(Enumerable.Range(0, clients).Select(c => Complete(prompts[c % prompts.Length])));   // warm-up round
    long batchesBefore = batcher.BatchCount, rowsBefore = batcher.RequestCount;
    var latencies = new System.Collections.Concurrent.ConcurrentBag<double>();
    long tokens = 0;
    var wall = Stopwatch.StartNew();
    await Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
    {
        for (int r = 0; r < perClient; r++)
        {
            string prompt = prompts[(c + r) % prompts.Length];
            var clock = Stopwatch.StartNew();
            var (text, count) = await Complete(prompt);
            latencies.Add(clock.Elapsed.TotalMilliseconds);
            Interlocked.Add(ref tokens, count);
            if (text != expectedText[prompt])
                throw new InvalidOperationException($"{clients} clients: the server's text for '{prompt}' differs from the direct call's:\n{text}\n---\n{expectedText[prompt]}");
        }
    }));
    double seconds = wall.Elapsed.TotalSeconds, rate = tokens / seconds;
    if (clients == 1)
        single = rate;
    var sorted = latencies.Order().ToList();
    double rows = (double)(batcher.RequestCount - rowsBefore) / Math.Max(1, batcher.BatchCount - batchesBefore);
    Console.WriteLine($"| {clients} | {sorted.Count} | {tokens} | {seconds:F2} | {rate:F1} | {sorted.Average():F1} | {Median(sorted):F1} | {sorted[^1]:F1} | {rows:F2} | {rate / single:F2}x |");
}

{
    // The library's own batch, no server: the 8 prompts in one TextGenerator.Generate call, perClient times.
    generator.Generate(prompts, greedy);
    var wall = Stopwatch.StartNew();
    long tokens = 0;
    for (int r = 0; r < perClient; r++)
        tokens += generator.GenerateTokens(prompts.Select(p => tokenizer.Encode(p)).ToArray(), greedy).Sum(t => t.Length);
    double seconds = wall.Elapsed.TotalSeconds;
    Console.WriteLine($"| direct: TextGenerator of 8 prompts in one batch, no server | {8 * perClient} | {tokens} | {seconds:F2} | {tokens / seconds:F1} | {seconds * 1000 / perClient:F1} | | | 8.00 | {tokens / seconds / single:F2}x |");
}

Console.WriteLine();
Console.WriteLine($"Load average at end: {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
await app.StopAsync();
Directory.Delete(root, recursive: true);

async Task<JsonElement> PostJson(string path, string body)
{
    using var content = new StringContent(body, Encoding.UTF8, "application/json");
    using var response = await http.PostAsync(path, content);
    response.EnsureSuccessStatusCode();
    return (await response.Content.ReadFromJsonAsync<JsonElement>()).Clone();
}

async Task<(string Text, int Tokens)> Complete(string prompt)
{
    string body = JsonSerializer.Serialize(new { model = "bench", prompt, max_tokens = newTokens, temperature = 0 });
    var json = await PostJson("/v1/completions", body);
    return (json.GetProperty("choices")[0].GetProperty("text").GetString()!, json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
}

async Task<string> PostStream(string path, string body)
{
    using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
    response.EnsureSuccessStatusCode();
    using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
    var text = new StringBuilder();
    while (await reader.ReadLineAsync() is { } line)
    {
        if (!line.StartsWith("data: ", StringComparison.Ordinal))
            continue;
        if (line == "data: [DONE]")
            break;
        using var chunk = JsonDocument.Parse(line["data: ".Length..]);
        var choices = chunk.RootElement.GetProperty("choices");
        if (choices.GetArrayLength() > 0 && choices[0].GetProperty("delta").TryGetProperty("content", out var piece))
            text.Append(piece.GetString());
    }
    return text.ToString();
}

static async Task<double> Time(Func<Task<string>> call)
{
    var clock = Stopwatch.StartNew();
    await call();
    return clock.Elapsed.TotalMilliseconds;
}

static double Median(List<double> values)
{
    var sorted = values.Order().ToList();
    return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
}
