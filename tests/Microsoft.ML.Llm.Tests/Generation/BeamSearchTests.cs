using Microsoft.ML.Llm.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Generation;

/// <summary>
/// Beam search beyond the basics of <see cref="DecodingTests"/>: Hugging Face's three <c>early_stopping</c> modes, beam
/// sampling, stop strings that end beams. References are full forward passes without a cache
/// (<see cref="GenerationTestModel"/>).
/// </summary>
[Collection("Torch")]
public class BeamSearchTests
{
    private static readonly string[] Prompts = ["to be", "whether tis nobler in", "a", "the slings and arrows of out"];

    private static int[] Encode(string text) => GenerationTestModel.Tokenizer.Encode(text);

    private static string Decode(int[] tokens) => GenerationTestModel.Tokenizer.Decode(tokens);

    private static Decoding.Hypothesis Finished(double score) => new([], score, score);

    [Fact]
    public void EachEarlyStoppingModeAppliesHuggingFacesIsDoneRule()
    {
        // Two beams, both finished with scores −2 and −3 (worst −3); 4 tokens generated of at most 10.
        var finished = new List<Decoding.Hypothesis> { Finished(-2), Finished(-3) };
        bool Done(BeamEarlyStopping mode, double bestRunningSum, float lengthPenalty, List<Decoding.Hypothesis>? list = null) =>
            Decoding.IsDone(list ?? finished, bestRunningSum, length: 4,
                new GenerationOptions { NumBeams = 2, MaxNewTokens = 10, LengthPenalty = lengthPenalty, EarlyStopping = mode });

        // Fewer finished hypotheses than beams: never done, whatever the mode.
        foreach (var mode in Enum.GetValues<BeamEarlyStopping>())
        {
            Assert.False(Done(mode, -1000, 1, [Finished(-2)]));
        }

        // WhenBeamsFinished (HF True): done as soon as NumBeams are finished, even if a running beam is better.
        Assert.True(Done(BeamEarlyStopping.WhenBeamsFinished, -0.1, 1));

        // Heuristic (HF False): the best running sum scored at the current length: −8/4 = −2 > −3 goes on; −16/4 = −4 stops.
        Assert.False(Done(BeamEarlyStopping.Heuristic, -8, 1));
        Assert.True(Done(BeamEarlyStopping.Heuristic, -16, 1));
        Assert.True(Done(BeamEarlyStopping.Heuristic, -12, 1));         // −3 ≤ −3: no strict improvement possible

        // Never (HF "never") with LengthPenalty > 0: scored at the length limit: −16/10 = −1.6 > −3 goes on; −40/10 = −4 stops.
        Assert.False(Done(BeamEarlyStopping.Never, -16, 1));
        Assert.True(Done(BeamEarlyStopping.Never, -40, 1));
        Assert.False(Done(BeamEarlyStopping.Never, -40, 2));            // −40/10² = −0.4
        Assert.True(Done(BeamEarlyStopping.Never, -400, 2));            // −4

        // Never with LengthPenalty ≤ 0: at the current length, as the heuristic (−16·4^0.5 = −32 for −0.5).
        Assert.True(Done(BeamEarlyStopping.Never, -16, 0));
        Assert.False(Done(BeamEarlyStopping.Never, -2.5, 0));
        Assert.True(Done(BeamEarlyStopping.Never, -16, -0.5f));
        Assert.False(Done(BeamEarlyStopping.Never, -1, -0.5f));         // −1·2 = −2 > −3
    }

