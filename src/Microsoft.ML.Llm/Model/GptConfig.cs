using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>
/// The two architectures <see cref="GptModel"/> builds.
/// </summary>
public enum GptStyle
{
    /// <summary>
    /// GPT-2 (Radford et al. 2019, as in nanoGPT's <c>model.py</c>): learned absolute positions, LayerNorm,
    /// a 4× MLP with GELU (<see cref="GptConfig.GeluApproximation"/>: GPT-2's tanh approximation by default), biases on
    /// every linear layer and norm.
    /// </summary>
    Gpt2,

    /// <summary>
    /// The Llama recipe (Touvron et al. 2023, as in litgpt's <c>LLaMAMLP</c>): rotary positions (RoPE), RMSNorm,
    /// a SwiGLU MLP, no biases anywhere.
    /// </summary>
    Modern,
}

/// <summary>
/// Which GELU the <see cref="GptStyle.Gpt2"/> MLP computes (PyTorch's <c>approximate</c> argument of <c>gelu</c>).
/// </summary>
public enum GeluApproximation
{
    /// <summary>
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): GPT-2's function (Hugging Face's <c>gelu_new</c>), needed to compute
    /// exactly what a GPT-2 checkpoint computed.
    /// </summary>
    Tanh,

    /// <summary>
    /// The exact GELU, x·Φ(x) = 0.5·x·(1 + erf(x/√2)): nanoGPT's <c>nn.GELU()</c> (Hugging Face's <c>gelu</c>). On this
    /// project's 2-core CPU libtorch computes it about 3× faster than the tanh form (forward + backward of a
    /// 768 × 512 activation: 209 against 619 µs in bf16, 2 threads), because its tanh is a slow 1-ULP Sleef call.
    /// </summary>
    None,
}

/// <summary>
/// The shape of a decoder-only transformer: an immutable, validated value (litgpt's <c>config.py</c> style).
/// Everything derived from the primary sizes (head size, padded vocabulary, MLP width, biases) is computed in
/// this one type, so the model, the trainer and the persistence code can never disagree about it.
/// </summary>
/// <remarks>
/// Create one from a preset (<see cref="Gpt2Small"/>, <see cref="ShakespeareChar"/>, <see cref="ModernSmall"/>,
/// <see cref="Tiny"/>) and adjust it with a <c>with</c> expression:
/// <code>var config = GptConfig.ShakespeareChar() with { Dropout = 0.2 };</code>
/// A preset without a vocabulary size leaves <see cref="VocabularySize"/> null: <see cref="CausalLmTrainer"/> resolves it
/// from the tokenizer (or the largest token id in the data). <see cref="GptModel"/> needs it set.
/// <see cref="GptModel"/> calls <see cref="Validate"/>; call it yourself to check a configuration early.
/// </remarks>
public sealed record GptConfig
{
    /// <summary>The version of the binary layout written by <see cref="Save"/>.</summary>
    private const int FormatVersion = 4;

    /// <summary>
    /// The embedding table is padded to a multiple of this many rows (see <see cref="PaddedVocabularySize"/>); 1 means no
    /// padding (litgpt's <c>padding_multiple</c>). Default 64, as nanoGPT pads GPT-2's vocabulary.
    /// </summary>
    public int VocabularyPaddingMultiple { get; init; } = 64;

    /// <summary>
    /// The number of distinct tokens the tokenizer produces (65 for shakespeare_char, 50257 for GPT-2), or
    /// <see langword="null"/>: not chosen yet. <see cref="CausalLmTrainer"/> replaces null with the tokenizer's vocabulary
    /// size (else the largest token id in the training data + 1); <see cref="GptModel"/> rejects a null size, and
    /// <see cref="Validate"/> rejects 0 and negative sizes.
    /// </summary>
    public int? VocabularySize { get; init; }

    /// <summary>The longest sequence the model reads (nanoGPT's <c>block_size</c>): the number of learned positions.</summary>
    public int ContextLength { get; init; }

    /// <summary>The number of transformer blocks (<c>n_layer</c>).</summary>
    public int LayerCount { get; init; }

    /// <summary>The number of attention heads per block (<c>n_head</c>).</summary>
    public int HeadCount { get; init; }

    /// <summary>The width of the residual stream (<c>n_embd</c>); must be divisible by <see cref="HeadCount"/>.</summary>
    public int EmbeddingSize { get; init; }

    /// <summary>Which architecture to build.</summary>
    public GptStyle Style { get; init; }

