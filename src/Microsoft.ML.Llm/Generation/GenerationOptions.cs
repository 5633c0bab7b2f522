using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>
/// How text is generated: the length limit, how each next token is chosen, and when to stop. The names follow
/// Hugging Face's <c>GenerationConfig</c> (<c>max_new_tokens</c> → <see cref="MaxNewTokens"/>, ...), so settings carry
/// over from Python unchanged.
/// </summary>
/// <remarks>
/// With <see cref="DoSample"/> on, the next token is drawn after these steps, each off at its default
/// (see <see cref="TokenSampling.NextToken"/>): repetition penalty → temperature → top-k → top-p → min-p.
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
    /// negative ones multiplied. 1 turns it off; above 1 discourages repetition.
    /// </summary>
    public float RepetitionPenalty { get; set; } = Defaults.RepetitionPenalty;

    /// <summary>The seed of the sampling generator: the same seed, model and prompt give the same text. Null: unseeded.</summary>
    public int? Seed { get; set; }

    /// <summary>Generation stops when the generated text contains one of these strings (which is not part of the output).</summary>
    public IList<string> StopStrings { get; set; } = [];

    /// <summary>Generation stops after any of these token ids (end of sequence); none when empty.</summary>
    public IList<int> EosTokenIds { get; set; } = [];

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