    [Fact]
    public void TheThreeEarlyStoppingModesStopWhereHuggingFaceStopsOnAKnownBigramModel()
    {
        // After "a": end 0.5, "c" 0.4, "b" 0.1; after "b" or "c": "a". A hypothesis "(ca)ⁿ." sums n·ln 0.4 + ln 0.5 over
        // 2n + 1 tokens, so with LengthPenalty 1 longer is better: −0.693 (n = 0), −0.536, −0.505, −0.492, and "(ca)⁴"
        // at the 8-token limit −0.458. Two beams.
        var tokenizer = LmTokenizer.Character(["abc."]);
        var table = new Dictionary<(char, char), double> { [('a', '.')] = 0.5, [('a', 'c')] = 0.4, [('a', 'b')] = 0.1, [('b', 'a')] = 1, [('c', 'a')] = 1 };
        using var model = GenerationTestModel.Bigram(tokenizer, table);
        var prompt = tokenizer.Encode("a");
        int end = tokenizer.Encode(".")[0];
        var afterA = GenerationTestModel.NextLogProbs(model, prompt);
        Assert.Equal(Math.Log(0.4), afterA[tokenizer.Encode("c")[0]], 4);   // the construction gives the table's probabilities
        Assert.Equal(Math.Log(0.5), afterA[end], 4);

        static double Score(int n) => (n * Math.Log(0.4) + Math.Log(0.5)) / (2 * n + 1);
        var expected = new Dictionary<BeamEarlyStopping, (string Text, double Score)[]>
        {
            // HF True: done when two are finished: "" at step 1 and "ca" at step 3.
            [BeamEarlyStopping.WhenBeamsFinished] = [("ca", Score(1)), ("", Score(0))],
            // HF False: "caca." replaces ""; then the running "cacac" (sum 3·ln 0.4) scored at its length 5, −0.550,
            // cannot beat the worst finished (−0.536): done, although it would have.
            [BeamEarlyStopping.Heuristic] = [("caca", Score(2)), ("ca", Score(1))],
            // HF "never": the running beam scored at the 8-token limit (−0.344 at that point) could still win: it goes on
            // to the limit and finds the best two.
            [BeamEarlyStopping.Never] = [("cacacaca", 4 * Math.Log(0.4) / 8), ("cacaca", Score(3))],
        };
        foreach (var (mode, hypotheses) in expected)
        {
            var options = new GenerationOptions { DoSample = false, MaxNewTokens = 8, NumBeams = 2, NumReturnSequences = 2, LengthPenalty = 1, EosTokenIds = [end], EarlyStopping = mode };
            var found = Decoding.BeamSearch(model, [prompt], options, CancellationToken.None)[0];
            Assert.Equal(hypotheses.Select(h => h.Text), found.Select(h => tokenizer.Decode(h.Tokens)));
            for (int i = 0; i < hypotheses.Length; i++)
            {
                Assert.Equal(hypotheses[i].Score, found[i].Score, 4);
            }

            Assert.Equal(hypotheses.Select(h => h.Text), new TextGenerator(model, tokenizer).Generate(["a"], options));
        }
    }

