using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>
/// How text is generated: the length limit, how each next token is chosen, and when to stop. The names follow
/// Hugging Face's <c>GenerationConfig</c> (<c>max_new_tokens</c> → <see cref="MaxNewTokens"/>, ...), so settings carry
/// over from Python unchanged.
/// </summary>
/// <remarks>
/// With <see cref="DoSample"/> on, the next token is drawn after these steps, each off at its default
/// (see <see cref="TokenSampling.NextToken(TorchSharp.torch.Tensor, ReadOnlySpan{int}, int, GenerationOptions, TorchSharp.torch.Generator?)"/>): repetition penalty → temperature → top-k → top-p → min-p.
/// </remarks>
public sealed class GenerationOptions
{
    /// <summary>The default value of every option, written once.</summary>
    internal static class Defaults
    {
        public const int MaxNewTokens = 256;
        public const bool DoSample = true;
        public const float Temperature = 1.0f;
        public const int TopK = 0;
        public const float TopP = 1.0f;
        public const float MinP = 0f;
        public const float RepetitionPenalty = 1.0f;
        public const int NoRepeatNgramSize = 0;
        public const float PresencePenalty = 0f;
        public const float FrequencyPenalty = 0f;
        public const int MinNewTokens = 0;
        public const int NumReturnSequences = 1;
        public const int NumBeams = 1;
        public const float LengthPenalty = 1.0f;
        public const BeamEarlyStopping EarlyStopping = BeamEarlyStopping.Heuristic;
        public const PromptOverflow PromptOverflow = Llm.PromptOverflow.TruncateLeft;
        public const ContextOverflow ContextOverflow = Llm.ContextOverflow.SlideWindow;
        public const float MaxPenalty = 2f;
    }

    /// <summary>The largest number of tokens generated after the prompt.</summary>
    public int MaxNewTokens { get; set; } = Defaults.MaxNewTokens;

    /// <summary>Whether to sample the next token (true) or always take the most likely one (greedy decoding).</summary>
    public bool DoSample { get; set; } = Defaults.DoSample;

    /// <summary>Divides the logits before sampling: below 1 sharpens the distribution, above 1 flattens it. Must be positive.</summary>
    public float Temperature { get; set; } = Defaults.Temperature;

    /// <summary>Samples among the <c>TopK</c> most likely tokens only (ties with the k-th are kept); 0 turns the filter off.</summary>
    public int TopK { get; set; } = Defaults.TopK;

    /// <summary>
    /// Nucleus sampling (Holtzman et al. 2020): samples among the smallest set of most likely tokens whose probabilities
    /// sum to at least <c>TopP</c>; the most likely token is always kept. 1 turns the filter off.
    /// </summary>
    public float TopP { get; set; } = Defaults.TopP;

    /// <summary>
    /// Min-p sampling (Nguyen et al. 2024): drops tokens less likely than <c>MinP</c> times the most likely token's
    /// probability. 0 turns the filter off; 0.05 to 0.1 are common.
    /// </summary>
    public float MinP { get; set; } = Defaults.MinP;

    /// <summary>
    /// Penalises tokens already in the sequence (CTRL, Keskar et al. 2019): their positive logits are divided by it,
    /// negative ones multiplied. 1 turns it off; above 1 discourages repetition. Beam search applies it, as the other
    /// logits processors, to the log-probabilities (Hugging Face's <c>_beam_search</c>), which are ≤ 0: it multiplies them.
    /// </summary>
    public float RepetitionPenalty { get; set; } = Defaults.RepetitionPenalty;

    /// <summary>The seed of the sampling generator: the same seed, model and prompt give the same text. Null: unseeded.</summary>
    public int? Seed { get; set; }

    /// <summary>
    /// Generation stops when the generated text contains one of these strings (which is not part of the output). With
    /// beam search, a beam whose text completes one is a finished hypothesis, as if it had ended with an end-of-sequence
    /// id (Hugging Face's stopping criteria); its text is cut before the stop string. The token-id methods
    /// (<c>GenerateTokens</c>) do not decode text and ignore them.
    /// </summary>
    public IList<string> StopStrings { get; set; } = [];

    /// <summary>Generation stops after any of these token ids (end of sequence); none when empty.</summary>
    public IList<int> EosTokenIds { get; set; } = [];

    /// <summary>
    /// Forbids every n-gram of this size from occurring twice in the sequence (prompt included), as Hugging Face's
    /// <c>NoRepeatNGramLogitsProcessor</c>: a token that would complete an n-gram already present is never chosen.
    /// 0 turns it off.
    /// </summary>
    public int NoRepeatNgramSize { get; set; } = Defaults.NoRepeatNgramSize;

