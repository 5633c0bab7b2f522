using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>
/// How a <see cref="GenerationBatcher"/> groups concurrent requests: the most rows decoded together, the most requests
/// waiting, how long a freed model waits for the callers of its last batch to come back, and how far a stream may run
/// ahead of its reader.
/// </summary>
public sealed class GenerationBatcherOptions
{
    /// <summary>The default value of every option, written once.</summary>
    public static class Defaults
    {
        /// <summary>Rows decoded together in one batch.</summary>
        public const int MaxBatchSize = 8;

        /// <summary>Requests waiting for the model; more callers wait (asynchronously) for room.</summary>
        public const int MaxQueueLength = 256;

        /// <summary>Milliseconds a freed model waits for as many requests as its last batch had (0: start at once).</summary>
        public const int MaxBatchWaitMilliseconds = 5;

        /// <summary>Pieces a stream may have generated and not yet read before its batch waits for the reader.</summary>
        public const int StreamBufferSize = 4;

        /// <summary>Whether waiting requests join a running batch that has room.</summary>
        public const bool JoinRunningBatch = true;
    }

    /// <summary>
    /// The most requests decoded together in one batch (rows of one KV cache). More concurrent requests wait for the
    /// next batch.
    /// </summary>
    public int MaxBatchSize { get; set; } = Defaults.MaxBatchSize;

    /// <summary>
    /// The most requests waiting for the model. A caller beyond it waits, asynchronously and cancellably, for room in
    /// the queue, so memory stays bounded however many callers arrive.
    /// </summary>
    public int MaxQueueLength { get; set; } = Defaults.MaxQueueLength;

    /// <summary>
    /// When a batch ends with fewer requests waiting than it had rows, how long (milliseconds) the batcher waits for the
    /// others to come back before it starts the next batch with what it has: concurrent clients that send their next
    /// request as soon as the last one is answered then keep sharing one batch. A request that finds the model idle
    /// starts at once. 0 turns the wait off.
    /// </summary>
    public int MaxBatchWaitMilliseconds { get; set; } = Defaults.MaxBatchWaitMilliseconds;

    /// <summary>
    /// How many pieces a request's stream may hold unread before its batch waits for the reader: a reader that stops
    /// reading (a suspended stream, a slow network client) pauses its batch, as it held the model before batching,
    /// instead of buffering without bound; cancelling or disposing its stream lets the batch go on without it. Whole
    /// responses (<see cref="GenerationBatcher.GenerateAsync"/>, <c>LlmChatClient.GetResponseAsync</c>) are read as they
    /// come and never hold their batch.
    /// </summary>
    public int StreamBufferSize { get; set; } = Defaults.StreamBufferSize;

    /// <summary>
    /// Whether requests that arrive while a batch runs join it, between two tokens, when it has fewer than
    /// <see cref="MaxBatchSize"/> rows (their prompts are prefilled on their own, then their cached keys and values
    /// join the batch's behind left padding): a new request does not wait for the longest running one to end. Off:
    /// static batching, a batch runs until its last row ends.
    /// </summary>
    public bool JoinRunningBatch { get; set; } = Defaults.JoinRunningBatch;

    internal GenerationBatcherOptions Clone() => (GenerationBatcherOptions)MemberwiseClone();

    /// <summary>Checks every option; throws naming the option, its value and the accepted range.</summary>
    internal void Validate()
    {
        Check(nameof(MaxBatchSize), MaxBatchSize, 1);
        Check(nameof(MaxQueueLength), MaxQueueLength, 1);
        Check(nameof(MaxBatchWaitMilliseconds), MaxBatchWaitMilliseconds, 0);
        Check(nameof(StreamBufferSize), StreamBufferSize, 1);

        static void Check(string name, int value, int minimum)
        {
            if (value < minimum)
            {
                throw new ArgumentOutOfRangeException(name, Invariant($"GenerationBatcherOptions.{name} is {value}; expected an integer of at least {minimum}."));
            }
        }
    }
}