    [Fact]
    public void TheLogitsProcessorsActOnTheLogSoftmaxAsInHuggingFacesBeamSearch()
    {
        // Unnormalised bigram weights w (logits ln w; the construction gives logits, not probabilities, when a row does
        // not sum to 1): after "a": a 4, b 2, c 1; after "b": a 1, b 3, c 2; after "c": a 2, b 1, c 5.
        var tokenizer = LmTokenizer.Character(["abc"]);
        var weights = new Dictionary<(char, char), double>
        {
            [('a', 'a')] = 4,
            [('a', 'b')] = 2,
            [('a', 'c')] = 1,
            [('b', 'a')] = 1,
            [('b', 'b')] = 3,
            [('b', 'c')] = 2,
            [('c', 'a')] = 2,
            [('c', 'b')] = 1,
            [('c', 'c')] = 5,
        };
        using var model = GenerationTestModel.Bigram(tokenizer, weights);
        const double penalty = 2;

        // Hugging Face's _beam_search: log_softmax(logits), then the repetition penalty on those log-probabilities (all
        // negative: a token already in the sequence has its log-probability multiplied by the penalty). The old order
        // penalised the raw logits (a positive one divided), then took the log_softmax.
        static double Penalise(double score) => score < 0 ? score * penalty : score / penalty;
        double Step(string history, char next, bool huggingFace)
        {
            var row = "abc".ToDictionary(v => v, v => Math.Log(weights[(history[^1], v)]));
            if (!huggingFace)
            {
                row = row.ToDictionary(e => e.Key, e => history.Contains(e.Key) ? Penalise(e.Value) : e.Value);
            }

            double logTotal = Math.Log(row.Values.Sum(Math.Exp));
            double logProbability = row[next] - logTotal;
            return huggingFace && history.Contains(next) ? Penalise(logProbability) : logProbability;
        }

        // Three beams over three tokens and two new tokens: the first step keeps every token, so the three hypotheses
        // are the three best two-token continuations of "a", each scored sum / 2 (LengthPenalty 1).
        (string Text, double Score)[] Best(bool huggingFace) =>
            [.. from x in "abc" from y in "abc"
                let text = string.Concat(x, y)
                let sum = Step("a", x, huggingFace) + Step("a" + x, y, huggingFace)
                orderby sum descending
                select (text, sum / 2)];

        var expected = Best(huggingFace: true).Take(3).ToArray();
        // By hand: "aa" = 2·ln(4/7)·2 = −2.2385 (→ −1.1192); "bc" = ln(2/7) + ln(2/6) = −2.3514 (→ −1.1757);
        // "ab" = 2·ln(4/7) + ln(2/7) = −2.3720 (→ −1.1860).
        Assert.Equal(["aa", "bc", "ab"], expected.Select(h => h.Text));
        Assert.Equal(4 * Math.Log(4.0 / 7) / 2, expected[0].Score, 9);
        Assert.Equal((Math.Log(2.0 / 7) + Math.Log(2.0 / 6)) / 2, expected[1].Score, 9);
        Assert.Equal((2 * Math.Log(4.0 / 7) + Math.Log(2.0 / 7)) / 2, expected[2].Score, 9);

        var options = new GenerationOptions { DoSample = false, MaxNewTokens = 2, NumBeams = 3, NumReturnSequences = 3, LengthPenalty = 1, RepetitionPenalty = (float)penalty };
        var found = Decoding.BeamSearch(model, [tokenizer.Encode("a")], options, CancellationToken.None)[0];
        Assert.Equal(expected.Select(h => h.Text), found.Select(h => tokenizer.Decode(h.Tokens)));
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i].Score, found[i].Score, 4);
            Assert.Equal(expected[i].Score * 2, found[i].SumLogProbs, 4);
        }

        Assert.Equal(expected.Select(h => h.Text), new TextGenerator(model, tokenizer).Generate(["a"], options));

        // The old order gives another best hypothesis: "bc", ln(2/5) + ln(2/(3 + √3)) = −1.7775 (after "a" the penalised
        // logit ln 4 / 2 = ln 2 ties "b"; after "ab" the logits 0, ln 3 / 2, ln 2 weigh 1, √3, 2).
        var old = Best(huggingFace: false);
        Assert.Equal("bc", old[0].Text);
        Assert.Equal((Math.Log(2.0 / 5) + Math.Log(2 / (3 + Math.Sqrt(3)))) / 2, old[0].Score, 9);
        Assert.NotEqual(old[0].Text, tokenizer.Decode(found[0].Tokens));
        Assert.NotEqual(old[0].Score, found[0].Score, 2);
    }

    [Fact]
    public void BeamSamplingIsSeededAndDiffersBetweenSeeds()
    {
        using var model = GenerationTestModel.Create(scale: 1.5);
        var generator = GenerationTestModel.Generator(model);
        var options = new GenerationOptions { DoSample = true, NumBeams = 3, NumReturnSequences = 2, MaxNewTokens = 16, Seed = 42 };
        var first = generator.Generate(Prompts, options);
        Assert.Equal(Prompts.Length * 2, first.Count);
        Assert.Equal(first, generator.Generate(Prompts, options));
        Assert.Equal(generator.Generate([Prompts[0]], options)[0], generator.Generate(Prompts[0], options));   // the best one

        options.Seed = 43;
        var other = generator.Generate(Prompts, options);
        Assert.NotEqual(first, other);

        // Sampling, not search: the seeds' results differ from beam search's.
        var search = generator.Generate(Prompts, new GenerationOptions { DoSample = false, NumBeams = 3, NumReturnSequences = 2, MaxNewTokens = 16 });
        Assert.NotEqual(search, first);
    }

    [Fact]
    public void BeamSamplingAtAVanishingTemperatureIsBeamSearch()
    {
        // log p / T with T → 0: the softmax over the candidates puts all mass on the best one, then (without replacement)
        // on the next: the draws are beam search's top candidates in order, and every score is beam search's divided by T.
        using var model = GenerationTestModel.Create(seed: 11, scale: 3);
        var prompts = Prompts.Select(Encode).ToArray();
        int eos = GenerationTestModel.ArgmaxChain(model, prompts[0], 4)[3];
        const float temperature = 1e-5f;
        foreach (var mode in Enum.GetValues<BeamEarlyStopping>())
        {
            var search = new GenerationOptions { DoSample = false, MaxNewTokens = 10, NumBeams = 3, NumReturnSequences = 3, EosTokenIds = [eos], EarlyStopping = mode };
            var sample = search.Clone();
            sample.DoSample = true;
            sample.Temperature = temperature;
            sample.Seed = 7;
            var expected = Decoding.BeamSearch(model, prompts, search, CancellationToken.None);
            var actual = Decoding.BeamSearch(model, prompts, sample, CancellationToken.None);
            for (int p = 0; p < prompts.Length; p++)
            {
                Assert.Equal(expected[p].Select(h => h.Tokens), actual[p].Select(h => h.Tokens));
                for (int i = 0; i < expected[p].Count; i++)
                {
                    Assert.Equal(expected[p][i].Score, actual[p][i].Score * temperature, 3);
                }
            }
        }
    }

    [Fact]
    public void BeamSamplingScoresAreTheWarpedLogProbabilitiesAndTopKKeepsTwoTokensPerBeam()
    {
        using var model = GenerationTestModel.Create(scale: 2);
        var prompts = Prompts.Select(Encode).ToArray();

        // Temperature 0.7, no filter, no end of sequence: every hypothesis has 10 tokens and sums log p / 0.7.
        var warm = new GenerationOptions { DoSample = true, MaxNewTokens = 10, NumBeams = 3, NumReturnSequences = 3, Temperature = 0.7f, LengthPenalty = 0, Seed = 3 };
        var hypotheses = Decoding.BeamSearch(model, prompts, warm, CancellationToken.None);
        for (int p = 0; p < prompts.Length; p++)
        {
            Assert.Equal(3, hypotheses[p].Count);
            foreach (var h in hypotheses[p])
            {
                Assert.Equal(10, h.Tokens.Length);
                Assert.Equal(GenerationTestModel.LogProbability(model, prompts[p], h.Tokens) / 0.7, h.SumLogProbs, 3);
                Assert.Equal(h.SumLogProbs, h.Score, 9);
            }
        }

        // TopK = 1 keeps two tokens per beam (HF's min_tokens_to_keep with beams), TopK = 3 three: every token chosen is
        // among that many most likely ones at its position, and the second choice does get used.
        foreach (int k in new[] { 1, 3 })
        {
            var filtered = new GenerationOptions { DoSample = true, MaxNewTokens = 8, NumBeams = 2, NumReturnSequences = 2, TopK = k, Seed = 11 };
            int kept = Math.Max(k, 2);
            bool usedSecond = false;
            var results = Decoding.BeamSearch(model, prompts, filtered, CancellationToken.None);
            for (int p = 0; p < prompts.Length; p++)
            {
                foreach (var h in results[p])
                {
                    var sequence = new List<int>(prompts[p]);
                    foreach (int token in h.Tokens)
                    {
                        var logProbs = GenerationTestModel.NextLogProbs(model, sequence);
                        int rank = logProbs.Count(l => l > logProbs[token]);
                        Assert.True(rank < kept, $"TopK {k}: token {token} has rank {rank}");
                        usedSecond |= rank == 1;
                        sequence.Add(token);
                    }
                }
            }

            Assert.True(usedSecond, $"TopK {k}: no second-ranked token was ever drawn; the test proves nothing");
        }
    }

    [Fact]
    public void DrawingWithoutReplacementFollowsTheSoftmaxOfWhatIsLeft()
    {
        using var generator = new Generator(5);

        // Probabilities 0.5, 0.3, 0.2 (and a masked candidate): P(first i, second j) = p_i · p_j / (1 − p_i).
        double[] scores = [Math.Log(0.5), Math.Log(0.3), double.NegativeInfinity, Math.Log(0.2)];
        double[] p = [0.5, 0.3, 0, 0.2];
        var counts = new Dictionary<(int, int), int>();
        const int draws = 20000;
        for (int n = 0; n < draws; n++)
        {
            var drawn = TokenSampling.DrawWithoutReplacement(scores, 2, generator);
            counts[(drawn[0], drawn[1])] = counts.GetValueOrDefault((drawn[0], drawn[1])) + 1;
        }

        foreach (int i in new[] { 0, 1, 3 })
        {
            foreach (int j in new[] { 0, 1, 3 }.Where(j => j != i))
            {
                double expected = p[i] * p[j] / (1 - p[i]);
                double sigma = Math.Sqrt(expected * (1 - expected) / draws);
                double observed = counts.GetValueOrDefault((i, j)) / (double)draws;
                Assert.True(Math.Abs(observed - expected) < 4 * sigma, $"pair ({i}, {j}): {observed} against {expected}");
            }
        }

        Assert.DoesNotContain(counts.Keys, k => k.Item1 == 2 || k.Item2 == 2);   // −∞ is never drawn

        // More draws than possible: every finite candidate once. Far-apart scores (no weight left after the first draws,
        // in double precision): still drawn, best first.
        Assert.Equal(new[] { 0, 1, 3 }, TokenSampling.DrawWithoutReplacement(scores, 10, generator).Order());
        Assert.Equal(new[] { 2, 0, 3, 1 }, TokenSampling.DrawWithoutReplacement([-1e4, -3e6, 0, -2e5], 4, generator));

        // The same seed draws the same candidates.
        double[] flat = Enumerable.Range(0, 50).Select(i => -0.01 * i).ToArray();
        using var a = new Generator(9);
        using var b = new Generator(9);
        Assert.Equal(TokenSampling.DrawWithoutReplacement(flat, 8, a), TokenSampling.DrawWithoutReplacement(flat, 8, b));
    }

    [Fact]
    public void AStopStringFinishesTheBeamThatCompletesItAndItsTextIsCutBeforeIt()
    {
        // The bigram model of the early-stopping test; "never" would run the beams to the 8-token limit
        // ("cacacaca", "cacaca"), but the stop string "aca" ends a beam at its 4th token: "caca" (sum 2·ln 0.4 over 4
        // tokens, the one completing the stop string counted as an end-of-sequence token is) beats "ca." and nothing
        // running can beat "ca." any more.
        var tokenizer = LmTokenizer.Character(["abc."]);
        var table = new Dictionary<(char, char), double> { [('a', '.')] = 0.5, [('a', 'c')] = 0.4, [('a', 'b')] = 0.1, [('b', 'a')] = 1, [('c', 'a')] = 1 };
        using var model = GenerationTestModel.Bigram(tokenizer, table);
        var generator = new TextGenerator(model, tokenizer);
        var prompt = tokenizer.Encode("a");
        var options = new GenerationOptions
        {
            DoSample = false,
            MaxNewTokens = 8,
            NumBeams = 2,
            NumReturnSequences = 2,
            EosTokenIds = [tokenizer.Encode(".")[0]],
            EarlyStopping = BeamEarlyStopping.Never,
            StopStrings = ["aca"],
        };
        bool HitsStop(int[] generated) => tokenizer.Decode(generated).Contains("aca", StringComparison.Ordinal);

        var stopped = Decoding.BeamSearch(model, [prompt], options, CancellationToken.None, HitsStop)[0];
        Assert.Equal(["caca", "ca"], stopped.Select(h => tokenizer.Decode(h.Tokens)));
        Assert.Equal(2 * Math.Log(0.4) / 4, stopped[0].Score, 4);
        Assert.Equal(2 * Math.Log(0.4), stopped[0].SumLogProbs, 4);
        Assert.Equal((Math.Log(0.4) + Math.Log(0.5)) / 3, stopped[1].Score, 4);

        // The text API ends beams the same way and cuts each text before its stop string.
        Assert.Equal(["c", "ca"], generator.Generate(["a"], options));
        Assert.Equal("c", generator.Generate("a", options));

        // Stop strings that only cut the text (the beams running on) would have given "c" twice.
        var running = Decoding.BeamSearch(model, [prompt], options, CancellationToken.None)[0];
        Assert.Equal(["cacacaca", "cacaca"], running.Select(h => tokenizer.Decode(h.Tokens)));

        // Beam sampling too: a sampled beam ends at the token completing the stop string, never later.
        var sampled = options.Clone();
        sampled.DoSample = true;
        int endedByStop = 0;
        foreach (int seed in Enumerable.Range(1, 5))
        {
            sampled.Seed = seed;
            foreach (var h in Decoding.BeamSearch(model, [prompt], sampled, CancellationToken.None, HitsStop)[0])
            {
                for (int n = 1; n < h.Tokens.Length; n++)
                {
                    Assert.False(HitsStop(h.Tokens[..n]), $"'{tokenizer.Decode(h.Tokens)}' went on after the stop string");
                }

                endedByStop += HitsStop(h.Tokens) ? 1 : 0;
            }
        }

        Assert.True(endedByStop > 0, "no sampled beam hit the stop string; the test proves nothing");
    }

    [Fact]
    public void BeamSamplingKeepsTheReturnSequenceLimitAndTheOldRefusalIsGone()
    {
        new GenerationOptions { NumBeams = 3, DoSample = true, NumReturnSequences = 3, TopK = 5, TopP = 0.9f, MinP = 0.05f }.Validate();
        var ex = Assert.Throws<ArgumentOutOfRangeException>(new GenerationOptions { NumBeams = 2, DoSample = true, NumReturnSequences = 3 }.Validate);
        Assert.Equal("GenerationOptions.NumReturnSequences is 3; expected an integer from 1 to NumBeams (2): beam search returns at most one sequence per beam. (Parameter 'NumReturnSequences')", ex.Message);
        var mode = Assert.Throws<ArgumentOutOfRangeException>(new GenerationOptions { EarlyStopping = (BeamEarlyStopping)3 }.Validate);
        Assert.Equal("GenerationOptions.EarlyStopping is 3; expected Heuristic, WhenBeamsFinished or Never. (Parameter 'EarlyStopping')", mode.Message);
        Assert.Equal(BeamEarlyStopping.Heuristic, new GenerationOptions().EarlyStopping);   // HF's default, early_stopping=False
    }
}
