namespace Microsoft.ML.Llm.Samples.ChatServer;

/// <summary>
/// What the server serves and its limits. From the command line: <c>--model path.zip --model-id name --template chatml
/// --max-tokens 1024 --max-prompt-tokens 2048 --max-body-bytes 1048576 --timeout-seconds 300 --max-batch-size 8
/// --max-queue-length 256 --urls http://127.0.0.1:5000</c>.
/// </summary>
public sealed class ChatServerOptions
{
    /// <summary>The default value of every option, written once.</summary>
    public static class Defaults
    {
        public const string Urls = "http://127.0.0.1:5000";
        public const string Template = "default";
        public const int MaxTokens = 1024;
        public const int DefaultChatMaxTokens = 256;
        public const int DefaultCompletionMaxTokens = 16;   // OpenAI's default for /v1/completions
        public const int MaxPromptTokens = 2048;
        public const long MaxRequestBodyBytes = 1 << 20;
        public const int TimeoutSeconds = 300;
        public const int Seed = 0;
        public const int MaxBatchSize = GenerationBatcherOptions.Defaults.MaxBatchSize;
        public const int MaxQueueLength = GenerationBatcherOptions.Defaults.MaxQueueLength;
    }

    /// <summary>The model zip (<c>mlContext.Model.Save</c> of a chain ending in a CausalLmTransformer). Required unless <see cref="Model"/> is set.</summary>
    public string? ModelPath { get; set; }

    /// <summary>An already loaded model (tests, embedding); wins over <see cref="ModelPath"/>.</summary>
    public ITransformer? Model { get; set; }

    /// <summary>The name clients ask for in <c>model</c>; null: the zip's file name without extension.</summary>
    public string? ModelId { get; set; }

    /// <summary>The chat template: <c>default</c>, <c>chatml</c>, or a Hugging Face <c>tokenizer_config.json</c> (or its folder).</summary>
    public string Template { get; set; } = Defaults.Template;

    /// <summary>The addresses to listen on (port 0: any free port).</summary>
    public string Urls { get; set; } = Defaults.Urls;

    /// <summary>The largest <c>max_tokens</c> a request may ask for.</summary>
    public int MaxTokens { get; set; } = Defaults.MaxTokens;

    /// <summary>The tokens generated for a chat request that sets no <c>max_tokens</c>.</summary>
    public int DefaultChatMaxTokens { get; set; } = Defaults.DefaultChatMaxTokens;

    /// <summary>The tokens generated for a completion request that sets no <c>max_tokens</c>.</summary>
    public int DefaultCompletionMaxTokens { get; set; } = Defaults.DefaultCompletionMaxTokens;

    /// <summary>The longest prompt, in tokens, after the chat template.</summary>
    public int MaxPromptTokens { get; set; } = Defaults.MaxPromptTokens;

    /// <summary>The largest request body; larger ones get 413.</summary>
    public long MaxRequestBodyBytes { get; set; } = Defaults.MaxRequestBodyBytes;

    /// <summary>How long a request may wait for the model and generate, in seconds; longer ones get 408.</summary>
    public int TimeoutSeconds { get; set; } = Defaults.TimeoutSeconds;

    /// <summary>The MLContext seed (sampling without a request seed is unseeded anyway).</summary>
    public int Seed { get; set; } = Defaults.Seed;

    /// <summary>The most concurrent requests decoded together in one batch.</summary>
    public int MaxBatchSize { get; set; } = Defaults.MaxBatchSize;

    /// <summary>The most requests waiting for the model; more wait for room (and get 408 past <see cref="TimeoutSeconds"/>).</summary>
    public int MaxQueueLength { get; set; } = Defaults.MaxQueueLength;

    /// <summary>Checks the limits; throws naming the option and value.</summary>
    public void Validate()
    {
        if (Model is null && string.IsNullOrWhiteSpace(ModelPath))
            throw new ArgumentException("No model: give --model path/to/model.zip.");
        if (Model is null && !File.Exists(ModelPath))
            throw new FileNotFoundException($"The model zip '{ModelPath}' does not exist.", ModelPath);
        Positive(nameof(MaxTokens), MaxTokens);
        Positive(nameof(DefaultChatMaxTokens), DefaultChatMaxTokens);
        Positive(nameof(DefaultCompletionMaxTokens), DefaultCompletionMaxTokens);
        Positive(nameof(MaxPromptTokens), MaxPromptTokens);
        Positive(nameof(MaxRequestBodyBytes), MaxRequestBodyBytes);
        Positive(nameof(TimeoutSeconds), TimeoutSeconds);
        Positive(nameof(MaxBatchSize), MaxBatchSize);
        Positive(nameof(MaxQueueLength), MaxQueueLength);
        if (DefaultChatMaxTokens > MaxTokens || DefaultCompletionMaxTokens > MaxTokens)
            throw new ArgumentException($"The default max tokens ({DefaultChatMaxTokens} chat, {DefaultCompletionMaxTokens} completion) exceed MaxTokens {MaxTokens}.");

        static void Positive(string name, long value)
        {
            if (value < 1)
                throw new ArgumentOutOfRangeException(name, value, $"ChatServerOptions.{name} is {value}; expected a positive number.");
        }
    }
}
