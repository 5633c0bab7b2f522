using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Serves concurrent generation requests over one <see cref="TextGenerator"/> by decoding them together: callers
/// (each with its own prompt, <see cref="GenerationOptions"/> and cancellation, streaming or not) queue while the model
/// is busy, and when it frees, up to <see cref="GenerationBatcherOptions.MaxBatchSize"/> of them run as the rows of
/// one batch (left padding, a key mask, per-row positions, one KV cache). Thread-safe; create one per model and share it.
/// </summary>
/// <remarks>
/// <para>
/// Every row keeps its own options: its logits processors, temperature, top-k/top-p/min-p, its own random generator
/// (seeded with its <see cref="GenerationOptions.Seed"/>), its token limit, end-of-sequence ids and stop strings. A row
/// that ends (end of sequence, its limit, a stop string, a full context with <see cref="ContextOverflow.Stop"/>), is
/// cancelled or whose stream is disposed leaves the batch at the next token; the others go on. Each row computes what it
/// would compute alone, so greedy and seeded sampled completions are the ones <see cref="TextGenerator.Generate(string, GenerationOptions?)"/>
/// returns for the same prompt and options (up to floating-point rounding of the batched matrix products, which moves
/// a logit by ~1e-6).
/// </para>
/// <para>
/// Requests that arrive while a batch runs join it between two tokens while it has fewer than
/// <see cref="GenerationBatcherOptions.MaxBatchSize"/> rows (<see cref="GenerationBatcherOptions.JoinRunningBatch"/>):
/// their prompts are prefilled on their own and their cached keys and values join the batch's behind left padding, so
/// a new request need not wait for the longest running one. Requests that cannot share a batch (beam search, several
/// return sequences) run alone, in their turn; cancelling one stops it within one token, as a batch's row. Streams
/// receive each token's text as it is decoded, in complete UTF-8 characters, held back while it may be the start of a
/// stop string (as <see cref="TextGenerator.GenerateStreamingAsync"/>).
/// </para>
/// <para>
/// One forward pass at a time per model: batchers (and <see cref="LlmChatClient"/>s) over the same trained model take
/// turns. Decoding runs on one thread per batcher, started by the first request and ended after two idle seconds.
/// </para>
/// </remarks>
public sealed class GenerationBatcher : IDisposable
{
    // One gate per model: batchers over the same weights never run two forward passes at once.
    private static readonly ConditionalWeakTable<GptModel, SemaphoreSlim> Gates = new();

    // The batcher shared by the chat clients of one model that were not given their own.
    private static readonly ConditionalWeakTable<GptModel, GenerationBatcher> SharedBatchers = new();

    private readonly TextGenerator _generator;
    private readonly GenerationBatcherOptions _options;
    private readonly Channel<Request> _queue;
    private readonly SemaphoreSlim _gate;
    private readonly CancellationTokenSource _disposed = new();
    private readonly object _workerLock = new();
    private Thread? _worker;                 // the decoding thread while there is work (it ends after an idle spell)
    private int _largestBatch;
    private long _batchCount;
    private long _rowCount;
    private long _stepCount;