    /// <summary>
    /// OpenAI's presence penalty, in [-2, 2]: subtracted once from the logit of every token that already occurs among the
    /// generated tokens (the prompt does not count). Positive values push towards new topics; 0 turns it off.
    /// </summary>
    public float PresencePenalty { get; set; } = Defaults.PresencePenalty;

    /// <summary>
    /// OpenAI's frequency penalty, in [-2, 2]: subtracted from a token's logit once per occurrence among the generated
    /// tokens, so frequent tokens are penalised more. 0 turns it off.
    /// </summary>
    public float FrequencyPenalty { get; set; } = Defaults.FrequencyPenalty;

    /// <summary>
    /// The end-of-sequence ids (<see cref="EosTokenIds"/>) cannot be chosen before this many tokens are generated
    /// (Hugging Face's <c>min_new_tokens</c>). 0 turns it off.
    /// </summary>
    public int MinNewTokens { get; set; } = Defaults.MinNewTokens;

    /// <summary>
    /// Token sequences that must never be generated (Hugging Face's <c>bad_words_ids</c>): a one-token entry bans the token
    /// everywhere; a longer entry bans its last token whenever the sequence ends with the entry's other tokens.
    /// </summary>
    public IList<IList<int>> BadWordsIds { get; set; } = [];

    /// <summary>
    /// How many completions each prompt returns (Hugging Face's <c>num_return_sequences</c>): independent samples when
    /// <see cref="DoSample"/> is on without beams, the best finished beams with beam search or beam sampling (at most
    /// <see cref="NumBeams"/>). Greedy decoding without beams has a single answer, so it requires 1.
    /// </summary>
    public int NumReturnSequences { get; set; } = Defaults.NumReturnSequences;

    /// <summary>
    /// The number of beams of beam search (Hugging Face's <c>num_beams</c>); 1 is greedy decoding or sampling. Beam
    /// search keeps the <c>NumBeams</c> most likely partial sequences at every step (their keys and values are reordered
    /// in the cache, not recomputed) and returns the best finished hypotheses by length-normalised score
    /// (see <see cref="LengthPenalty"/> and <see cref="EarlyStopping"/>). With <see cref="DoSample"/> on it is Hugging
    /// Face's beam sampling: each beam's log-probabilities go through the warpers (<see cref="Temperature"/>,
    /// <see cref="TopK"/>, <see cref="TopP"/>, <see cref="MinP"/>, each keeping at least two tokens per beam, or one more than
    /// the end-of-sequence ids), are added to the beam's running score, and the candidates that continue are drawn from
    /// the softmax over all beams' candidates, without replacement, seeded by <see cref="Seed"/>.
    /// </summary>
    public int NumBeams { get; set; } = Defaults.NumBeams;

    /// <summary>
    /// The exponent of the length normalisation of beam search: a hypothesis scores sum(log p) / length^LengthPenalty,
    /// where length counts its generated tokens (the end-of-sequence token included). Above 0 favours longer sequences
    /// (log-probabilities are negative), below 0 shorter ones; 0 ranks by total log-probability.
    /// </summary>
    public float LengthPenalty { get; set; } = Defaults.LengthPenalty;

    /// <summary>
    /// When beam search stops working on a prompt (Hugging Face's <c>early_stopping</c>): once <see cref="NumBeams"/>
    /// hypotheses are finished (<see cref="BeamEarlyStopping.WhenBeamsFinished"/>, HF's <c>True</c>), once the best
    /// running beam scored at its current length cannot beat the worst finished one
    /// (<see cref="BeamEarlyStopping.Heuristic"/>, HF's <c>False</c>, the default), or only when no running beam can beat
    /// it even at the longest length still reachable (<see cref="BeamEarlyStopping.Never"/>, HF's <c>"never"</c>: the exact rule).
    /// </summary>
    public BeamEarlyStopping EarlyStopping { get; set; } = Defaults.EarlyStopping;

    /// <summary>What to do with a prompt longer than the model's context: keep its last tokens (default) or throw.</summary>
    public PromptOverflow PromptOverflow { get; set; } = Defaults.PromptOverflow;

    /// <summary>
    /// What happens when prompt and completion fill the model's context: slide the window (default; each further token
    /// sees the last <see cref="GptConfig.ContextLength"/> tokens, recomputed, as nanoGPT's <c>generate</c>) or stop.
    /// </summary>
    public ContextOverflow ContextOverflow { get; set; } = Defaults.ContextOverflow;

