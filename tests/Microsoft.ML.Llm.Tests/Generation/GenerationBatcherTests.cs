namespace Microsoft.ML.Llm.Tests.Generation;

/// <summary>
/// <see cref="GenerationBatcher"/>: concurrent requests with their own options decoded in one batch, each equal to the
/// generator's result alone; cancelled or abandoned rows leave without disturbing the others; the batch bound holds.
/// </summary>
/// <remarks>
/// To make the batches deterministic, a "holder" stream is started first and not read: with a stream buffer of one
/// piece its batch waits for it, so the requests made meanwhile queue; reading the holder to its end frees the model
/// and the queued requests run in batches of <see cref="GenerationBatcherOptions.MaxBatchSize"/>, in order of arrival.
/// </remarks>
[Collection("Torch")]
public class GenerationBatcherTests
{
    private static readonly string[] Prompts =
        ["to be", "whether tis nobler in", "a", "the slings and arrows of out", "or not", "the question", "to suffer", "outrageous fortune outrageous fortune "];

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SixteenConcurrentMixedRequestsEqualTheirSoloOutputsInBatchesOfAtMostEight(bool join)
    {
        // Context 24 with up to 30 new tokens: long rows slide their window; the last prompt is past the context (truncated).
        using var model = GenerationTestModel.Create(GptStyle.Modern, contextLength: 24);
        var generator = GenerationTestModel.Generator(model);
        var requests = Enumerable.Range(0, 16).Select(i => (Prompt: Prompts[(i + i / 4) % Prompts.Length], Options: OptionsOf(i), Stream: i % 3 == 1)).ToArray();
        var solo = requests.Select(r => generator.Generate(r.Prompt, r.Options)).ToArray();
        Assert.Contains(solo, s => s.Length < 8);                      // some rows end early (stop string, end of sequence, limit)
        Assert.Contains(solo, s => s.Length == 30);

        using var batcher = new GenerationBatcher(generator, new GenerationBatcherOptions { StreamBufferSize = 1, JoinRunningBatch = join });
        var holderOptions = new GenerationOptions { DoSample = false, MaxNewTokens = 20 };
        await using var holder = batcher.GenerateStreamingAsync("to be", holderOptions).GetAsyncEnumerator();
        Assert.True(await holder.MoveNextAsync());
        var holderText = new List<string> { holder.Current };

        var tasks = requests.Select(async r =>
        {
            if (!r.Stream)
            {
                return await batcher.GenerateAsync(r.Prompt, r.Options);
            }

            var pieces = new List<string>();
            await foreach (var piece in batcher.GenerateStreamingAsync(r.Prompt, r.Options))
            {
                Assert.NotEmpty(piece);
                Assert.DoesNotContain('\uFFFD', piece);
                pieces.Add(piece);
            }

            return string.Concat(pieces);
        }).ToArray();
        // All waiting: the holder's batch waits for its reader. With joining, up to 7 may have joined it at the step
        // it was computing when they arrived.
        Assert.InRange(batcher.QueueLength, join ? 9 : 16, 16);

        while (await holder.MoveNextAsync())
        {
            holderText.Add(holder.Current);
        }

        var results = await Task.WhenAll(tasks);
        Assert.Equal(generator.Generate("to be", holderOptions), string.Concat(holderText));
        for (int i = 0; i < 16; i++)
        {
            Assert.True(solo[i] == results[i], $"request {i} ({(requests[i].Stream ? "streamed" : "whole")}, '{requests[i].Prompt}'): batched '{results[i]}', alone '{solo[i]}'");
        }

        Assert.Equal(8, batcher.LargestBatch);                         // the bound held: 16 waited, 8 ran together
        if (join)
        {
            Assert.InRange(batcher.BatchCount, 1, 2);                  // the waiting requests joined the holder's batch as rows left
        }
        else
        {
            Assert.Equal(3, batcher.BatchCount);                       // the holder alone, then two batches of 8
        }

        Assert.Equal(17, batcher.RequestCount);
        Assert.Equal(0, batcher.QueueLength);
    }

    [Fact]
    public async Task ACancelledOrAbandonedRequestLeavesItsBatchAndTheOthersFinish()
    {
        using var model = GenerationTestModel.Create(GptStyle.Gpt2, contextLength: 32);
        var generator = GenerationTestModel.Generator(model);
        // Static batches (no joining), so that the four below share one batch whatever the timing.
        using var batcher = new GenerationBatcher(generator, new GenerationBatcherOptions { StreamBufferSize = 1, MaxBatchSize = 4, JoinRunningBatch = false });
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 25 };
        var sampled = new GenerationOptions { MaxNewTokens = 25, Seed = 4, TopK = 8, Temperature = 0.8f };

        var holder = batcher.GenerateStreamingAsync("a", greedy).GetAsyncEnumerator();
        Assert.True(await holder.MoveNextAsync());