    /// <summary>A batcher over <paramref name="generator"/> (its model, tokenizer and prompt transforms).</summary>
    /// <param name="generator">The generator (from <c>mlContext.Llm().CreateGenerator(model)</c>).</param>
    /// <param name="options">Batch and queue bounds; null for the defaults.</param>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range (names it, its value and the range).</exception>
    public GenerationBatcher(TextGenerator generator, GenerationBatcherOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(generator);
        _options = (options ?? new GenerationBatcherOptions()).Clone();
        _options.Validate();
        _generator = generator;
        _gate = Gates.GetValue(generator.Model, _ => new SemaphoreSlim(1, 1));
        _queue = Channel.CreateBounded<Request>(new BoundedChannelOptions(_options.MaxQueueLength)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    /// <summary>The generator whose model, tokenizer and prompt transforms serve the requests.</summary>
    public TextGenerator Generator => _generator;

    /// <summary>The most requests decoded together.</summary>
    public int MaxBatchSize => _options.MaxBatchSize;

    /// <summary>The most requests waiting for the model.</summary>
    public int MaxQueueLength => _options.MaxQueueLength;

    /// <summary>Requests waiting for the model now (not counting those in the running batch).</summary>
    public int QueueLength => _queue.Reader.Count;

    /// <summary>The most rows any batch has had so far (never above <see cref="MaxBatchSize"/>).</summary>
    public int LargestBatch => Volatile.Read(ref _largestBatch);

    /// <summary>How many batches have run (a request that runs alone counts as a batch of one).</summary>
    public long BatchCount => Interlocked.Read(ref _batchCount);

    /// <summary>How many requests have been decoded (rows over all batches).</summary>
    public long RequestCount => Interlocked.Read(ref _rowCount);

    /// <summary>
    /// How many decoding steps have run over all batches: each gives every row of its batch (every beam of a beam search
    /// running alone) its next token. A cancelled request stops costing steps within one token.
    /// </summary>
    public long StepCount => Interlocked.Read(ref _stepCount);

    /// <summary>
    /// The batcher shared by every <see cref="LlmChatClient"/> over <paramref name="generator"/>'s model that was not
    /// given one: created with the default options on first use and kept as long as the model.
    /// </summary>
    internal static GenerationBatcher Shared(TextGenerator generator) =>
        SharedBatchers.GetValue(generator.Model, _ => new GenerationBatcher(generator));

    /// <summary>
    /// Generates a completion of <paramref name="prompt"/> in the next batch; the same text as
    /// <see cref="TextGenerator.Generate(string, GenerationOptions?)"/> (for beam search or several return sequences,
    /// which run alone, the best one).
    /// </summary>
    /// <exception cref="ArgumentException">The prompt or an option is invalid (names it and the accepted values).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled: the request left its batch.</exception>
    public async Task<string> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options = (options ?? new GenerationOptions()).Clone();
        options.Validate();
        if (options.NumBeams > 1 || options.NumReturnSequences > 1)
        {
            var solo = new Request(null, options, _generator.Tokenizer, cancellationToken, _disposed.Token, null) { SoloPrompt = prompt };
            await EnqueueAsync(solo, cancellationToken).ConfigureAwait(false);
            return await ReadAllAsync(solo, cancellationToken).ConfigureAwait(false);
        }

        var request = NewRequest(_generator.EncodePrompt(prompt, options), options, _generator.Tokenizer, whole: true, cancellationToken);
        await EnqueueAsync(request, cancellationToken).ConfigureAwait(false);
        return await ReadAllAsync(request, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Generates a completion in the next batch as an asynchronous stream of text pieces, each made of complete UTF-8
    /// characters, yielded as their tokens are decoded; they concatenate to <see cref="GenerateAsync"/>'s result.
    /// Cancelling <paramref name="cancellationToken"/> or disposing the enumerator takes the request out of its batch.
    /// </summary>
    /// <exception cref="ArgumentException">Beam search or several return sequences (their text is known only at the end), or an invalid prompt or option.</exception>
    public async IAsyncEnumerable<string> GenerateStreamingAsync(string prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        options = (options ?? new GenerationOptions()).Clone();
        options.Validate();
        if (options.NumBeams > 1 || options.NumReturnSequences > 1)
        {
            throw new ArgumentException(
                $"Streaming yields one completion as it is generated; GenerationOptions.NumBeams is {options.NumBeams} and NumReturnSequences {options.NumReturnSequences} (both must be 1). Call GenerateAsync for beam search or several sequences.",
                nameof(options));
        }

        await foreach (var piece in StreamAsync(_generator.EncodePrompt(prompt, options), options, _generator.Tokenizer, whole: false, cancellationToken).ConfigureAwait(false))
        {
            if (piece.Text.Length > 0)
            {
                yield return piece.Text;
            }
        }
    }

    /// <summary>
    /// The pieces of one request over prepared prompt tokens: one per generated token (its id and the text it
    /// completed, possibly empty), then, unless a stop string ended it, one with token −1 and the held-back rest.
    /// <paramref name="options"/> must be validated, with one beam and one return sequence; it is not copied.
    /// <paramref name="whole"/>: the caller reads every piece as soon as it can (a whole response, not a stream to a
    /// client), so its pieces are never held back by <see cref="GenerationBatcherOptions.StreamBufferSize"/>.
    /// </summary>
    internal async IAsyncEnumerable<GeneratedPiece> StreamAsync(int[] prompt, GenerationOptions options, LmTokenizer tokenizer, bool whole,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = NewRequest(prompt, options, tokenizer, whole, cancellationToken);
        try
        {
            await EnqueueAsync(request, cancellationToken).ConfigureAwait(false);
            var reader = request.Output.Reader;
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (!reader.TryRead(out var piece))
                {
                    if (!await reader.WaitToReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        break;
                    }

                    continue;
                }

                yield return piece;
            }

            await request.Output.Reader.Completion.ConfigureAwait(false);   // rethrows the batch's failure, if any
        }
        finally
        {
            request.Abandon();
        }
    }

    /// <summary>Stops the worker; requests waiting or running end with <see cref="OperationCanceledException"/>.</summary>
    public void Dispose()
    {
        if (_disposed.IsCancellationRequested)
        {
            return;
        }

        _queue.Writer.TryComplete();
        _disposed.Cancel();
        Thread? worker;
        lock (_workerLock)
        {
            worker = _worker;
        }

        if (worker is not null && worker != Thread.CurrentThread)
        {
            worker.Join(TimeSpan.FromSeconds(30));
        }

        while (_queue.Reader.TryRead(out var left))
        {
            left.End(new OperationCanceledException(_disposed.Token));
        }
    }

    private Request NewRequest(int[] prompt, GenerationOptions options, LmTokenizer tokenizer, bool whole, CancellationToken cancellationToken)
    {
        var prepared = Decoding.PreparePrompt(_generator.Model, prompt, options, nameof(prompt));
        return new Request(prepared, options, tokenizer, cancellationToken, _disposed.Token, whole ? null : _options.StreamBufferSize);
    }

    private async Task EnqueueAsync(Request request, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
        if (!_queue.Writer.TryWrite(request))
        {
            try
            {
                await _queue.Writer.WriteAsync(request, cancellationToken).ConfigureAwait(false);
            }
            catch (ChannelClosedException)
            {
                throw new ObjectDisposedException(nameof(GenerationBatcher));
            }
        }

        EnsureWorker();
    }

    // Starts the decoding thread unless it runs. One thread (not thread-pool continuations) calls into libtorch, so the
    // forward passes keep one OpenMP team; it ends after IdleMilliseconds without requests, so an unused batcher holds
    // no thread and its model can be collected.
    private void EnsureWorker()
    {
        lock (_workerLock)
        {
            if (_worker is not null || _disposed.IsCancellationRequested)
            {
                return;
            }

            _worker = new Thread(Work) { IsBackground = true, Name = nameof(GenerationBatcher) };
            _worker.Start();
        }
    }

    private static async Task<string> ReadAllAsync(Request request, CancellationToken cancellationToken)
    {
        try
        {
            var text = new StringBuilder();
            await foreach (var piece in request.Output.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                text.Append(piece.Text);
            }

            await request.Output.Reader.Completion.ConfigureAwait(false);
            return text.ToString();
        }
        finally
        {
            request.Abandon();
        }
    }

    private const int IdleMilliseconds = 2000;

    // The worker: takes what waits when the model frees (after a short wait for the callers of the last batch to
    // come back), runs it as one batch, repeats; leaves after an idle spell.
    private void Work()
    {
        var pending = new List<Request>();
        int lastBatch = 0;
        var reader = _queue.Reader;
        while (true)
        {
            if (pending.Count == 0 && !WaitForRequest(IdleMilliseconds))
            {
                lock (_workerLock)
                {
                    // Nothing came during the idle spell: end, unless a request slipped in meanwhile.
                    if (reader.Count == 0 || _disposed.IsCancellationRequested)
                    {
                        _worker = null;
                        break;
                    }
                }

                continue;
            }

            Drain(pending);
            int expected = Math.Min(lastBatch, _options.MaxBatchSize);
            if (pending.Count < expected && _options.MaxBatchWaitMilliseconds > 0)
            {
                var clock = Stopwatch.StartNew();
                while (pending.Count < expected)
                {
                    int left = _options.MaxBatchWaitMilliseconds - (int)clock.ElapsedMilliseconds;
                    if (left <= 0 || !WaitForRequest(left))
                    {
                        break;
                    }

                    Drain(pending);
                }
            }

            // Requests cancelled while they waited never reach the model.
            pending.RemoveAll(r => r.TryEndIfCancelled());
            if (pending.Count == 0)
            {
                continue;
            }

            var batch = pending[0].Solo ? [pending[0]] : pending.Where(r => !r.Solo).Take(_options.MaxBatchSize).ToList();
            pending.RemoveAll(batch.Contains);
            lastBatch = batch.Count;
            InterlockedMax(ref _largestBatch, batch.Count);
            Interlocked.Increment(ref _batchCount);
            Interlocked.Add(ref _rowCount, batch.Count);
            try
            {
                _gate.Wait(_disposed.Token);
            }
            catch (OperationCanceledException)
            {
                batch.ForEach(r => r.End(new OperationCanceledException(_disposed.Token)));
                batch.ForEach(r => r.Dispose());
                continue;
            }

            try
            {
                // Requests cancelled while the model was busy elsewhere (another batcher over it) leave before the prefill.
                var rows = batch.Where(r => !r.TryEndIfCancelled()).ToList();
                if (rows.Count > 0 && rows[0].Solo)
                {
                    RunAlone(rows[0]);
                }
                else if (rows.Count > 0)
                {
                    RunBatch(rows, batch, pending);
                }
            }
            catch (Exception e)
            {
                // A failed forward pass (damaged weights, out of memory) fails its batch, not the batcher.
                batch.ForEach(r => r.End(e));
            }
            finally
            {
                _gate.Release();
                batch.ForEach(r => r.Dispose());
            }
        }

        foreach (var request in pending)
        {
            request.End(new OperationCanceledException(_disposed.Token));
            request.Dispose();
        }
    }

    // Blocks the worker until a request waits (true), the time passes or the batcher is disposed (false).
    private bool WaitForRequest(int milliseconds)
    {
        if (_queue.Reader.Count > 0)
        {
            return true;
        }

        using var wait = CancellationTokenSource.CreateLinkedTokenSource(_disposed.Token);
        wait.CancelAfter(milliseconds);
        try
        {
            return _queue.Reader.WaitToReadAsync(wait.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    private void Drain(List<Request> pending)
    {
        while (pending.Count < _options.MaxBatchSize && _queue.Reader.TryRead(out var request))
        {
            pending.Add(request);
        }
    }

    private void RunAlone(Request request)
    {
        if (request.TryEndIfCancelled())
        {
            return;
        }

        // The request's own token (its caller's, linked with the batcher's disposal): beam search checks it after
        // every step, so cancelling stops it within one token and frees the model for the requests behind it.
        string text;
        try
        {
            text = _generator.GenerateCancellably(request.SoloPrompt!, request.Options, request.Cancellation, () => Interlocked.Increment(ref _stepCount))[0];
        }
        catch (OperationCanceledException) when (request.Cancellation.IsCancellationRequested)
        {
            request.End(new OperationCanceledException(request.Cancellation));
            return;
        }

        request.Output.Writer.TryWrite(new GeneratedPiece(-1, text));
        request.End(null);
    }

    /// <summary>
    /// Decodes the rows of <paramref name="requests"/> together, as <see cref="Decoding.Sample"/> does for one set of
    /// options, but with each row's own options, random generator, limits and stops. Requests that arrive meanwhile join
    /// between two tokens while there is room (<see cref="GenerationBatcherOptions.JoinRunningBatch"/>); they are added
    /// to <paramref name="members"/> (which the worker ends and disposes), those that must run alone to <paramref name="pending"/>.
    /// </summary>
    private void RunBatch(List<Request> requests, List<Request> members, List<Request> pending)
    {
        var model = _generator.Model;
        int context = model.Config.ContextLength;
        using var batch = new DecodingBatch(model);
        int vocabulary = batch.Vocabulary;
        model.eval();
        var rows = requests;                                          // row r of the batch is rows[r]
        float[] logits = batch.Prefill(rows.Select(r => r.Sequence!.Window(context)).ToList());
        bool first = true;
        while (true)
        {
            if (!first && _options.JoinRunningBatch && rows.Count < _options.MaxBatchSize && _queue.Reader.Count > 0)
            {
                var joining = new List<Request>();
                while (rows.Count + joining.Count < _options.MaxBatchSize && _queue.Reader.TryRead(out var next))
                {
                    if (next.Solo)
                    {
                        pending.Add(next);                            // beam search and the like run alone, later
                        continue;
                    }

                    members.Add(next);
                    if (!next.TryEndIfCancelled())
                    {
                        joining.Add(next);
                    }
                }

                if (joining.Count > 0)
                {
                    // Their prompts run on their own, then their keys and values join the batch's cache.
                    using var fresh = new DecodingBatch(model);
                    float[] joined = fresh.Prefill(joining.Select(r => r.Sequence!.Window(context)).ToList());
                    batch.Join(fresh);
                    logits = [.. logits, .. joined];
                    rows = [.. rows, .. joining];
                    Interlocked.Add(ref _rowCount, joining.Count);
                    InterlockedMax(ref _largestBatch, rows.Count);
                }
            }

            first = false;
            Interlocked.Increment(ref _stepCount);
            var pieces = new string?[rows.Count];
            // Each row's next token, with its own options and generator.
            for (int r = 0; r < rows.Count; r++)
            {
                var request = rows[r];
                int token = Decoding.NextToken(request.Sequence!, logits.AsSpan(r * vocabulary, vocabulary), request.Options, request.Random);
                if (token < 0)
                {
                    continue;                                         // an end-of-sequence id
                }

                request.LastToken = token;
                pieces[r] = request.Text.Add(token);
                if (request.Text.Stopped)
                {
                    request.Sequence!.Finished = true;
                }
            }

            // Hand the pieces over (a full stream buffer waits for its reader), end finished and cancelled rows.
            var keep = new List<int>();
            for (int r = 0; r < rows.Count; r++)
            {
                var request = rows[r];
                if (pieces[r] is { } piece && !request.TryDeliver(new GeneratedPiece(request.LastToken, piece, request.Text.Stopped)))
                {
                    continue;                                         // cancelled or abandoned while its reader was away
                }

                if (request.TryEndIfCancelled())
                {
                    continue;
                }

                if (!request.Sequence!.Finished && request.Options.ContextOverflow == ContextOverflow.Stop && request.Sequence.History.Count > context)
                {
                    request.Sequence.Finished = true;                 // its own window is full (alone it would stop here too)
                }

                if (request.Sequence.Finished)
                {
                    Finish(request);
                    continue;
                }

                keep.Add(r);
            }

            if (keep.Count == 0)
            {
                return;
            }

            batch.Select(keep);                                       // finished rows stop costing compute
            rows = keep.Select(r => rows[r]).ToList();
            if (batch.Length + 1 > context)
            {
                // A row would pass the context (with its padding): run each row's last ContextLength tokens again from
                // position 0, which a row alone does when its own window slides.
                logits = batch.Prefill(rows.Select(r => r.Sequence!.Window(context)).ToList());
            }
            else
            {
                logits = batch.Step(rows.Select(r => r.LastToken).ToArray());
            }
        }
    }

    private static void Finish(Request request)
    {
        if (!request.Text.Stopped)
        {
            string rest = request.Text.Flush();
            if (rest.Length > 0 && !request.TryDeliver(new GeneratedPiece(-1, rest)))
            {
                return;
            }
        }

        request.End(null);
    }

    private static void InterlockedMax(ref int location, int value)
    {
        int current = Volatile.Read(ref location);
        while (value > current)
        {
            int seen = Interlocked.CompareExchange(ref location, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    /// <summary>One request: its sequence, options, random generator, text and output channel.</summary>
    private sealed class Request : IDisposable
    {
        private readonly CancellationTokenSource _cancellation;
        private Generator? _random;
        private int _ended;

        public Request(int[]? prompt, GenerationOptions options, LmTokenizer tokenizer, CancellationToken caller, CancellationToken disposed, int? buffer)
        {
            Sequence = prompt is null ? null : new GeneratedSequence(prompt);
            Options = options;
            Text = new CompletionText(tokenizer, options.StopStrings);
            _cancellation = CancellationTokenSource.CreateLinkedTokenSource(caller, disposed);
            // A whole response's pieces (at most MaxNewTokens + 1) are read as they come: no bound, the worker never waits.
            Output = buffer is { } capacity
                ? Channel.CreateBounded<GeneratedPiece>(new BoundedChannelOptions(capacity) { SingleReader = true, SingleWriter = true, FullMode = BoundedChannelFullMode.Wait })
                : Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        }

        public GeneratedSequence? Sequence { get; }

        public GenerationOptions Options { get; }

        public CompletionText Text { get; }

        public Channel<GeneratedPiece> Output { get; }

        public string? SoloPrompt { get; init; }

        /// <summary>Cancelled when the caller cancels, leaves (disposes its stream) or the batcher is disposed.</summary>
        public CancellationToken Cancellation => _cancellation.Token;

        public bool Solo => SoloPrompt is not null;

        public int LastToken { get; set; }

        /// <summary>The row's own generator, seeded as <see cref="TextGenerator"/> seeds one for a call alone.</summary>
        public Generator Random => _random ??= new Generator((ulong)(Options.Seed ?? System.Random.Shared.Next()));

        /// <summary>The reader stopped reading (its stream was disposed): the row leaves its batch.</summary>
        public void Abandon()
        {
            if (Volatile.Read(ref _ended) == 0)
            {
                try
                {
                    _cancellation.Cancel();
                }
                catch (ObjectDisposedException)
                {
                }
            }
        }

        /// <summary>Ends the request if its caller cancelled or left; true when it did (or it had ended).</summary>
        public bool TryEndIfCancelled()
        {
            if (Volatile.Read(ref _ended) != 0)
            {
                return true;
            }

            if (!_cancellation.IsCancellationRequested)
            {
                return false;
            }

            End(new OperationCanceledException(_cancellation.Token));
            return true;
        }

        /// <summary>Writes a piece, blocking the worker while the buffer is full; false (the request ended) when it is cancelled meanwhile.</summary>
        public bool TryDeliver(GeneratedPiece piece)
        {
            if (Output.Writer.TryWrite(piece))
            {
                return true;
            }

            try
            {
                Output.Writer.WriteAsync(piece, _cancellation.Token).AsTask().GetAwaiter().GetResult();
                return true;
            }
            catch (OperationCanceledException)
            {
                End(new OperationCanceledException(_cancellation.Token));
                return false;
            }
            catch (ChannelClosedException)
            {
                return false;
            }
        }

        /// <summary>Completes the output: normally (null) or with the failure the reader will see.</summary>
        public void End(Exception? error)
        {
            if (Interlocked.Exchange(ref _ended, 1) == 0)
            {
                Output.Writer.TryComplete(error);
            }
        }

        public void Dispose()
        {
            End(new OperationCanceledException("The request ended without a result."));
            _random?.Dispose();
            _cancellation.Dispose();
        }
    }
}

/// <summary>
/// What one decoding step gave a request: the token (−1: the text held back at the end), the text it completed, and
/// whether it completed a stop string (the request's last piece then).
/// </summary>
internal readonly record struct GeneratedPiece(int Token, string Text, bool Stopped = false);
