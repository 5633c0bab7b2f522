using System.Buffers;
using System.Runtime.InteropServices;
using static System.FormattableString;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>One sequence being generated: its prompt (as fed, after any truncation) and the tokens generated after it.</summary>
internal sealed class GeneratedSequence
{
    public GeneratedSequence(int[] prompt)
    {
        History = new List<int>(prompt);
        PromptLength = prompt.Length;
    }

    /// <summary>Prompt then generated tokens.</summary>
    public List<int> History { get; }

    public int PromptLength { get; }

    public int GeneratedCount => History.Count - PromptLength;

    /// <summary>Set when the sequence ends (end-of-sequence id, length limit, a stop string seen by the caller, context full).</summary>
    public bool Finished { get; set; }

    public IEnumerable<int> Generated => History.Skip(PromptLength);

    /// <summary>The last <paramref name="context"/> tokens: what the model sees.</summary>
    public ReadOnlyMemory<int> Window(int context)
    {
        var all = CollectionsMarshal.AsSpan(History).ToArray();
        return all.AsMemory(Math.Max(0, all.Length - context));
    }
}

/// <summary>
/// The decoding loops over a <see cref="DecodingBatch"/>: greedy/sampling (one token per sequence per step, finished
/// sequences dropped from the batch) and beam search (Hugging Face's algorithm: beams reordered in the cache, a list
/// of finished hypotheses per prompt, length-normalised scores).
/// </summary>
internal static class Decoding
{
    /// <summary>
    /// Greedy decoding or sampling of every sequence in one batch. After each step it yields the token each sequence
    /// received (−1: none); the caller may then mark sequences <see cref="GeneratedSequence.Finished"/> (a stop string),
    /// and they leave the batch before the next step.
    /// </summary>
    public static IEnumerable<int[]> Sample(GptModel model, IReadOnlyList<GeneratedSequence> sequences, GenerationOptions options,
        Generator generator, CancellationToken cancellation)
    {
        int context = model.Config.ContextLength;
        using var batch = new DecodingBatch(model);
        int vocabulary = batch.Vocabulary;
        model.eval();
        var rows = Enumerable.Range(0, sequences.Count).Where(s => !sequences[s].Finished).ToList();   // row → sequence
        if (rows.Count == 0)
        {
            yield break;
        }

        cancellation.ThrowIfCancellationRequested();
        float[] logits = batch.Prefill(rows.Select(s => sequences[s].Window(context)).ToList());
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            var next = new int[sequences.Count];
            Array.Fill(next, -1);
            for (int r = 0; r < rows.Count; r++)
            {
                next[rows[r]] = NextToken(sequences[rows[r]], logits.AsSpan(r * vocabulary, vocabulary), options, generator);
            }

            yield return next;                                  // the caller may finish sequences here (stop strings)
            cancellation.ThrowIfCancellationRequested();

            var keep = new List<int>();
            for (int r = 0; r < rows.Count; r++)
            {
                if (!sequences[rows[r]].Finished)
                {
                    keep.Add(r);
                }
            }

            if (keep.Count == 0)
            {
                yield break;
            }

            batch.Select(keep);                                 // finished rows stop costing compute
            rows = keep.Select(r => rows[r]).ToList();
            if (batch.Length + 1 > context)
            {
                if (options.ContextOverflow == ContextOverflow.Stop)
                {
                    foreach (int s in rows)
                    {
                        sequences[s].Finished = true;
                    }

                    yield break;
                }

                // Slide the window: run each row's last ContextLength tokens again from position 0.
                logits = batch.Prefill(rows.Select(s => sequences[s].Window(context)).ToList());
            }
            else
            {
                logits = batch.Step(rows.Select(s => sequences[s].History[^1]).ToArray());
            }
        }
    }

    /// <summary>
    /// One row's step of greedy decoding or sampling: the logits processors and the choice on its
    /// <paramref name="scores"/> (modified in place). An end-of-sequence id finishes the sequence and returns −1;
    /// any other token is appended, and the sequence finishes when it has <see cref="GenerationOptions.MaxNewTokens"/>.
    /// </summary>
    internal static int NextToken(GeneratedSequence sequence, Span<float> scores, GenerationOptions options, Generator? generator)
    {
        TokenSampling.Process(scores, CollectionsMarshal.AsSpan(sequence.History), sequence.PromptLength, options);
        int token = TokenSampling.Choose(scores, options, generator);
        if (options.EosTokenIds.Contains(token))
        {
            sequence.Finished = true;
            return -1;
        }

        sequence.History.Add(token);
        if (sequence.GeneratedCount >= options.MaxNewTokens)
        {
            sequence.Finished = true;
        }

        return token;
    }

    /// <summary>
    /// A finished beam: its generated tokens (an end-of-sequence id that ended it is not included; a token that completed
    /// a stop string is), its length-normalised score and the sum it was normalised from (log-probabilities after the
    /// logits processors; with beam sampling, after the warpers too, so divided by <see cref="GenerationOptions.Temperature"/>).
    /// </summary>
    internal sealed record Hypothesis(int[] Tokens, double Score, double SumLogProbs);

    /// <summary>
    /// Beam search over every prompt at once (rows = prompts × beams), as Hugging Face's <c>_beam_search</c>: at each step
    /// every beam's log-probabilities — log_softmax of the logits, then the logits processors applied to them (HF's order:
    /// unlike greedy decoding and sampling, where the processors act on the logits, so a repetition penalty divides or
    /// multiplies a log-probability, which is always ≤ 0), then with <see cref="GenerationOptions.DoSample"/> the
    /// warpers — plus its running score give the candidates; the top max(2, 1 + #EOS ids)·NumBeams of them per prompt
    /// (beam search), or as many drawn without replacement from the softmax over all of them (beam sampling, seeded by
    /// <see cref="GenerationOptions.Seed"/>), sorted by score. A candidate among the first NumBeams that ends in an
    /// end-of-sequence id, or whose text completes a stop string (<paramref name="hitsStop"/> of its generated tokens; null: no stop strings), becomes a finished
    /// hypothesis scored sum / length^LengthPenalty (length counts its generated tokens, the last one included); the
    /// best NumBeams others continue, their keys and values gathered in the cache by index. A prompt is done as
    /// <see cref="GenerationOptions.EarlyStopping"/> says. Returns, per prompt, the best hypotheses, best first.
    /// </summary>
    /// <remarks>
    /// <paramref name="cancellation"/> is checked before the prompts' forward pass and after every step, before the next
    /// forward pass: a cancelled search stops within one token (<see cref="OperationCanceledException"/>).
    /// <paramref name="stepped"/>, when given, is called after each step's tokens are chosen (before that check).
    /// </remarks>
    public static List<Hypothesis>[] BeamSearch(GptModel model, IReadOnlyList<int[]> prompts, GenerationOptions options, CancellationToken cancellation,
        Func<int[], bool>? hitsStop = null, Action? stepped = null)
    {
        int beams = options.NumBeams;
        int candidates = Math.Max(2, 1 + options.EosTokenIds.Count) * beams;   // HF's beams_to_keep: enough to continue NumBeams
        int context = model.Config.ContextLength;
        using var batch = new DecodingBatch(model);
        using var generator = options.DoSample ? new Generator((ulong)(options.Seed ?? Random.Shared.Next())) : null;
        int minKeep = options.EosTokenIds.Count > 0 ? options.EosTokenIds.Count + 1 : 2;   // HF's min_tokens_to_keep with beams
        int vocabulary = batch.Vocabulary;
        model.eval();
        int promptCount = prompts.Count;
        var finished = Enumerable.Range(0, promptCount).Select(_ => new List<Hypothesis>()).ToArray();
        var done = new bool[promptCount];

        // Running beams, row by row: prompt p's beams are consecutive. The first step expands beam 0 only (the other
        // beams are copies of it, kept out with a score of −∞ as HF's −1e9).
        var rowPrompt = new List<int>();
        var rowHistory = new List<List<int>>();
        var rowScore = new List<double>();
        var prefill = new List<ReadOnlyMemory<int>>();
        for (int p = 0; p < promptCount; p++)
        {
            prefill.Add(prompts[p].AsMemory(Math.Max(0, prompts[p].Length - context)));
        }

        cancellation.ThrowIfCancellationRequested();
        float[] promptLogits = batch.Prefill(prefill);
        var expand = new List<int>();
        var logits = new float[promptCount * beams * vocabulary];
        for (int p = 0; p < promptCount; p++)
        {
            for (int b = 0; b < beams; b++)
            {
                expand.Add(p);
                rowPrompt.Add(p);
                rowHistory.Add(new List<int>(prompts[p]));
                rowScore.Add(b == 0 ? 0 : double.NegativeInfinity);
                promptLogits.AsSpan(p * vocabulary, vocabulary).CopyTo(logits.AsSpan((p * beams + b) * vocabulary));
            }
        }

        batch.Select(expand);
        for (int step = 0; step < options.MaxNewTokens; step++)
        {
            int generatedLength = step + 1;                      // generated tokens of a beam after this step
            var nextPrompt = new List<int>();
            var nextHistory = new List<List<int>>();
            var nextScore = new List<double>();
            var parents = new List<int>();
            int row = 0;
            while (row < rowPrompt.Count)
            {
                int p = rowPrompt[row];
                int first = row;
                while (row < rowPrompt.Count && rowPrompt[row] == p)
                {
                    row++;
                }

                int promptLength = prompts[p].Length;
                for (int r = first; r < row; r++)
                {
                    if (double.IsNegativeInfinity(rowScore[r]))
                    {
                        continue;                                // a copy of beam 0 on the first step
                    }

                    // HF's _beam_search: log_softmax of the logits first, then the logits processors on the
                    // log-probabilities (a repetition penalty multiplies a negative log-probability), then the warpers.
                    var scores = logits.AsSpan(r * vocabulary, vocabulary);
                    TokenSampling.LogSoftmax(scores);
                    TokenSampling.Process(scores, CollectionsMarshal.AsSpan(rowHistory[r]), promptLength, options);
                    if (options.DoSample)
                    {
                        TokenSampling.Warp(scores, options, minKeep);
                    }
                }

                var top = options.DoSample
                    ? DrawCandidates(logits, vocabulary, first, row, rowScore, candidates, generator!)
                    : TopCandidates(logits, vocabulary, first, row, rowScore, candidates);

                int continuing = 0;
                for (int rank = 0; rank < top.Count && continuing < beams; rank++)
                {
                    var (score, parent, token) = top[rank];
                    if (options.EosTokenIds.Contains(token))
                    {
                        if (rank < beams)
                        {
                            AddHypothesis(finished[p], rowHistory[parent].Skip(promptLength).ToArray(), score, generatedLength, options);
                        }

                        continue;
                    }

                    var history = new List<int>(rowHistory[parent]) { token };
                    if (hitsStop is not null && hitsStop(history.Skip(promptLength).ToArray()))
                    {
                        // As HF's stopping criteria: a stop string ends the beam like an end-of-sequence id.
                        if (rank < beams)
                        {
                            AddHypothesis(finished[p], history.Skip(promptLength).ToArray(), score, generatedLength, options);
                        }

                        continue;
                    }

                    nextPrompt.Add(p);
                    nextHistory.Add(history);
                    nextScore.Add(score);
                    parents.Add(parent);
                    continuing++;
                }

                double bestRunning = continuing > 0 ? nextScore[^continuing] : double.NegativeInfinity;
                if (IsDone(finished[p], bestRunning, generatedLength, options) || continuing == 0)
                {
                    done[p] = true;
                    nextPrompt.RemoveRange(nextPrompt.Count - continuing, continuing);
                    nextHistory.RemoveRange(nextHistory.Count - continuing, continuing);
                    nextScore.RemoveRange(nextScore.Count - continuing, continuing);
                    parents.RemoveRange(parents.Count - continuing, continuing);
                }
            }

            rowPrompt = nextPrompt;
            rowHistory = nextHistory;
            rowScore = nextScore;
            stepped?.Invoke();
            cancellation.ThrowIfCancellationRequested();
            if (rowPrompt.Count == 0)
            {
                break;
            }

            if (step == options.MaxNewTokens - 1)
            {
                break;                                           // the length limit: no forward pass for a token never used
            }

            batch.Select(parents);                               // each beam's cache follows its parent
            if (batch.Length + 1 > context)
            {
                if (options.ContextOverflow == ContextOverflow.Stop)
                {
                    break;
                }

                logits = batch.Prefill(rowHistory.Select(h => (ReadOnlyMemory<int>)h.ToArray().AsMemory(Math.Max(0, h.Count - context))).ToList());
            }
            else
            {
                logits = batch.Step(rowHistory.Select(h => h[^1]).ToArray());
            }
        }

        // Beams still running at the end become hypotheses too (HF's finalize).
        for (int r = 0; r < rowPrompt.Count; r++)
        {
            int p = rowPrompt[r];
            if (!done[p])
            {
                var generated = rowHistory[r].Skip(prompts[p].Length).ToArray();
                AddHypothesis(finished[p], generated, rowScore[r], generated.Length, options);
            }
        }

        foreach (var list in finished)
        {
            list.Sort((a, b) => b.Score.CompareTo(a.Score));
        }

        return finished;
    }

    /// <summary>
    /// Beam search's candidates of one prompt (rows first..end): the <paramref name="count"/> best (row, token) pairs by
    /// running score + log p, best first (ties: the earlier row, then the lower token).
    /// </summary>
    private static List<(double Score, int Row, int Token)> TopCandidates(float[] logits, int vocabulary, int first, int end,
        List<double> rowScore, int count)
    {
        var top = new List<(double Score, int Row, int Token)>(count + 1);
        for (int r = first; r < end; r++)
        {
            if (double.IsNegativeInfinity(rowScore[r]))
            {
                continue;
            }

            var scores = logits.AsSpan(r * vocabulary, vocabulary);
            for (int v = 0; v < vocabulary; v++)
            {
                if (float.IsNegativeInfinity(scores[v]))
                {
                    continue;
                }

                double score = rowScore[r] + scores[v];
                if (top.Count == count && score <= top[^1].Score)
                {
                    continue;
                }

                int at = top.Count;
                while (at > 0 && top[at - 1].Score < score)
                {
                    at--;
                }

                top.Insert(at, (score, r, v));
                if (top.Count > count)
                {
                    top.RemoveAt(top.Count - 1);
                }
            }
        }

        return top;
    }

    /// <summary>
    /// Beam sampling's candidates of one prompt (rows first..end): <paramref name="count"/> (row, token) pairs drawn
    /// without replacement from the softmax of running score + warped log p over all of them (as HF's
    /// <c>torch.multinomial(softmax(scores), count)</c>; fewer when fewer are possible), then sorted by score, best first.
    /// </summary>
    private static List<(double Score, int Row, int Token)> DrawCandidates(float[] logits, int vocabulary, int first, int end,
        List<double> rowScore, int count, Generator generator)
    {
        int capacity = (end - first) * vocabulary;
        double[] scores = ArrayPool<double>.Shared.Rent(capacity);
        int[] flat = ArrayPool<int>.Shared.Rent(capacity);          // (row − first) · vocabulary + token
        try
        {
            int candidates = 0;
            for (int r = first; r < end; r++)
            {
                if (double.IsNegativeInfinity(rowScore[r]))
                {
                    continue;
                }

                var row = logits.AsSpan(r * vocabulary, vocabulary);
                for (int v = 0; v < vocabulary; v++)
                {
                    if (!float.IsNegativeInfinity(row[v]))
                    {
                        scores[candidates] = rowScore[r] + row[v];
                        flat[candidates] = (r - first) * vocabulary + v;
                        candidates++;
                    }
                }
            }

            var drawn = TokenSampling.DrawWithoutReplacement(scores.AsSpan(0, candidates), count, generator);
            var top = drawn.Select(i => (Score: scores[i], Row: first + flat[i] / vocabulary, Token: flat[i] % vocabulary)).ToList();
            top.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Row != b.Row ? a.Row.CompareTo(b.Row) : a.Token.CompareTo(b.Token));
            return top;
        }
        finally
        {
            ArrayPool<double>.Shared.Return(scores);
            ArrayPool<int>.Shared.Return(flat);
        }
    }

    /// <summary>HF's BeamHypotheses.add: keeps the NumBeams best, by sum(log p) / length^LengthPenalty.</summary>
    private static void AddHypothesis(List<Hypothesis> list, int[] tokens, double sumLogProbs, int length, GenerationOptions options)
    {
        double score = sumLogProbs / Math.Pow(Math.Max(1, length), options.LengthPenalty);
        if (list.Count < options.NumBeams)
        {
            list.Add(new Hypothesis(tokens, score, sumLogProbs));
            return;
        }

        int worst = 0;
        for (int i = 1; i < list.Count; i++)
        {
            if (list[i].Score < list[worst].Score)
            {
                worst = i;
            }
        }

        if (score > list[worst].Score)
        {
            list[worst] = new Hypothesis(tokens, score, sumLogProbs);
        }
    }

    /// <summary>
    /// HF's <c>BeamHypotheses.is_done</c> (the vectorised <c>_check_early_stop_heuristic</c> and
    /// <c>_beam_search_has_unfinished_sequences</c>): a prompt is done once NumBeams hypotheses are finished and
    /// <see cref="BeamEarlyStopping.WhenBeamsFinished"/> is set, or the best running beam cannot beat the worst finished
    /// hypothesis: scored at the current length (<see cref="BeamEarlyStopping.Heuristic"/>, and
    /// <see cref="BeamEarlyStopping.Never"/> with LengthPenalty ≤ 0) or at the length limit MaxNewTokens
    /// (<see cref="BeamEarlyStopping.Never"/> with LengthPenalty &gt; 0).
    /// </summary>
    internal static bool IsDone(List<Hypothesis> list, double bestRunningSum, int length, GenerationOptions options)
    {
        if (list.Count < options.NumBeams)
        {
            return false;
        }

        if (options.EarlyStopping == BeamEarlyStopping.WhenBeamsFinished)
        {
            return true;
        }

        int bestLength = options.EarlyStopping == BeamEarlyStopping.Never && options.LengthPenalty > 0 ? options.MaxNewTokens : length;
        double worst = list.Min(h => h.Score);
        return bestRunningSum / Math.Pow(bestLength, options.LengthPenalty) <= worst;
    }

    /// <summary>The prompt as fed to the model: checked, and truncated or rejected when longer than the context.</summary>
    public static int[] PreparePrompt(GptModel model, int[] prompt, GenerationOptions options, string parameterName)
    {
        var config = model.Config;
        config.CheckTokenIds(prompt, parameterName, "Prompt token id");
        if (prompt.Length > config.ContextLength && options.PromptOverflow == PromptOverflow.Throw)
        {
            throw new ArgumentException(
                Invariant($"The prompt has {prompt.Length} tokens, more than the model's context of {config.ContextLength} (GptConfig.ContextLength); shorten it, or set GenerationOptions.PromptOverflow = PromptOverflow.TruncateLeft to keep its last {config.ContextLength} tokens."),
                parameterName);
        }

        return prompt;
    }
}