        // Same batch: a stream cancelled after its first piece, a stream abandoned after its first piece, two whole requests.
        using var cancel = new CancellationTokenSource();
        var cancelled = Task.Run(async () =>
        {
            int received = 0;
            await foreach (var piece in batcher.GenerateStreamingAsync("to be", greedy, cancel.Token))
            {
                received++;
                cancel.Cancel();
            }

            return received;
        });
        var abandoned = batcher.GenerateStreamingAsync("or not", greedy).GetAsyncEnumerator();
        var first = abandoned.MoveNextAsync();
        var whole = batcher.GenerateAsync("whether tis nobler in", greedy);
        var seeded = batcher.GenerateAsync("the question", sampled);
        for (int wait = 0; wait < 500 && batcher.QueueLength < 4; wait++)
        {
            await Task.Delay(10);                                      // the cancelled one is enqueued from the thread pool
        }

        Assert.Equal(4, batcher.QueueLength);
        await holder.DisposeAsync();   // after one piece: the holder leaves its batch, which ends, and the four run together

        var exception = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(cancel.Token, ((OperationCanceledException)exception).CancellationToken);
        Assert.True(await first);
        await abandoned.DisposeAsync();
        Assert.Equal(generator.Generate("whether tis nobler in", greedy), await whole);
        Assert.Equal(generator.Generate("the question", sampled), await seeded);
        Assert.Equal(4, batcher.LargestBatch);
        Assert.Equal(2, batcher.BatchCount);

