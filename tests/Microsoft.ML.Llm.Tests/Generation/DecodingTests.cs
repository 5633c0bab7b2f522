using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Generation;

/// <summary>
/// Decoding against an independent reference (full forward passes, no cache): greedy, sampling filters, beam search,
/// the logits processors, batching, overflow of the context.
/// </summary>
[Collection("Torch")]
public class DecodingTests
{
    private static readonly string[] Prompts = ["to be", "whether tis nobler in", "a", "the slings and arrows of out"];

    private static GenerationOptions Greedy(int maxNewTokens) => new() { DoSample = false, MaxNewTokens = maxNewTokens };

    private static int[] Encode(string text) => GenerationTestModel.Tokenizer.Encode(text);

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void GreedyEqualsTheArgmaxChainOfFullForwardPasses(GptStyle style)
    {
        // Context 16, prompt 5, 30 new tokens: the last 19 tokens are generated past the context (sliding window).
        using var model = GenerationTestModel.Create(style, contextLength: 16);
        var generator = GenerationTestModel.Generator(model);
        var prompt = Encode("to be");
        var expected = GenerationTestModel.ArgmaxChain(model, prompt, 30);
        Assert.Equal(expected, generator.GenerateTokens(prompt, Greedy(30)));
        Assert.Equal(GenerationTestModel.Tokenizer.Decode(expected), generator.Generate("to be", Greedy(30)));
    }

