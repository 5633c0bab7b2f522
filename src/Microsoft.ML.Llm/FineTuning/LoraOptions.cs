namespace Microsoft.ML.Llm;

/// <summary>How the A matrix of a LoRA adapter starts (B always starts at zero, so the adapted model equals the base).</summary>
public enum LoraInitialization
{
    /// <summary>Kaiming-uniform with a = √5, as <c>nn.Linear</c> and PEFT's default (<c>init_lora_weights=True</c>).</summary>
    KaimingUniform,

    /// <summary>Normal with standard deviation 1/rank, as PEFT's <c>init_lora_weights="gaussian"</c>.</summary>
    Gaussian,
}

/// <summary>What a model zip holds for a model with LoRA adapters (<see cref="CausalLmTransformer.LoraSaveMode"/>).</summary>
public enum LoraSaveMode
{
    /// <summary>The adapters merged into the base weights: an ordinary model zip of the full model, loadable with no base.</summary>
    Merged,

    /// <summary>
    /// The adapters alone (a small zip), with the path and the weight hash of their base model; loading reads the base from
    /// that path and refuses a base whose weights differ. Needs a base that was given as a path
    /// (<see cref="CausalLmTrainerOptions.InitialModel"/> = a model zip or a Hugging Face folder).
    /// </summary>
    Adapters,
}

/// <summary>
/// Low-rank adaptation (LoRA, Hu et al. 2021) for <see cref="CausalLmTrainerOptions.Lora"/>: the base weights are frozen
/// (no gradients, no optimizer state) and each targeted linear layer W gains a trainable update
/// <c>ΔW = (alpha / rank) · B·A</c> with A (rank × in) and B (out × rank), B starting at zero. Names and defaults follow
/// Hugging Face PEFT's <c>LoraConfig</c> (<c>r</c>, <c>lora_alpha</c>, <c>lora_dropout</c>, <c>target_modules</c>,
/// <c>use_rslora</c>, <c>init_lora_weights</c>); see docs/ARCHITECTURE.md §8.
/// </summary>
public sealed class LoraOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        /// <summary>PEFT's default <c>r</c>.</summary>
        public const int Rank = 8;

        /// <summary>Twice the rank, the common recipe (PEFT's own default is 8).</summary>
        public const double Alpha = 16;

        /// <summary>Dropout on the adapter's input, as the common recipes (PEFT's own default is 0).</summary>
        public const double Dropout = 0.05;

        /// <summary>A starts Kaiming-uniform, PEFT's default.</summary>
        public const LoraInitialization Initialization = LoraInitialization.KaimingUniform;

        /// <summary>Merged: the saved zip is an ordinary model.</summary>
        public const LoraSaveMode SaveMode = LoraSaveMode.Merged;
    }

    /// <summary>The rank r of each adapter (A is r × in, B is out × r); PEFT's <c>r</c>.</summary>
    public int Rank { get; set; } = Defaults.Rank;

    /// <summary>The scale numerator: the update is multiplied by Alpha / Rank (Alpha / √Rank with <see cref="UseRsLora"/>);
    /// PEFT's <c>lora_alpha</c>.</summary>
    public double Alpha { get; set; } = Defaults.Alpha;

    /// <summary>Dropout probability on the adapter's input during training, in [0, 1); PEFT's <c>lora_dropout</c>.</summary>
    public double Dropout { get; set; } = Defaults.Dropout;

    /// <summary>
    /// The linear layers that get adapters, by name: Hugging Face / PEFT names (<c>q_proj</c>, <c>k_proj</c>,
    /// <c>v_proj</c>, <c>o_proj</c>, <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c> for the modern (Llama) style;
    /// <c>c_attn</c>, <c>c_proj</c>, <c>c_fc</c> for GPT-2), our module paths (<c>attn.c_attn</c>, <c>attn.c_proj</c>,
    /// <c>mlp.c_fc</c>, <c>mlp.c_proj</c>) or <c>all-linear</c>. A name matches every layer it names in every block
    /// (<c>c_proj</c> is both the attention's and the MLP's output projection, as in PEFT). Our fused layers take slices:
    /// <c>q_proj</c> adapts the query rows of <c>attn.c_attn</c>, <c>gate_proj</c> the first half of the modern
    /// <c>mlp.c_fc</c>. Null or empty: PEFT's default for the architecture — <c>c_attn</c> for GPT-2, <c>q_proj</c> and
    /// <c>v_proj</c> for the modern style.
    /// </summary>
    public IReadOnlyList<string>? TargetModules { get; set; }

    /// <summary>Rank-stabilised LoRA (Kalajdzievski 2023): scale by Alpha / √Rank instead of Alpha / Rank; PEFT's <c>use_rslora</c>.</summary>
    public bool UseRsLora { get; set; }

    /// <summary>How A starts (B starts at zero).</summary>
    public LoraInitialization Initialization { get; set; } = Defaults.Initialization;

    /// <summary>What saving the trained model writes (<see cref="CausalLmTransformer.LoraSaveMode"/> starts with this value).</summary>
    public LoraSaveMode SaveMode { get; set; } = Defaults.SaveMode;

    /// <summary>The factor applied to B·A: Alpha / Rank, or Alpha / √Rank with <see cref="UseRsLora"/> (PEFT's <c>scaling</c>).</summary>
    public double Scaling => UseRsLora ? Alpha / Math.Sqrt(Rank) : Alpha / Rank;

    /// <summary>A copy (the model keeps its own, so later changes to these options do not change it).</summary>
    public LoraOptions Clone() => new()
    {
        Rank = Rank,
        Alpha = Alpha,
        Dropout = Dropout,
        TargetModules = TargetModules?.ToArray(),
        UseRsLora = UseRsLora,
        Initialization = Initialization,
        SaveMode = SaveMode,
    };

    /// <summary>Checks the numbers; messages name the option, the value and what is accepted. Targets are checked
    /// against a model's layers when the adapters are added (<see cref="LoraTargets.Resolve"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value is out of range.</exception>
    public void Validate()
    {
        if (Rank <= 0)
            throw new ArgumentOutOfRangeException(nameof(Rank), Rank, $"LoraOptions.Rank is {Rank}; expected a positive integer (PEFT's r, typically 8 to 64).");
        if (!(Alpha > 0) || double.IsInfinity(Alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(Alpha), Alpha,
                $"LoraOptions.Alpha is {Alpha.ToString(CultureInfo.InvariantCulture)}; expected a positive finite number (PEFT's lora_alpha, typically 1 to 2 × Rank).");
        }

        if (!(Dropout >= 0 && Dropout < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Dropout), Dropout,
                $"LoraOptions.Dropout is {Dropout.ToString(CultureInfo.InvariantCulture)}; expected a probability in [0, 1).");
        }

        if (!Enum.IsDefined(Initialization))
            throw new ArgumentOutOfRangeException(nameof(Initialization), Initialization, $"LoraOptions.Initialization is {(int)Initialization}; expected KaimingUniform or Gaussian.");
        if (!Enum.IsDefined(SaveMode))
            throw new ArgumentOutOfRangeException(nameof(SaveMode), SaveMode, $"LoraOptions.SaveMode is {(int)SaveMode}; expected Merged or Adapters.");
        if (TargetModules is { } targets)
        {
            foreach (var t in targets)
            {
                if (string.IsNullOrWhiteSpace(t))
                    throw new ArgumentException("LoraOptions.TargetModules holds an empty name; expected module names such as \"q_proj\" or \"c_attn\".", nameof(TargetModules));
            }
        }
    }
}