    /// <summary>The dropout probability applied to embeddings, attention weights and residual branches, in [0, 1).</summary>
    public double Dropout { get; init; }

    /// <summary>The RoPE base θ (used by <see cref="GptStyle.Modern"/> only): 10000 as in RoFormer and Llama 2.</summary>
    public double RopeTheta { get; init; } = 10000;

    /// <summary>
    /// The MLP's hidden width; <see langword="null"/> picks the architecture's default (see <see cref="IntermediateSize"/>).
    /// </summary>
    public int? MlpHiddenSize { get; init; }

    /// <summary>
    /// The number of key/value heads: <see langword="null"/> (the default) gives every query head its own keys and values
    /// (multi-head attention); fewer heads make grouped-query attention (Ainslie et al. 2023, Llama 2 70B and Llama 3),
    /// where <see cref="HeadCount"/> / this many query heads share one key/value head, shrinking the KV cache by that factor.
    /// Must divide <see cref="HeadCount"/>. Hugging Face Llama's <c>num_key_value_heads</c>.
    /// </summary>
    public int? KeyValueHeadCount { get; init; }

    /// <summary>
    /// Whether the output layer reuses the token embedding's weight (tied embeddings, GPT-2 and nanoGPT; the default), or
    /// has its own <c>lm_head</c> weight (Llama; Hugging Face's <c>tie_word_embeddings = false</c>).
    /// </summary>
    public bool TiedEmbeddings { get; init; } = true;

    /// <summary>
    /// The ε added inside LayerNorm's variance or RMSNorm's mean square: 1e-5 (PyTorch's LayerNorm, GPT-2, Llama 2 and 3);
    /// Hugging Face's <c>layer_norm_epsilon</c> / <c>rms_norm_eps</c> (some Llama checkpoints use 1e-6).
    /// </summary>
    public double NormEpsilon { get; init; } = 1e-5;

    /// <summary>
    /// The GELU of the <see cref="GptStyle.Gpt2"/> MLP: <see cref="GeluApproximation.Tanh"/> (GPT-2, the default) or the
    /// exact <see cref="GeluApproximation.None"/> (nanoGPT; <see cref="ShakespeareChar"/>). The modern style's SwiGLU
    /// ignores it. Hugging Face's <c>activation_function</c> (<c>gelu_new</c> / <c>gelu</c>).
    /// </summary>
    public GeluApproximation GeluApproximation { get; init; } = GeluApproximation.Tanh;

    /// <summary>The number of key/value heads actually used: <see cref="KeyValueHeadCount"/>, else <see cref="HeadCount"/>.</summary>
    public int ResolvedKeyValueHeadCount => KeyValueHeadCount ?? HeadCount;

    /// <summary>The width of one attention head: <see cref="EmbeddingSize"/> / <see cref="HeadCount"/>.</summary>
    public int HeadSize => EmbeddingSize / HeadCount;

    /// <summary>
    /// <see cref="VocabularySize"/> rounded up to a multiple of 64, the number of rows of the embedding table and of
    /// logits per position. nanoGPT pads GPT-2's 50257 to 50304 because matmuls whose sizes are multiples of 64
    /// run faster ("~25% speedup", Karpathy); the extra rows are never targets, so their logits learn to be very low.
    /// </summary>
    /// <exception cref="InvalidOperationException"><see cref="VocabularySize"/> is null.</exception>
    public int PaddedVocabularySize => checked((ResolvedVocabularySize + VocabularyPaddingMultiple - 1) / VocabularyPaddingMultiple * VocabularyPaddingMultiple);

    /// <summary><see cref="VocabularySize"/>, which code that builds or runs a model needs set.</summary>
    internal int ResolvedVocabularySize => VocabularySize
        ?? throw new InvalidOperationException("GptConfig.VocabularySize is null; set it, or let CausalLmTrainer take it from the tokenizer.");

    /// <summary>Biases in linear layers and norms: null follows the style (GPT-2 has them, Llama-style models do not).
    /// nanoGPT's train.py defaults to <c>bias = False</c> ("a bit better and faster") even for its GPT-2 layout.</summary>
    public bool? Bias { get; init; }

    /// <summary>Whether linear layers and norms have biases: <see cref="Bias"/>, else true for <see cref="GptStyle.Gpt2"/>.</summary>
    public bool UseBias => Bias ?? Style == GptStyle.Gpt2;