        // The model is free: a later request runs to its limit, and one cancelled before it starts never runs.
        Assert.Equal(generator.Generate("to be", greedy), await batcher.GenerateAsync("to be", greedy));
        using var before = new CancellationTokenSource();
        before.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => batcher.GenerateAsync("to be", greedy, before.Token));
    }

    [Fact]
    public async Task RequestsJoinARunningBatchBetweenTwoTokensAndEachGetsItsSoloResult()
    {
        // The running row is 9 tokens ahead of the joiners and their prompts differ in length: the joiners' cached keys
        // and values go behind left padding, or the running row's behind more when a joiner's prompt is longer.
        using var model = GenerationTestModel.Create(GptStyle.Modern, contextLength: 40);
        var generator = GenerationTestModel.Generator(model);
        using var batcher = new GenerationBatcher(generator, new GenerationBatcherOptions { StreamBufferSize = 1, MaxBatchSize = 4 });
        var holderOptions = new GenerationOptions { DoSample = false, MaxNewTokens = 20 };
        var joiners = new (string Prompt, GenerationOptions Options)[]
        {
            ("whether tis nobler in the mind to", new GenerationOptions { DoSample = false, MaxNewTokens = 25 }),
            ("to", new GenerationOptions { MaxNewTokens = 12, Seed = 3, TopK = 6 }),
            ("the slings", new GenerationOptions { DoSample = false, MaxNewTokens = 6, RepetitionPenalty = 1.3f }),
        };

        var holder = batcher.GenerateStreamingAsync("a", holderOptions).GetAsyncEnumerator();
        var holderText = new List<string>();
        for (int i = 0; i < 9; i++)
        {
            Assert.True(await holder.MoveNextAsync());
            holderText.Add(holder.Current);
        }

        var tasks = joiners.Select(j => batcher.GenerateAsync(j.Prompt, j.Options)).ToArray();
        Assert.InRange(batcher.QueueLength, 0, 3);                     // they join at the holder's next step (or the one it was computing)
        while (await holder.MoveNextAsync())
        {
            holderText.Add(holder.Current);
        }

        await holder.DisposeAsync();
        var results = await Task.WhenAll(tasks);
        Assert.Equal(generator.Generate("a", holderOptions), string.Concat(holderText));
        Assert.Equal(joiners.Select(j => generator.Generate(j.Prompt, j.Options)), results);
        Assert.Equal(1, batcher.BatchCount);                           // one batch: the three joined the holder's
        Assert.Equal(4, batcher.LargestBatch);
        Assert.Equal(4, batcher.RequestCount);
    }

    [Fact]
    public async Task AFullQueueMakesCallersWaitForRoomCancellably()
    {
        using var model = GenerationTestModel.Create(GptStyle.Gpt2, contextLength: 32);
        var generator = GenerationTestModel.Generator(model);
        using var batcher = new GenerationBatcher(generator, new GenerationBatcherOptions { MaxQueueLength = 1, StreamBufferSize = 1, JoinRunningBatch = false });
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 8 };
        var holder = batcher.GenerateStreamingAsync("a", greedy).GetAsyncEnumerator();
        Assert.True(await holder.MoveNextAsync());

        var queued = batcher.GenerateAsync("to be", greedy);
        using var cancel = new CancellationTokenSource();
        var waiting = batcher.GenerateAsync("or not", greedy, cancel.Token);   // no room: waits to enter the queue
        var third = batcher.GenerateAsync("the question", greedy);
        await Task.Delay(100);
        Assert.Equal(1, batcher.QueueLength);
        Assert.False(waiting.IsCompleted);
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting);

        await holder.DisposeAsync();
        Assert.Equal(generator.Generate("to be", greedy), await queued);
        Assert.Equal(generator.Generate("the question", greedy), await third);
        Assert.Equal(3, batcher.RequestCount);                         // the cancelled caller never entered
    }

    [Fact]
    public async Task ACancelledBeamSearchStopsWithinOneTokenAndTheRequestsBehindItGetTheirSoloOutputs()
    {
        using var model = GenerationTestModel.Create(GptStyle.Gpt2, contextLength: 32);
        var generator = GenerationTestModel.Generator(model);
        var endless = new GenerationOptions { DoSample = false, MaxNewTokens = 2000, NumBeams = 3 };   // no end of sequence: runs to its limit
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 10 };
        var beams = new GenerationOptions { DoSample = false, MaxNewTokens = 6, NumBeams = 2, NumReturnSequences = 2 };
        string expectedGreedy = generator.Generate("whether tis", greedy);
        string expectedBeams = generator.Generate("a", beams);          // the best of the two
        using var batcher = new GenerationBatcher(generator);

        // The beam search is queued first and runs alone; the other two wait behind it.
        using var cancel = new CancellationTokenSource();
        var cancelled = batcher.GenerateAsync("to be", endless, cancel.Token);
        var other = batcher.GenerateAsync("whether tis", greedy);
        var otherBeams = batcher.GenerateAsync("a", beams);
        for (int wait = 0; wait < 1000 && batcher.StepCount == 0; wait++)
        {
            await Task.Delay(5);
        }

        Assert.True(batcher.StepCount > 0, "the beam search never started");
        cancel.Cancel();
        long atCancel = batcher.StepCount;                               // the search may finish the step it is in, no more
        var exception = await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        Assert.Equal(cancel.Token, exception.CancellationToken);

        Assert.Equal(expectedGreedy, await other);
        Assert.Equal(expectedBeams, await otherBeams);

        // Every step is counted: the greedy request's 10 (no end of sequence), the beams' 6, and the cancelled search's.
        long cancelledSteps = batcher.StepCount - greedy.MaxNewTokens - beams.MaxNewTokens;
        Assert.InRange(cancelledSteps, 1, atCancel + 1);
        Assert.True(cancelledSteps < endless.MaxNewTokens);
        Assert.Equal(3, batcher.BatchCount);
    }

    [Fact]
    public async Task BeamSearchRunsAloneAndStreamingItIsRefused()
    {
        using var model = GenerationTestModel.Create(GptStyle.Gpt2, contextLength: 32);
        var generator = GenerationTestModel.Generator(model);
        using var batcher = new GenerationBatcher(generator);
        var beams = new GenerationOptions { DoSample = false, MaxNewTokens = 10, NumBeams = 3 };
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 10 };
        var results = await Task.WhenAll(batcher.GenerateAsync("to be", beams), batcher.GenerateAsync("to be", greedy), batcher.GenerateAsync("a", greedy));
        Assert.Equal([generator.Generate("to be", beams), generator.Generate("to be", greedy), generator.Generate("a", greedy)], results);
        Assert.Equal(3, batcher.RequestCount);

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () =>
        {
            await foreach (var _ in batcher.GenerateStreamingAsync("to be", beams))
            {
            }
        });
        Assert.StartsWith("Streaming yields one completion as it is generated; GenerationOptions.NumBeams is 3 and NumReturnSequences 1 (both must be 1).", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OptionsOutOfRangeAreRefusedNamingTheOption()
    {
        using var model = GenerationTestModel.Create(contextLength: 16);
        var generator = GenerationTestModel.Generator(model);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationBatcher(generator, new GenerationBatcherOptions { MaxBatchSize = 0 }));
        Assert.StartsWith("GenerationBatcherOptions.MaxBatchSize is 0; expected an integer of at least 1.", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => new GenerationBatcher(generator, new GenerationBatcherOptions { MaxBatchWaitMilliseconds = -1 }));
        Assert.StartsWith("GenerationBatcherOptions.MaxBatchWaitMilliseconds is -1; expected an integer of at least 0.", e.Message, StringComparison.Ordinal);
        var batcher = new GenerationBatcher(generator);
        batcher.Dispose();
        Assert.Throws<ObjectDisposedException>(() => batcher.GenerateAsync("to be").GetAwaiter().GetResult());
    }

    // Greedy and seeded sampling, different limits, stop strings and end-of-sequence ids, row by row.
    private static GenerationOptions OptionsOf(int i) => (i % 4) switch
    {
        0 => new GenerationOptions { DoSample = false, MaxNewTokens = 30 - i },
        1 => new GenerationOptions { MaxNewTokens = 12 + i, Seed = 100 + i, Temperature = 0.7f, TopK = 10 },
        2 => new GenerationOptions { DoSample = false, MaxNewTokens = 30, RepetitionPenalty = 1.5f, StopStrings = ["ss", "tt", "rr"], EosTokenIds = [GenerationTestModel.Tokenizer.Encode("n")[0]] },
        _ => new GenerationOptions { MaxNewTokens = 5 + i, Seed = 7, TopP = 0.9f, RepetitionPenalty = 1.3f, NoRepeatNgramSize = 3 },
    };
}