    /// <summary>A copy of these options (the lists copied too).</summary>
    public GenerationOptions Clone()
    {
        var copy = (GenerationOptions)MemberwiseClone();
        copy.StopStrings = StopStrings is null ? null! : [.. StopStrings];
        copy.EosTokenIds = EosTokenIds is null ? null! : [.. EosTokenIds];
        copy.BadWordsIds = BadWordsIds is null ? null! : BadWordsIds.Select(b => (IList<int>)(b is null ? null! : b.ToList())).ToList();
        return copy;
    }

    /// <summary>Checks every option and throws, naming the option, its value and the accepted range.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A number is outside its range, or NaN.</exception>
    /// <exception cref="ArgumentNullException">A list is null.</exception>
    /// <exception cref="ArgumentException">A list holds an invalid entry.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 1)
        {
            throw OutOfRange(nameof(MaxNewTokens), MaxNewTokens, "an integer of at least 1");
        }

        if (!(Temperature > 0 && float.IsFinite(Temperature)))
        {
            throw OutOfRange(nameof(Temperature), Temperature, "a positive finite number (1 leaves the logits unchanged)");
        }

        if (TopK < 0)
        {
            throw OutOfRange(nameof(TopK), TopK, "a non-negative integer (0 turns top-k off)");
        }

        if (!(TopP > 0 && TopP <= 1))
        {
            throw OutOfRange(nameof(TopP), TopP, "a number in (0, 1] (1 turns top-p off)");
        }

        if (!(MinP >= 0 && MinP <= 1))
        {
            throw OutOfRange(nameof(MinP), MinP, "a number in [0, 1] (0 turns min-p off)");
        }

        if (!(RepetitionPenalty > 0 && float.IsFinite(RepetitionPenalty)))
        {
            throw OutOfRange(nameof(RepetitionPenalty), RepetitionPenalty, "a positive finite number (1 turns the penalty off)");
        }

        if (NoRepeatNgramSize < 0)
        {
            throw OutOfRange(nameof(NoRepeatNgramSize), NoRepeatNgramSize, "a non-negative integer (0 turns the constraint off)");
        }

        if (!(PresencePenalty >= -Defaults.MaxPenalty && PresencePenalty <= Defaults.MaxPenalty))
        {
            throw OutOfRange(nameof(PresencePenalty), PresencePenalty, "a number in [-2, 2] (0 turns the penalty off)");
        }

        if (!(FrequencyPenalty >= -Defaults.MaxPenalty && FrequencyPenalty <= Defaults.MaxPenalty))
        {
            throw OutOfRange(nameof(FrequencyPenalty), FrequencyPenalty, "a number in [-2, 2] (0 turns the penalty off)");
        }

        if (MinNewTokens < 0 || MinNewTokens > MaxNewTokens)
        {
            throw OutOfRange(nameof(MinNewTokens), MinNewTokens, Invariant($"an integer from 0 to MaxNewTokens ({MaxNewTokens})"));
        }

        if (NumBeams < 1)
        {
            throw OutOfRange(nameof(NumBeams), NumBeams, "an integer of at least 1 (1 turns beam search off)");
        }

        if (!float.IsFinite(LengthPenalty))
        {
            throw OutOfRange(nameof(LengthPenalty), LengthPenalty, "a finite number (1 divides by the length, 0 ranks by total log-probability)");
        }

        if (NumReturnSequences < 1)
        {
            throw OutOfRange(nameof(NumReturnSequences), NumReturnSequences, "an integer of at least 1");
        }

        if (NumBeams > 1 && NumReturnSequences > NumBeams)
        {
            throw OutOfRange(nameof(NumReturnSequences), NumReturnSequences, Invariant($"an integer from 1 to NumBeams ({NumBeams}): beam search returns at most one sequence per beam"));
        }

        if (NumBeams == 1 && !DoSample && NumReturnSequences > 1)
        {
            throw OutOfRange(nameof(NumReturnSequences), NumReturnSequences, "1 with greedy decoding (every sequence would be the same); set DoSample = true or NumBeams ≥ NumReturnSequences");
        }

        if (!Enum.IsDefined(EarlyStopping))
        {
            throw OutOfRange(nameof(EarlyStopping), EarlyStopping, "Heuristic, WhenBeamsFinished or Never");
        }

        if (!Enum.IsDefined(PromptOverflow))
        {
            throw OutOfRange(nameof(PromptOverflow), PromptOverflow, "TruncateLeft or Throw");
        }

        if (!Enum.IsDefined(ContextOverflow))
        {
            throw OutOfRange(nameof(ContextOverflow), ContextOverflow, "SlideWindow or Stop");
        }