    [Theory]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Bf16Mixed)]
    [InlineData(GptStyle.Modern, TrainingPrecision.Bf16Mixed)]
    [InlineData(GptStyle.Gpt2, TrainingPrecision.Fp16Mixed)]
    public void LowPrecisionDecodingWithWeightsCastOnceEqualsCastingThemInEveryPass(GptStyle style, TrainingPrecision precision)
    {
        using var model = GenerationTestModel.Create(style, contextLength: 48);
        model.Precision = precision;
        var rows = Prompts.Select(Encode).ToArray();
        int longest = rows.Max(r => r.Length);
        using var batch = new DecodingBatch(model);
        float[] logits = batch.Prefill(rows.Select(r => (ReadOnlyMemory<int>)r).ToArray());

        // The reference: the same cached forward passes, autocast casting every weight in each of them (no weight cache).
        using var cache = new KvCache(model);
        var valid = new bool[rows.Length * longest];
        for (int r = 0; r < rows.Length; r++)
            valid.AsSpan(r * longest + longest - rows[r].Length, rows[r].Length).Fill(true);
        var ids = rows.SelectMany(r => Enumerable.Repeat(0L, longest - r.Length).Concat(r.Select(t => (long)t))).ToArray();
        var positions = rows.SelectMany(r => Enumerable.Range(0, longest).Select(i => (long)Math.Max(0, i - (longest - r.Length)))).ToArray();
        float[] Reference(Tensor idx, Tensor mask, Tensor position)
        {
            using var scope = NewDisposeScope();
            using var cast = Autocast.Enable(precision);
            var last = model.forward(idx, cache, mask, position, lastPositionOnly: true)[.., -1, ..batch.Vocabulary];
            return last.to(ScalarType.Float32).contiguous().data<float>().ToArray();
        }

        Assert.Equal(Reference(tensor(ids, rows.Length, longest), tensor(valid, rows.Length, longest), tensor(positions, rows.Length, longest)), logits);
        for (int step = 0; step < 5; step++)
        {
            var next = rows.Select((_, r) => (r * 7 + step * 3) % batch.Vocabulary).ToArray();
            logits = batch.Step(next);
            int length = longest + step + 1;
            var stepValid = new bool[rows.Length * length];
            for (int r = 0; r < rows.Length; r++)
                stepValid.AsSpan(r * length + longest - rows[r].Length, length - (longest - rows[r].Length)).Fill(true);
            var stepPositions = rows.Select(r => (long)(r.Length + step)).ToArray();
            Assert.Equal(Reference(tensor(next.Select(t => (long)t).ToArray(), rows.Length, 1), tensor(stepValid, rows.Length, length), tensor(stepPositions, rows.Length, 1)), logits);
        }

        Assert.True(batch.CastWeights > 0, "the batch cast no weight: the cache was not used");
        batch.Dispose();
        Assert.Equal(0, batch.CastWeights);   // the casts go with the batch
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void PaddedBatchLogitsEqualEachRowAloneWithoutCache(GptStyle style)
    {
        using var model = GenerationTestModel.Create(style, contextLength: 48);
        var rows = Prompts.Select(Encode).ToArray();
        using var batch = new DecodingBatch(model);
        float[] logits = batch.Prefill(rows.Select(r => (ReadOnlyMemory<int>)r).ToArray());
        var histories = rows.Select(r => new List<int>(r)).ToArray();
        for (int step = 0; step < 6; step++)
        {
            for (int r = 0; r < rows.Length; r++)
            {
                // The reference: the row alone, full forward pass, no padding, no cache.
                using var scope = NewDisposeScope();
                var ids = histories[r].Select(t => (long)t).ToArray();
                var alone = model.forward(tensor(ids, new long[] { 1, ids.Length }))[0, -1, ..batch.Vocabulary];
                var cached = tensor(logits.AsSpan(r * batch.Vocabulary, batch.Vocabulary).ToArray());
                float difference = (alone - cached).abs().max().item<float>();
                Assert.True(difference < 1e-4, $"row {r}, step {step}: cached and uncached logits differ by {difference}");
            }

            var next = histories.Select((h, r) => (r * 7 + step * 3) % batch.Vocabulary).ToArray();
            for (int r = 0; r < rows.Length; r++)
            {
                histories[r].Add(next[r]);
            }

            logits = batch.Step(next);
        }
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void TheLastPositionsLogitsAloneEqualTheFullForwardPass(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = GenerationTestModel.Create(style);
        var idx = tensor(Encode("whether tis nobler").Select(t => (long)t).ToArray(), new long[] { 1, 18 });
        var full = model.forward(idx).narrow(1, 17, 1);
        Assert.True(model.ForwardLastPosition(idx).allclose(full, rtol: 0, atol: 1e-5));
        using var cache = new KvCache(model);
        Assert.True(model.forward(idx, cache, null, null, lastPositionOnly: true).allclose(full, rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void TopKOfOneEqualsGreedy()
    {
        using var model = GenerationTestModel.Create();
        var generator = GenerationTestModel.Generator(model);
        foreach (var prompt in Prompts)
        {
            Assert.Equal(generator.Generate(prompt, Greedy(20)),
                generator.Generate(prompt, new GenerationOptions { DoSample = true, TopK = 1, Temperature = 1.7f, MaxNewTokens = 20, Seed = 3 }));
        }
    }

    [Fact]
    public void BeamSearchWithOneBeamEqualsGreedy()
    {
        using var model = GenerationTestModel.Create();
        var options = Greedy(20);
        options.NumBeams = 1;
        var prompts = Prompts.Select(Encode).ToArray();
        var beams = Decoding.BeamSearch(model, prompts, options, CancellationToken.None);
        for (int p = 0; p < prompts.Length; p++)
        {
            Assert.Equal(GenerationTestModel.ArgmaxChain(model, prompts[p], 20), beams[p].Single().Tokens);
        }
    }

    [Fact]
    public void BeamSearchFindsAHigherTotalLogProbabilityThanGreedy()
    {
        // LengthPenalty 0 ranks by total log-probability; with no end-of-sequence id every hypothesis has 8 tokens.
        using var model = GenerationTestModel.Create(seed: 11, scale: 3);
        var generator = GenerationTestModel.Generator(model);
        var beamOptions = new GenerationOptions { DoSample = false, MaxNewTokens = 8, NumBeams = 4, LengthPenalty = 0, NumReturnSequences = 4 };
        var prompts = Prompts.Select(Encode).ToArray();
        var hypotheses = Decoding.BeamSearch(model, prompts, beamOptions, CancellationToken.None);
        int better = 0;
        for (int p = 0; p < prompts.Length; p++)
        {
            var greedy = GenerationTestModel.ArgmaxChain(model, prompts[p], 8);
            double greedyLogProb = GenerationTestModel.LogProbability(model, prompts[p], greedy);
            var best = hypotheses[p][0];
            double beamLogProb = GenerationTestModel.LogProbability(model, prompts[p], best.Tokens);

            // The score beam search kept (through reordered caches) is the log-probability recomputed from scratch.
            Assert.Equal(beamLogProb, best.SumLogProbs, 3);
            Assert.True(beamLogProb >= greedyLogProb - 1e-4, $"prompt {p}: beam {beamLogProb} < greedy {greedyLogProb}");
            better += beamLogProb > greedyLogProb + 1e-4 ? 1 : 0;

            // Hypotheses come best first and are distinct.
            Assert.Equal(4, hypotheses[p].Count);
            Assert.True(hypotheses[p].Zip(hypotheses[p].Skip(1)).All(pair => pair.First.Score >= pair.Second.Score));
            Assert.Equal(4, hypotheses[p].Select(h => string.Join(",", h.Tokens)).Distinct().Count());
        }

        Assert.True(better > 0, "beam search never beat greedy on this model; the test proves nothing");
        Assert.Equal(GenerationTestModel.Tokenizer.Decode(hypotheses[1][0].Tokens), generator.Generate(Prompts[1], beamOptions));
        Assert.Equal(hypotheses[2].Select(h => GenerationTestModel.Tokenizer.Decode(h.Tokens)), generator.Generate([Prompts[2]], beamOptions));
    }

    [Fact]
    public void BeamSearchFinishesHypothesesAtEndOfSequenceWithLengthNormalisedScores()
    {
        using var model = GenerationTestModel.Create(seed: 11, scale: 3);
        var prompt = Encode("to be");
        var greedy = GenerationTestModel.ArgmaxChain(model, prompt, 12);
        int eos = greedy[3];                                      // a token greedy decoding produces early
        foreach (float lengthPenalty in new[] { 0f, 1f, -0.5f })
        {
            var options = new GenerationOptions { DoSample = false, MaxNewTokens = 12, NumBeams = 3, NumReturnSequences = 3, EosTokenIds = [eos], LengthPenalty = lengthPenalty };
            var hypotheses = Decoding.BeamSearch(model, [prompt], options, CancellationToken.None)[0];
            Assert.Equal(3, hypotheses.Count);
            foreach (var h in hypotheses)
            {
                Assert.DoesNotContain(eos, h.Tokens);
                bool ended = h.Tokens.Length < 12;
                var withEos = ended ? h.Tokens.Append(eos).ToArray() : h.Tokens;
                double logProb = GenerationTestModel.LogProbability(model, prompt, withEos);
                Assert.Equal(logProb, h.SumLogProbs, 3);
                Assert.Equal(logProb / Math.Pow(withEos.Length, lengthPenalty), h.Score, 3);   // the end-of-sequence token counted
            }

            if (lengthPenalty <= 0)
            {
                Assert.Contains(hypotheses, h => h.Tokens.Length < 12);   // short hypotheses win without length normalisation
            }
        }
    }

    [Fact]
    public void NoRepeatNgramSizeNeverEmitsARepeatedNgram()
    {
        using var model = GenerationTestModel.Create(contextLength: 64);
        var generator = GenerationTestModel.Generator(model);
        var prompt = Encode("to be or not");
        bool repeatsWithout = HasRepeatedNgram(prompt.Concat(generator.GenerateTokens(prompt, Greedy(40))).ToArray(), 3);
        Assert.True(repeatsWithout, "greedy decoding of this model repeats itself; the test needs that to prove anything");
        foreach (int n in new[] { 2, 3, 4 })
        {
            var greedy = Greedy(40);
            greedy.NoRepeatNgramSize = n;
            var sampled = new GenerationOptions { MaxNewTokens = 40, NoRepeatNgramSize = n, Seed = 4 };
            var beams = new GenerationOptions { DoSample = false, MaxNewTokens = 20, NoRepeatNgramSize = n, NumBeams = 3 };
            foreach (var options in new[] { greedy, sampled, beams })
            {
                var sequence = prompt.Concat(generator.GenerateTokens(prompt, options)).ToArray();
                Assert.False(HasRepeatedNgram(sequence, n), $"a repeated {n}-gram in '{GenerationTestModel.Tokenizer.Decode(sequence)}'");
            }
        }
    }

    private static bool HasRepeatedNgram(int[] sequence, int n)
    {
        var seen = new HashSet<string>();
        for (int i = 0; i + n <= sequence.Length; i++)
        {
            if (!seen.Add(string.Join(",", sequence.Skip(i).Take(n))))
            {
                return true;
            }
        }

        return false;
    }

    [Fact]
    public void BatchedGreedyEqualsOneByOne()
    {
        // Different lengths (left padding), one prompt past the context (truncated), an end-of-sequence id and a stop
        // string that end some rows early (they leave the batch), and 30 tokens past a context of 24 (sliding window).
        using var model = GenerationTestModel.Create(GptStyle.Modern, contextLength: 24);
        var generator = GenerationTestModel.Generator(model);
        var prompts = Prompts.Append(string.Concat(Enumerable.Repeat("outrageous fortune ", 2))).ToArray();
        var options = Greedy(30);
        string alone0 = generator.Generate(prompts[0], options);
        options.StopStrings = [alone0.Substring(5, 2)];
        options.EosTokenIds = [Encode(generator.Generate(prompts[2], Greedy(30)))[10]];
        var oneByOne = prompts.Select(p => generator.Generate(p, options)).ToArray();
        Assert.Equal(oneByOne, generator.Generate(prompts, options));
        Assert.Contains(oneByOne, o => o.Length < 30);            // some rows did finish early

        using var gpt2 = GenerationTestModel.Create(GptStyle.Gpt2, contextLength: 24);
        var other = GenerationTestModel.Generator(gpt2);
        Assert.Equal(prompts.Select(p => other.Generate(p, Greedy(30))), other.Generate(prompts, Greedy(30)));

        var beams = new GenerationOptions { DoSample = false, MaxNewTokens = 10, NumBeams = 3, NumReturnSequences = 2 };
        Assert.Equal(prompts.SelectMany(p => other.Generate([p], beams)), other.Generate(prompts, beams));
    }

    [Fact]
    public void TheSameSeedGivesTheSameTextAndReturnSequencesAreIndependentSamples()
    {
        using var model = GenerationTestModel.Create(scale: 2);
        var generator = GenerationTestModel.Generator(model);
        var options = new GenerationOptions { MaxNewTokens = 24, Seed = 42, NumReturnSequences = 3, TopP = 0.95f };
        var first = generator.Generate(Prompts, options);
        Assert.Equal(Prompts.Length * 3, first.Count);
        Assert.Equal(first, generator.Generate(Prompts, options));
        Assert.Equal(3, first.Take(3).Distinct().Count());
        options.Seed = 43;
        Assert.NotEqual(first, generator.Generate(Prompts, options));
    }

    [Fact]
    public void MinNewTokensBadWordsAndPenaltiesSteerTheChoice()
    {
        using var model = GenerationTestModel.Create();
        var generator = GenerationTestModel.Generator(model);
        var prompt = Encode("to be");
        var greedy = generator.GenerateTokens(prompt, Greedy(12));

        // The first greedy token as end of sequence: nothing is generated, unless MinNewTokens bans it for 5 tokens.
        var eos = Greedy(12);
        eos.EosTokenIds = [greedy[0]];
        Assert.Empty(generator.GenerateTokens(prompt, eos));
        eos.MinNewTokens = 5;
        var atLeastFive = generator.GenerateTokens(prompt, eos);
        Assert.True(atLeastFive.Length >= 5);
        Assert.DoesNotContain(greedy[0], atLeastFive.Take(5));

        // A banned single token never appears; a banned pair never appears as a pair.
        var bad = Greedy(12);
        bad.BadWordsIds = [[greedy[0]], [greedy[1], greedy[2]]];
        var steered = generator.GenerateTokens(prompt, bad);
        Assert.DoesNotContain(greedy[0], steered);
        Assert.DoesNotContain(steered.Zip(steered.Skip(1)), p => p.First == greedy[1] && p.Second == greedy[2]);

        // OpenAI's penalties on known logits: −(count · frequency + presence) for generated tokens only.
        float[] scores = [1f, 2f, 3f, 4f];
        TokenSampling.Process(scores, [3, 0, 0, 2, 0], promptLength: 1, new GenerationOptions { PresencePenalty = 0.5f, FrequencyPenalty = 0.25f });
        Assert.Equal(new[] { 1f - 0.75f - 0.5f, 2f, 3f - 0.25f - 0.5f, 4f }, scores);
    }

    [Fact]
    public void LongPromptsAreTruncatedOrRejectedAndAFullContextSlidesOrStops()
    {
        using var model = GenerationTestModel.Create(contextLength: 16);
        var generator = GenerationTestModel.Generator(model);
        string longPrompt = "whether tis nobler in the mind to suffer";
        var tokens = Encode(longPrompt);
        var options = Greedy(5);
        Assert.Equal(GenerationTestModel.ArgmaxChain(model, tokens[^16..], 5), generator.GenerateTokens(tokens, options));

        options.PromptOverflow = PromptOverflow.Throw;
        var ex = Assert.Throws<ArgumentException>(() => generator.Generate(longPrompt, options));
        Assert.Equal("The prompt has 40 tokens, more than the model's context of 16 (GptConfig.ContextLength); shorten it, or set GenerationOptions.PromptOverflow = PromptOverflow.TruncateLeft to keep its last 16 tokens. (Parameter 'prompt')", ex.Message);

        var stop = Greedy(30);
        stop.ContextOverflow = ContextOverflow.Stop;
        Assert.Equal(16 - 5 + 1, generator.GenerateTokens(Encode("to be"), stop).Length);   // the token predicted at the last position ends it
    }

    public static TheoryData<GenerationOptions, string> InvalidCombinations() => new()
    {
        { new() { NumBeams = 0 }, "GenerationOptions.NumBeams is 0; expected an integer of at least 1 (1 turns beam search off). (Parameter 'NumBeams')" },
        { new() { NumBeams = 2, DoSample = false, NumReturnSequences = 3 }, "GenerationOptions.NumReturnSequences is 3; expected an integer from 1 to NumBeams (2): beam search returns at most one sequence per beam. (Parameter 'NumReturnSequences')" },
        { new() { DoSample = false, NumReturnSequences = 2 }, "GenerationOptions.NumReturnSequences is 2; expected 1 with greedy decoding (every sequence would be the same); set DoSample = true or NumBeams ≥ NumReturnSequences. (Parameter 'NumReturnSequences')" },
        { new() { NumReturnSequences = 0 }, "GenerationOptions.NumReturnSequences is 0; expected an integer of at least 1. (Parameter 'NumReturnSequences')" },
        { new() { NoRepeatNgramSize = -1 }, "GenerationOptions.NoRepeatNgramSize is -1; expected a non-negative integer (0 turns the constraint off). (Parameter 'NoRepeatNgramSize')" },
        { new() { PresencePenalty = 2.5f }, "GenerationOptions.PresencePenalty is 2.5; expected a number in [-2, 2] (0 turns the penalty off). (Parameter 'PresencePenalty')" },
        { new() { FrequencyPenalty = float.NaN }, "GenerationOptions.FrequencyPenalty is NaN; expected a number in [-2, 2] (0 turns the penalty off). (Parameter 'FrequencyPenalty')" },
        { new() { MinNewTokens = 300 }, "GenerationOptions.MinNewTokens is 300; expected an integer from 0 to MaxNewTokens (256). (Parameter 'MinNewTokens')" },
        { new() { LengthPenalty = float.PositiveInfinity }, "GenerationOptions.LengthPenalty is Infinity; expected a finite number (1 divides by the length, 0 ranks by total log-probability). (Parameter 'LengthPenalty')" },
        { new() { BadWordsIds = [[1], []] }, "GenerationOptions.BadWordsIds[1] is []; expected a non-empty list of non-negative token ids. (Parameter 'BadWordsIds')" },
        { new() { BadWordsIds = [[1, -2]] }, "GenerationOptions.BadWordsIds[0] is [1, -2]; expected a non-empty list of non-negative token ids. (Parameter 'BadWordsIds')" },
        { new() { PromptOverflow = (PromptOverflow)7 }, "GenerationOptions.PromptOverflow is 7; expected TruncateLeft or Throw. (Parameter 'PromptOverflow')" },
    };

    [Theory]
    [MemberData(nameof(InvalidCombinations))]
    public void InvalidOptionsNameTheOptionTheValueAndTheRange(GenerationOptions options, string message)
    {
        var ex = Assert.ThrowsAny<ArgumentException>(options.Validate);
        Assert.Equal(message, ex.Message);
    }
}