    /// <summary>
    /// The MLP's hidden width actually used: <see cref="MlpHiddenSize"/> when set; otherwise 4·<see cref="EmbeddingSize"/>
    /// for <see cref="GptStyle.Gpt2"/> (GPT-2), and for <see cref="GptStyle.Modern"/> SwiGLU's 8/3·<see cref="EmbeddingSize"/>
    /// rounded up to a multiple of 64. SwiGLU has three weight matrices instead of two, and 2/3 of 4× keeps the
    /// parameter count and flops of the 4× GELU MLP (Shazeer 2020); Llama rounds the result up to a multiple of 256,
    /// we round to 64 so that small models do not grow much (768 → 2048 exactly, 128 → 384).
    /// </summary>
    public int IntermediateSize => MlpHiddenSize
        ?? (Style == GptStyle.Gpt2
            ? 4 * EmbeddingSize
            : checked((8 * EmbeddingSize + 3 * 64 - 1) / (3 * 64) * 64));

    /// <summary>
    /// Checks every property and throws, naming the property, the value and what is accepted. A null
    /// <see cref="VocabularySize"/> passes (the trainer resolves it); 0 and negative sizes do not.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or a rate is outside its range or NaN.</exception>
    /// <exception cref="ArgumentException">The sizes are inconsistent with each other.</exception>
    public void Validate()
    {
        // Sizes are bounded so that derived sizes (padded vocabulary, 8·EmbeddingSize) cannot overflow an int.
        const int MaxSize = 1 << 26;
        if (VocabularySize is int vocabulary && (vocabulary < 1 || vocabulary > MaxSize))
        {
            throw new ArgumentOutOfRangeException(nameof(VocabularySize),
                Invariant($"GptConfig.VocabularySize is {vocabulary}; expected an integer from 1 to {MaxSize}, or null to take the tokenizer's vocabulary size."));
        }


        CheckSize(nameof(ContextLength), ContextLength, MaxSize);
        CheckSize(nameof(LayerCount), LayerCount, MaxSize);
        CheckSize(nameof(HeadCount), HeadCount, MaxSize);
        CheckSize(nameof(EmbeddingSize), EmbeddingSize, MaxSize);
        if (MlpHiddenSize is int mlp)
        {
            CheckSize(nameof(MlpHiddenSize), mlp, MaxSize);
        }

        CheckSize(nameof(VocabularyPaddingMultiple), VocabularyPaddingMultiple, 1 << 16);

        if (!Enum.IsDefined(Style))
        {
            throw new ArgumentOutOfRangeException(nameof(Style),
                Invariant($"GptConfig.Style is {(int)Style}; expected {nameof(GptStyle.Gpt2)} or {nameof(GptStyle.Modern)}."));
        }

        if (!(Dropout >= 0 && Dropout < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Dropout),
                Invariant($"GptConfig.Dropout is {Dropout}; expected a probability in [0, 1)."));
        }

        if (!(RopeTheta > 0 && double.IsFinite(RopeTheta)))
        {
            throw new ArgumentOutOfRangeException(nameof(RopeTheta),
                Invariant($"GptConfig.RopeTheta is {RopeTheta}; expected a positive finite number."));
        }

        if (KeyValueHeadCount is int kvHeads && (kvHeads < 1 || kvHeads > HeadCount || HeadCount % kvHeads != 0))
        {
            throw new ArgumentOutOfRangeException(nameof(KeyValueHeadCount),
                Invariant($"GptConfig.KeyValueHeadCount is {kvHeads}; expected a divisor of HeadCount ({HeadCount}) from 1 to {HeadCount}, or null for one key/value head per query head."));
        }

        if (!Enum.IsDefined(GeluApproximation))
        {
            throw new ArgumentOutOfRangeException(nameof(GeluApproximation),
                Invariant($"GptConfig.GeluApproximation is {(int)GeluApproximation}; expected {nameof(GeluApproximation.Tanh)} or {nameof(GeluApproximation.None)}."));
        }

        if (!(NormEpsilon > 0 && NormEpsilon < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(NormEpsilon),
                Invariant($"GptConfig.NormEpsilon is {NormEpsilon}; expected a number in (0, 1)."));
        }

        if (EmbeddingSize % HeadCount != 0)
        {
            throw new ArgumentException(
                Invariant($"GptConfig.EmbeddingSize is {EmbeddingSize}; expected a multiple of HeadCount ({HeadCount}) so that every head has the same size."),
                nameof(EmbeddingSize));
        }