        if (BadWordsIds is null)
        {
            throw new ArgumentNullException(nameof(BadWordsIds), "GenerationOptions.BadWordsIds is null; expected a list, empty for none.");
        }

        for (int i = 0; i < BadWordsIds.Count; i++)
        {
            if (BadWordsIds[i] is not { Count: > 0 } word || word.Any(id => id < 0))
            {
                throw new ArgumentException(
                    Invariant($"GenerationOptions.BadWordsIds[{i}] is {(BadWordsIds[i] is null ? "null" : "[" + string.Join(", ", BadWordsIds[i]) + "]")}; expected a non-empty list of non-negative token ids."),
                    nameof(BadWordsIds));
            }
        }

        if (StopStrings is null)
        {
            throw new ArgumentNullException(nameof(StopStrings), "GenerationOptions.StopStrings is null; expected a list, empty for none.");
        }

        for (int i = 0; i < StopStrings.Count; i++)
        {
            if (string.IsNullOrEmpty(StopStrings[i]))
            {
                throw new ArgumentException(
                    Invariant($"GenerationOptions.StopStrings[{i}] is {(StopStrings[i] is null ? "null" : "empty")}; expected a non-empty string."),
                    nameof(StopStrings));
            }
        }

        if (EosTokenIds is null)
        {
            throw new ArgumentNullException(nameof(EosTokenIds), "GenerationOptions.EosTokenIds is null; expected a list, empty for none.");
        }

        for (int i = 0; i < EosTokenIds.Count; i++)
        {
            if (EosTokenIds[i] < 0)
            {
                throw new ArgumentException(
                    Invariant($"GenerationOptions.EosTokenIds[{i}] is {EosTokenIds[i]}; expected a non-negative token id."),
                    nameof(EosTokenIds));
            }
        }
    }

    private static ArgumentOutOfRangeException OutOfRange(string name, object value, string accepted) =>
        new(name, Invariant($"GenerationOptions.{name} is {value}; expected {accepted}."));
}

/// <summary>
/// When beam search stops working on a prompt: Hugging Face's <c>early_stopping</c> (True, False or "never"), as its
/// <c>BeamHypotheses.is_done</c> and the vectorised <c>_beam_search</c>'s <c>_check_early_stop_heuristic</c> decide it.
/// Whatever the mode, a prompt is never done before <see cref="GenerationOptions.NumBeams"/> hypotheses are finished
/// (or the length limit is reached); a hypothesis scores sum(log p) / length^<see cref="GenerationOptions.LengthPenalty"/>.
/// </summary>
public enum BeamEarlyStopping
{
    /// <summary>
    /// Hugging Face's <c>early_stopping=False</c> (the default): done when the best running beam, scored at the current
    /// length, is no better than the worst finished hypothesis. Cheap, but with <see cref="GenerationOptions.LengthPenalty"/>
    /// &gt; 0 a running beam could still have won by growing longer.
    /// </summary>
    Heuristic,

    /// <summary>Hugging Face's <c>early_stopping=True</c>: done as soon as <see cref="GenerationOptions.NumBeams"/> hypotheses are finished.</summary>
    WhenBeamsFinished,

    /// <summary>
    /// Hugging Face's <c>early_stopping="never"</c>, the canonical rule: done only when no running beam can beat the worst
    /// finished hypothesis. With <see cref="GenerationOptions.LengthPenalty"/> &gt; 0 the best running beam is scored at
    /// the length limit (<see cref="GenerationOptions.MaxNewTokens"/>), the best it could reach (its log-probability only
    /// falls); otherwise at the current length, as <see cref="Heuristic"/>.
    /// </summary>
    Never,
}

/// <summary>What <see cref="TextGenerator"/> does with a prompt longer than the model's context length.</summary>
public enum PromptOverflow
{
    /// <summary>Keep the prompt's last <see cref="GptConfig.ContextLength"/> tokens (the oldest fall out of view).</summary>
    TruncateLeft,

    /// <summary>Throw an <see cref="ArgumentException"/> naming the prompt's length and the context length.</summary>
    Throw,
}

/// <summary>What <see cref="TextGenerator"/> does when prompt and completion fill the model's context.</summary>
public enum ContextOverflow
{
    /// <summary>
    /// Slide the window: each further token is predicted from the last <see cref="GptConfig.ContextLength"/> tokens, as
    /// nanoGPT's <c>generate</c> crops its input. The model never saw positions beyond its context, so the window is run
    /// again from position 0 for every such token: past the context a token costs a full forward pass of the window
    /// instead of one position's work.
    /// </summary>
    SlideWindow,

    /// <summary>Stop generating when the context is full (the completion ends there).</summary>
    Stop,
}