        if (Style == GptStyle.Modern && HeadSize % 2 != 0)
        {
            throw new ArgumentException(
                Invariant($"GptConfig.EmbeddingSize / HeadCount is {HeadSize}; the {nameof(GptStyle.Modern)} style's rotary embedding rotates pairs of channels and needs an even head size."),
                nameof(EmbeddingSize));
        }
    }

    private static void CheckSize(string name, int value, int max)
    {
        if (value < 1 || value > max)
        {
            throw new ArgumentOutOfRangeException(name,
                Invariant($"GptConfig.{name} is {value}; expected an integer from 1 to {max}."));
        }
    }

    /// <summary>
    /// GPT-2 small, the 124M-parameter model (Radford et al. 2019; nanoGPT's default): 12 layers, 12 heads, 768 wide.
    /// Dropout is 0, nanoGPT's choice for pretraining (GPT-2 used 0.1).
    /// </summary>
    /// <param name="vocabularySize">The tokenizer's vocabulary size; GPT-2's BPE has 50257. Null: the trainer takes it from the tokenizer.</param>
    /// <param name="contextLength">The context length; GPT-2 used 1024.</param>
    public static GptConfig Gpt2Small(int? vocabularySize = 50257, int contextLength = 1024) => new()
    {
        VocabularySize = vocabularySize,
        ContextLength = contextLength,
        LayerCount = 12,
        HeadCount = 12,
        EmbeddingSize = 768,
        Style = GptStyle.Gpt2,
        Dropout = 0,
    };

    /// <summary>
    /// nanoGPT's CPU configuration for the character-level Shakespeare example (README, "I only have a macbook"):
    /// 4 layers, 4 heads, 128 wide, context 64, no dropout. About 0.8M parameters. It keeps GPT-2's biases: nanoGPT's
    /// train.py defaults to <c>bias = False</c>, but on this model biases lowered the final validation loss from 1.898 to
    /// 1.884 (mean of 3 seeds, whole validation split; benchmarks/README.md). Its GELU is nanoGPT's exact one
    /// (<see cref="GeluApproximation.None"/>, <c>nn.GELU()</c>), which is also the faster one on the CPU.
    /// </summary>
    /// <param name="vocabularySize">The number of distinct characters (65 for tinyshakespeare); null (the default): the
    /// trainer takes it from the tokenizer.</param>
    public static GptConfig ShakespeareChar(int? vocabularySize = null) => new()
    {
        VocabularySize = vocabularySize,
        ContextLength = 64,
        LayerCount = 4,
        HeadCount = 4,
        EmbeddingSize = 128,
        Style = GptStyle.Gpt2,
        Dropout = 0,
        GeluApproximation = GeluApproximation.None,
    };

    /// <summary>
    /// A model of the size of GPT-2 small (12 layers, 12 heads, 768 wide) in the <see cref="GptStyle.Modern"/> style:
    /// RoPE, RMSNorm, SwiGLU (hidden 2048), no biases.
    /// </summary>
    /// <param name="vocabularySize">The tokenizer's vocabulary size; null (the default): the trainer takes it from the tokenizer.</param>
    /// <param name="contextLength">The context length.</param>
    public static GptConfig ModernSmall(int? vocabularySize = null, int contextLength = 1024) => new()
    {
        VocabularySize = vocabularySize,
        ContextLength = contextLength,
        LayerCount = 12,
        HeadCount = 12,
        EmbeddingSize = 768,
        Style = GptStyle.Modern,
        Dropout = 0,
    };

    /// <summary>
    /// A very small GPT-2-style model for tests and smoke runs: 2 layers, 2 heads, 32 wide.
    /// Use <c>with { Style = GptStyle.Modern }</c> for the modern architecture.
    /// </summary>
    /// <param name="vocabularySize">The tokenizer's vocabulary size; null (the default): the trainer takes it from the tokenizer.</param>
    /// <param name="contextLength">The context length.</param>
    public static GptConfig Tiny(int? vocabularySize = null, int contextLength = 16) => new()
    {
        VocabularySize = vocabularySize,
        ContextLength = contextLength,
        LayerCount = 2,
        HeadCount = 2,
        EmbeddingSize = 32,
        Style = GptStyle.Gpt2,
        Dropout = 0,
    };

    /// <summary>Throws when a token id is outside [0, <see cref="VocabularySize"/>).</summary>
    /// <param name="ids">The token ids.</param>
    /// <param name="paramName">The caller's parameter holding them.</param>
    /// <param name="what">How the message names them ("Token id", "Prompt token id").</param>
    internal void CheckTokenIds(ReadOnlySpan<int> ids, string paramName, string what)
    {
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)ResolvedVocabularySize)
                throw new ArgumentOutOfRangeException(paramName, id, $"{what} {id} is outside the model's vocabulary [0, {VocabularySize}).");
        }
    }

    // Binary format (little-endian, BinaryWriter), fields in order:
    //   int32 FormatVersion (2); int32 VocabularySize (0 = null, not chosen yet; saved models always have it set);
    //   int32 ContextLength; int32 LayerCount; int32 HeadCount; int32 EmbeddingSize; int32 Style; float64 Dropout;
    //   float64 RopeTheta; bool has MlpHiddenSize; int32 MlpHiddenSize (0 when absent);
    //   since version 2: byte Bias (0 false, 1 true, 2 null = follow the style); int32 VocabularyPaddingMultiple;
    //   since version 3: int32 KeyValueHeadCount (0 = null); bool TiedEmbeddings; float64 NormEpsilon;
    //   since version 4: int32 GeluApproximation.
    // Version 1 files end after MlpHiddenSize, version 2 after VocabularyPaddingMultiple, version 3 after NormEpsilon;
    // Load reads all four (older files get the defaults of the new fields, which are what those models computed: MHA,
    // tied, ε = 1e-5, GELU's tanh approximation).

    /// <summary>Writes the configuration in a versioned binary layout that <see cref="Load"/> reads back exactly.</summary>
    internal void Save(BinaryWriter writer)
    {
        writer.Write(FormatVersion);
        writer.Write(VocabularySize ?? 0);
        writer.Write(ContextLength);
        writer.Write(LayerCount);
        writer.Write(HeadCount);
        writer.Write(EmbeddingSize);
        writer.Write((int)Style);
        writer.Write(Dropout);
        writer.Write(RopeTheta);
        writer.Write(MlpHiddenSize.HasValue);
        writer.Write(MlpHiddenSize.GetValueOrDefault());
        writer.Write(Bias.HasValue ? (byte)(Bias.Value ? 1 : 0) : (byte)2);   // since format 2
        writer.Write(VocabularyPaddingMultiple);                                // since format 2
        writer.Write(KeyValueHeadCount ?? 0);                                   // since format 3
        writer.Write(TiedEmbeddings);                                           // since format 3
        writer.Write(NormEpsilon);                                              // since format 3
        writer.Write((int)GeluApproximation);                                   // since format 4
    }

    /// <summary>Reads a configuration written by <see cref="Save"/> and validates it.</summary>
    /// <exception cref="InvalidDataException">The data was written by an unknown version of the layout.</exception>
    internal static GptConfig Load(BinaryReader reader)
    {
        int version = reader.ReadInt32();
        if (version < 1 || version > FormatVersion)
        {
            throw new InvalidDataException(
                Invariant($"GptConfig was saved in format version {version}; this version of Microsoft.ML.Llm reads versions 1 to {FormatVersion}."));
        }

        int vocabularySize = reader.ReadInt32();
        var config = new GptConfig
        {
            VocabularySize = vocabularySize == 0 ? null : vocabularySize,
            ContextLength = reader.ReadInt32(),
            LayerCount = reader.ReadInt32(),
            HeadCount = reader.ReadInt32(),
            EmbeddingSize = reader.ReadInt32(),
            Style = (GptStyle)reader.ReadInt32(),
            Dropout = reader.ReadDouble(),
            RopeTheta = reader.ReadDouble(),
        };
        bool hasMlpHiddenSize = reader.ReadBoolean();
        int mlpHiddenSize = reader.ReadInt32();
        config = config with { MlpHiddenSize = hasMlpHiddenSize ? mlpHiddenSize : null };
        if (version >= 2)
        {
            byte bias = reader.ReadByte();
            config = config with { Bias = bias == 2 ? null : bias == 1, VocabularyPaddingMultiple = reader.ReadInt32() };
        }

        if (version >= 3)
        {
            int kvHeads = reader.ReadInt32();
            config = config with { KeyValueHeadCount = kvHeads == 0 ? null : kvHeads, TiedEmbeddings = reader.ReadBoolean(), NormEpsilon = reader.ReadDouble() };
        }

        if (version >= 4)
        {
            config = config with { GeluApproximation = (GeluApproximation)reader.ReadInt32() };
        }

        config.Validate();
        return config;
    }
}
