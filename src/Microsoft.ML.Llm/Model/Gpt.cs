// A decoder-only transformer (GPT), read top to bottom: norm → attention → MLP → block → model.
// It follows nanoGPT's model.py (Karpathy, https://github.com/karpathy/nanoGPT) for the GPT-2 style and the Llama
// recipe as litgpt writes it for the modern style; GptConfig.cs holds the shapes.
//
// Shape letters: B batch, T time (sequence length), C channels (EmbeddingSize), nh heads, hs head size (C / nh),
// V padded vocabulary, H MLP hidden size.
//
// Tensors made during forward are not disposed here: callers run a step inside torch.NewDisposeScope(), as
// TorchSharp recommends, and every intermediate goes with the scope.

using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// What every attention layer of one forward pass shares, computed once per pass: which keys each query may see,
/// the rotary angles (modern style only) and the key/value cache (incremental decoding only).
/// </summary>
/// <param name="Mask">
/// (B, 1, T, Tk) or (T, Tk) bool, true where a query may attend to a key; null for <paramref name="IsCausal"/> or for
/// a single new token that sees every cached key.
/// </param>
/// <param name="IsCausal">Whether the plain causal triangle applies (no mask, no cache).</param>
/// <param name="Cos">(T, hs) or (B, 1, T, hs) cosines of the rotary angles; null for learned positions.</param>
/// <param name="Sin">Sines matching <paramref name="Cos"/>.</param>
/// <param name="Cache">The keys and values of earlier tokens, which this pass extends; null without a cache.</param>
internal sealed record AttentionContext(Tensor? Mask, bool IsCausal, Tensor? Cos, Tensor? Sin, KvCache? Cache);

/// <summary>
/// LayerNorm (GPT-2 style, with an optional bias, which PyTorch's LayerNorm could not switch off before 2.1) or
/// RMSNorm (modern style: no mean subtraction, no bias; Zhang and Sennrich 2019).
/// </summary>
internal sealed class GptNorm : nn.Module<Tensor, Tensor>
{
    private readonly double epsilon;
    private readonly bool rms;
    private readonly long[] shape;
    private readonly Parameter weight;
    private readonly Parameter? bias;

    public GptNorm(string name, int size, GptConfig config) : base(name)
    {
        rms = config.Style == GptStyle.Modern;
        epsilon = config.NormEpsilon;   // 1e-5 by default, as PyTorch's LayerNorm and Llama 2/3's RMSNorm
        shape = [size];
        weight = nn.Parameter(ones(size));
        bias = config.UseBias ? nn.Parameter(zeros(size)) : null;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        // Under autocast norms run in fp32 (PyTorch's fp32 op list): a bf16 mean and variance over C channels would
        // round badly, and the normalised output feeds the next matmul, which casts it down again.
        x = Autocast.Float32(x);
        if (!rms)
        {
            return nn.functional.layer_norm(x, shape, weight, bias, epsilon);
        }

        // Compute the mean square in fp32 even for bf16 activations: bf16 has 8 bits of mantissa, and the sum of
        // C squares would round badly (litgpt and HF Llama upcast here too).
        var x32 = x.to(ScalarType.Float32);
        var normed = x32 * (x32.pow(2).mean([-1], keepdim: true) + epsilon).rsqrt();
        return normed.to(x.dtype) * weight;
    }
}

/// <summary>
/// Multi-head causal self-attention through libtorch's fused <c>scaled_dot_product_attention</c>
/// (flash/memory-efficient kernels where available). One exception, for speed: bf16 on the CPU at contexts
/// up to 256 runs the same softmax(q·kᵀ/√hs)·v as two batched matmuls (see <c>Autocast.UseExplicitAttention</c>).
/// </summary>
internal sealed class GptAttention : nn.Module<Tensor, AttentionContext, Tensor>
{
    private readonly int headCount;
    private readonly int keyValueHeadCount;
    private readonly int layerIndex;
    private readonly double dropout;

    // One matmul computes queries, keys and values together (C → C + 2·nkv·hs; 3C without grouped-query attention):
    // fewer, larger matmuls run faster. Rows are ordered queries, keys, values, each head after head.
    private readonly Linear c_attn;
    private readonly Linear c_proj;
    private readonly Dropout resid_dropout;
    private LoraLinear? c_attn_lora;    // LoRA adapters, when added (GptModel.AddLora); registered then
    private LoraLinear? c_proj_lora;

    public GptAttention(GptConfig config, int layerIndex) : base("attn")
    {
        headCount = config.HeadCount;
        keyValueHeadCount = config.ResolvedKeyValueHeadCount;
        this.layerIndex = layerIndex;
        dropout = config.Dropout;
        int keyValueSize = keyValueHeadCount * config.HeadSize;
        c_attn = nn.Linear(config.EmbeddingSize, config.EmbeddingSize + 2 * keyValueSize, hasBias: config.UseBias);
        c_proj = nn.Linear(config.EmbeddingSize, config.EmbeddingSize, hasBias: config.UseBias);
        resid_dropout = nn.Dropout(config.Dropout);
        RegisterComponents();
    }

    /// <summary>The output projection, whose initialisation is scaled down (see <see cref="GptModel"/>).</summary>
    internal Linear OutputProjection => c_proj;

    /// <summary>The fused query/key/value projection.</summary>
    internal Linear QkvProjection => c_attn;

    /// <summary>The LoRA wrappers of this layer's linear layers (null where none).</summary>
    internal (LoraLinear? Qkv, LoraLinear? Output) Lora => (c_attn_lora, c_proj_lora);

    /// <summary>Wraps the query/key/value projection and/or the output projection with adapters.</summary>
    internal void AddLora(LoraLinear? qkv, LoraLinear? output)
    {
        if (qkv is not null)
        {
            c_attn_lora = qkv;
            register_module("c_attn_lora", qkv);
        }

        if (output is not null)
        {
            c_proj_lora = output;
            register_module("c_proj_lora", output);
        }
    }

    public override Tensor forward(Tensor x, AttentionContext context)
    {
        long B = x.shape[0], T = x.shape[1], C = x.shape[2];
        long hs = C / headCount;
        long kvSize = keyValueHeadCount * hs;

        var qkvOut = c_attn_lora is null ? Autocast.Linear(x, c_attn) : c_attn_lora.call(x);   // (B, T, C + 2·nkv·hs)
        var qkv = qkvOut.split([C, kvSize, kvSize], dim: 2);                       // (B, T, C), 2 × (B, T, nkv·hs)
        var q = qkv[0].view(B, T, headCount, hs).transpose(1, 2);                 // (B, nh, T, hs)
        var k = qkv[1].view(B, T, keyValueHeadCount, hs).transpose(1, 2);         // (B, nkv, T, hs)
        var v = qkv[2].view(B, T, keyValueHeadCount, hs).transpose(1, 2);         // (B, nkv, T, hs)

        if (context.Cos is not null && context.Sin is not null)
        {
            // RoPE rotates queries and keys only, so a query·key product depends on the distance between the two
            // positions alone (Su et al. 2021). Values carry content and stay as they are.
            q = ApplyRotary(q, context.Cos, context.Sin);
            k = ApplyRotary(k, context.Cos, context.Sin);
        }

        if (context.Cache is not null)
        {
            (k, v) = context.Cache.Append(layerIndex, k, v);        // (B, nkv, Tk, hs): cached keys then the new ones
            if (T == 1 && DecodeAttention.TryAttend(q, k, v, context.Mask) is { } one)
            {
                // A decoding step in fp32 on the CPU: a vectorised loop, cheaper than the fused kernel for one query.
                return Merge(one, B, T, C);
            }
        }

        if (keyValueHeadCount != headCount)
        {
            // Grouped-query attention: query heads g·r … g·r + r − 1 share key/value head g (r = nh / nkv), as HF
            // Llama's repeat_kv. The cache keeps nkv heads, the memory saving; the copies live for this pass only.
            int repeats = headCount / keyValueHeadCount;
            k = k.repeat_interleave(repeats, dim: 1);               // (B, nh, Tk, hs)
            v = v.repeat_interleave(repeats, dim: 1);               // (B, nh, Tk, hs)
        }

        // softmax(q·kᵀ/√hs)·v. With no mask the causal flag lets the kernel skip the upper triangle; with document
        // masking the block-diagonal causal mask replaces it. Under autocast it runs in the low precision.
        double p = training ? dropout : 0.0;
        var y = Autocast.Attention(q, k, v, context.Mask, p, context.IsCausal);     // (B, nh, T, hs)
        return Merge(y, B, T, C);
    }

    /// <summary>The heads side by side again, then the output projection.</summary>
    private Tensor Merge(Tensor y, long B, long T, long C)
    {
        y = y.transpose(1, 2).contiguous().view(B, T, C);            // (B, T, C)
        return resid_dropout.call(c_proj_lora is null ? Autocast.Linear(y, c_proj) : c_proj_lora.call(y));
    }

    /// <summary>
    /// Rotates each (x[i], x[i + hs/2]) channel pair by its angle: the "rotate half" layout of GPT-NeoX, HF Llama
    /// and litgpt (Meta's reference code interleaves pairs instead; the two are equivalent up to a permutation).
    /// </summary>
    private static Tensor ApplyRotary(Tensor x, Tensor cos, Tensor sin)
    {
        var halves = x.chunk(2, dim: -1);                            // 2 × (B, nh, T, hs/2)
        var rotated = cat([-halves[1], halves[0]], dim: -1);         // (B, nh, T, hs)
        return HeldScalar.Add(x * cos, rotated * sin);
    }
}

/// <summary>
/// The position-wise feed-forward network: GPT-2's GELU MLP or the modern style's SwiGLU.
/// </summary>
internal sealed class GptMlp : nn.Module<Tensor, Tensor>
{
    private readonly bool swiGlu;
    private readonly GELU.Approximate gelu;   // GPT-2 style only: GPT-2's tanh form or nanoGPT's exact GELU

    // For SwiGLU, c_fc computes the gate and the up projection in one matmul (C → 2H), split after; litgpt names
    // the two halves fc_1 and fc_2. One matmul of twice the width is faster on CPU than two.
    private readonly Linear c_fc;
    private readonly Linear c_proj;
    private readonly Dropout dropout;
    private LoraLinear? c_fc_lora;      // LoRA adapters, when added (GptModel.AddLora); registered then
    private LoraLinear? c_proj_lora;

    public GptMlp(GptConfig config) : base("mlp")
    {
        swiGlu = config.Style == GptStyle.Modern;
        gelu = config.GeluApproximation == GeluApproximation.Tanh ? GELU.Approximate.tanh : GELU.Approximate.none;
        int hidden = config.IntermediateSize;
        c_fc = nn.Linear(config.EmbeddingSize, swiGlu ? 2 * hidden : hidden, hasBias: config.UseBias);
        c_proj = nn.Linear(hidden, config.EmbeddingSize, hasBias: config.UseBias);
        dropout = nn.Dropout(config.Dropout);
        RegisterComponents();
    }

    /// <summary>The output projection, whose initialisation is scaled down (see <see cref="GptModel"/>).</summary>
    internal Linear OutputProjection => c_proj;

    /// <summary>The input projection (modern style: gate and up fused).</summary>
    internal Linear InputProjection => c_fc;

    /// <summary>The LoRA wrappers of this layer's linear layers (null where none).</summary>
    internal (LoraLinear? Input, LoraLinear? Output) Lora => (c_fc_lora, c_proj_lora);

    /// <summary>Wraps the input projection and/or the output projection with adapters.</summary>
    internal void AddLora(LoraLinear? input, LoraLinear? output)
    {
        if (input is not null)
        {
            c_fc_lora = input;
            register_module("c_fc_lora", input);
        }

        if (output is not null)
        {
            c_proj_lora = output;
            register_module("c_proj_lora", output);
        }
    }

    private Tensor Up(Tensor x) => c_fc_lora is null ? Autocast.Linear(x, c_fc) : c_fc_lora.call(x);

    public override Tensor forward(Tensor x)
    {
        Tensor hidden;
        if (swiGlu)
        {
            var gateAndUp = Up(x).chunk(2, dim: -1);                    // 2 × (B, T, H)
            hidden = nn.functional.silu(gateAndUp[0]) * gateAndUp[1]; // (B, T, H): SwiGLU (Shazeer 2020)
        }
        else
        {
            // GPT-2 used the tanh approximation of GELU; keeping it makes GPT-2 checkpoints compute the same function.
            // nanoGPT's exact GELU (erf) is about 3× cheaper on the CPU (GeluApproximation's remarks).
            hidden = nn.functional.gelu(Up(x), gelu); // (B, T, H)
        }

        return dropout.call(c_proj_lora is null ? Autocast.Linear(hidden, c_proj) : c_proj_lora.call(hidden));   // (B, T, C)
    }
}

/// <summary>
/// One transformer block, pre-norm as GPT-2 (the norm sits inside each residual branch, so the residual stream
/// itself is a clean sum that gradients pass through unchanged).
/// </summary>
internal sealed class GptBlock : nn.Module<Tensor, AttentionContext, Tensor>
{
    private readonly GptNorm ln_1;
    private readonly GptAttention attn;
    private readonly GptNorm ln_2;
    private readonly GptMlp mlp;

    public GptBlock(GptConfig config, int layerIndex) : base("block")
    {
        ln_1 = new GptNorm("ln_1", config.EmbeddingSize, config);
        attn = new GptAttention(config, layerIndex);
        ln_2 = new GptNorm("ln_2", config.EmbeddingSize, config);
        mlp = new GptMlp(config);
        RegisterComponents();
    }

    internal GptAttention Attention => attn;

    internal GptMlp Mlp => mlp;

    public override Tensor forward(Tensor x, AttentionContext context)
    {
        x = HeldScalar.Add(x, attn.call(ln_1.call(x), context));    // (B, T, C); a held alpha: see HeldScalar
        x = HeldScalar.Add(x, mlp.call(ln_2.call(x)));              // (B, T, C)
        return x;
    }
}

/// <summary>
/// A decoder-only transformer language model (GPT): token ids in, next-token logits out.
/// </summary>
/// <remarks>
/// <para>
/// Build one from a <see cref="GptConfig"/>; the constructor initialises the weights from the current torch
/// generator, so seed it first (<c>torch.manual_seed(seed)</c>) for reproducible models. Weights are named as in
/// nanoGPT (<c>wte.weight</c>, <c>h.0.attn.c_attn.weight</c>, <c>ln_f.weight</c>, ...). The output layer shares
/// the token embedding's weight (tied embeddings) unless <see cref="GptConfig.TiedEmbeddings"/> is false, which adds <c>lm_head.weight</c>.
/// </para>
/// <para>
/// Run forward passes inside <c>torch.NewDisposeScope()</c> so that intermediate tensors are released promptly.
/// </para>
/// </remarks>
public sealed partial class GptModel : nn.Module<Tensor, Tensor>
{
    // GPT-2's initialisation (nanoGPT _init_weights): N(0, 0.02) for every matmul weight and embedding.
    private const double InitStd = 0.02;

    private readonly Embedding wte;
    private readonly Embedding? wpe;
    private readonly Dropout drop;
    private readonly ModuleList<GptBlock> h;
    private readonly GptNorm ln_f;
    private readonly Linear? lm_head;
    private TrainingPrecision _precision;
    private Embedding? _sparseWte;   // see PreallocatedGradients; deliberately not a registered submodule (null at RegisterComponents)

    /// <summary>Builds the model described by <paramref name="config"/> and initialises its weights.</summary>
    /// <param name="config">The architecture; validated here.</param>
    /// <exception cref="ArgumentNullException"><paramref name="config"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="config"/> is invalid (see <see cref="GptConfig.Validate"/>), or its <see cref="GptConfig.VocabularySize"/> is null.</exception>
    public GptModel(GptConfig config) : base("gpt")
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (config.VocabularySize is null)
        {
            throw new ArgumentException(
                "GptConfig.VocabularySize is null; a model needs it set (for example GptConfig.Tiny(65)). CausalLmTrainer sets it from the tokenizer.",
                nameof(config));
        }

        Config = config;

        wte = nn.Embedding(config.PaddedVocabularySize, config.EmbeddingSize);
        wpe = config.Style == GptStyle.Gpt2 ? nn.Embedding(config.ContextLength, config.EmbeddingSize) : null;
        drop = nn.Dropout(config.Dropout);
        h = nn.ModuleList(Enumerable.Range(0, config.LayerCount).Select(i => new GptBlock(config, i)).ToArray());
        ln_f = new GptNorm("ln_f", config.EmbeddingSize, config);
        lm_head = config.TiedEmbeddings ? null : nn.Linear(config.EmbeddingSize, config.PaddedVocabularySize, hasBias: false);
        RegisterComponents();

        InitializeWeights();
        ParameterCount = parameters().Sum(p => p.numel());
        // Untied, the token embedding is a table lookup that costs no matmul flops, so it leaves the count as wpe does.
        NonEmbeddingParameterCount = ParameterCount - (wpe?.weight!.numel() ?? 0) - (lm_head is null ? 0 : wte.weight!.numel());
    }

    /// <summary>The architecture this model was built from.</summary>
    public GptConfig Config { get; }

    /// <summary>
    /// The precision of this model's forward passes in scoring (<see cref="CausalLmTransformer"/>), evaluation and
    /// generation (<see cref="TextGenerator"/>): autocast with fp32 weights, see <see cref="TrainingPrecision"/>.
    /// Training sets it to <see cref="CausalLmTrainerOptions.Precision"/>; the model zip records it. Set it to
    /// <see cref="TrainingPrecision.Fp32"/> to score a bf16-trained model in full precision (the weights are fp32 either way).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a defined <see cref="TrainingPrecision"/>.</exception>
    public TrainingPrecision Precision
    {
        get => _precision;
        set => _precision = Enum.IsDefined(value) ? value
            : throw new ArgumentOutOfRangeException(nameof(Precision), value, $"GptModel.Precision is {(int)value}; expected {PrecisionNames}.");
    }

    /// <summary>The accepted precisions, for messages: "Fp32, Bf16Mixed or Fp16Mixed".</summary>
    internal static string PrecisionNames => "Fp32, Bf16Mixed or Fp16Mixed";

    /// <summary>
    /// The device the weights live on (<c>model.to(device)</c> moves them). Code that feeds the model (scoring,
    /// evaluation, generation, training batches) creates its input tensors here instead of deciding a device itself.
    /// </summary>
    public Device Device
    {
        get
        {
            using var scope = NewDisposeScope();   // the weight getter returns a new native handle on every call
            return wte.weight!.device;
        }
    }

    /// <summary>The number of real tokens: the configuration's <see cref="GptConfig.VocabularySize"/>, always set on a model.
    /// Logits have <see cref="GptConfig.PaddedVocabularySize"/> columns; the first this many are meaningful.</summary>
    public int VocabularySize => Config.ResolvedVocabularySize;

    /// <summary>The number of parameters; the tied token embedding / output weight counts once.</summary>
    public long ParameterCount { get; }

    /// <summary>
    /// The number of parameters without the position embedding, as nanoGPT's <c>get_num_params(non_embedding=True)</c>:
    /// the token embedding stays in because, tied, it is also the output layer's weight and costs matmul flops.
    /// Equal to <see cref="ParameterCount"/> for the modern style (RoPE has no parameters).
    /// </summary>
    public long NonEmbeddingParameterCount { get; }

    /// <summary>
    /// Training flops per token, forward and backward, for a full context: 6N + 12·L·H·Q·T (nanoGPT
    /// <c>estimate_mfu</c>, after the PaLM paper's appendix B): 6 flops per parameter per token (2 forward, 4 backward)
    /// plus the attention score and value matmuls, with N = <see cref="NonEmbeddingParameterCount"/>,
    /// L layers, H heads, Q head size, T = <see cref="GptConfig.ContextLength"/>.
    /// </summary>
    public double FlopsPerToken
    {
        get
        {
            double n = NonEmbeddingParameterCount;
            double l = Config.LayerCount, heads = Config.HeadCount, q = Config.HeadSize, t = Config.ContextLength;
            return 6 * n + 12 * l * heads * q * t;
        }
    }

    /// <summary>
    /// The parameters that take weight decay: every weight with two or more dimensions (matmul weights and embeddings),
    /// as nanoGPT's <c>configure_optimizers</c>.
    /// </summary>
    public IEnumerable<Parameter> DecayParameters => parameters().Where(p => p.dim() >= 2);

    /// <summary>The parameters that take no weight decay: biases and norm weights (one-dimensional).</summary>
    public IEnumerable<Parameter> NoDecayParameters => parameters().Where(p => p.dim() < 2);

    /// <summary>
    /// When set, training forward passes (training mode, gradients enabled) run each block through
    /// <see cref="CheckpointedBlock"/>: its activations are dropped after the forward and recomputed in backward.
    /// </summary>
    internal bool ActivationCheckpointing { get; set; }

    /// <summary>The token embedding (also the output layer's weight when <see cref="GptConfig.TiedEmbeddings"/>).</summary>
    internal Parameter TokenEmbeddingWeight => wte.weight!;

    /// <summary>
    /// Set by the trainer while <see cref="FusedAdamW"/> holds every gradient as a dense view of its buffer: training
    /// passes may then add gradients into <c>.grad</c> in place instead of handing autograd full-size temporaries.
    /// Two things use it, both for GPT-2's 50304 × 768 vocabulary matrix (154 MB in fp32):
    /// <list type="bullet">
    /// <item>Tokens are looked up through a twin of <c>wte</c> that shares its weight and produces a <em>sparse</em>
    /// gradient (the B·T rows looked up) instead of a dense V × C matrix that is almost all zeros. The dense backward
    /// zero-fills and writes 154 MB per micro-batch for 256 rows of real gradient: 60-95 ms against 0.2 ms sparse on the
    /// 2-core machine (benchmarks/TrainingThroughput). Autograd adds the rows into the dense <c>.grad</c> in place
    /// (libtorch's dense += sparse walks an uncoalesced gradient serially per output row: deterministic).</item>
    /// <item><see cref="TrainingLoss"/> runs the output layer and the cross-entropy as one function
    /// (<see cref="OutputLayerLoss"/>) whose backward adds the weight's gradient straight into <c>.grad</c>.</item>
    /// </list>
    /// Neither is safe without a preallocated dense <c>.grad</c>: autograd would store the sparse tensor itself (which
    /// optimizers, clipping and all-reduce do not take), and the fused loss would have nowhere to add. So it is off by
    /// default; a frozen embedding (LoRA) keeps the plain lookup.
    /// </summary>
    internal bool PreallocatedGradients
    {
        get => _preallocatedGradients;
        set
        {
            if (value == _preallocatedGradients)
                return;
            _preallocatedGradients = value;
            if (value)
            {
                var weight = wte.weight!;   // a new handle on the weight; the twin owns it from here
                if (!weight.requires_grad)
                {
                    weight.Dispose();
                    return;
                }

                // A 1 × 1 table whose weight is then replaced by wte's (shared, not copied): building the twin at full
                // size, or through Embedding_from_pretrained, would allocate and initialise a second 154 MB table first.
                // The lookup reads its table's shape from the weight, so the 1 × 1 options do not limit it.
                _sparseWte = nn.Embedding(1, 1, sparse: true, device: weight.device);
                using var placeholder = _sparseWte.weight!;
                _sparseWte.weight = weight;
            }
            else
            {
                _sparseWte?.Dispose();   // releases the twin's handle on the weight, not the weight
                _sparseWte = null;
            }
        }
    }

    private bool _preallocatedGradients;

    /// <inheritdoc/>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
            PreallocatedGradients = false;
        base.Dispose(disposing);
    }

    /// <summary>Computes next-token logits for every position.</summary>
    /// <param name="idx">(B, T) int64 token ids, T ≤ <see cref="GptConfig.ContextLength"/>.</param>
    /// <returns>(B, T, <see cref="GptConfig.PaddedVocabularySize"/>) logits; the padded columns are meaningless.</returns>
    public override Tensor forward(Tensor idx) => forward(idx, documentIds: null);

    /// <summary>
    /// Computes next-token logits for every position, optionally with document masking: when several documents are
    /// packed into one row, <paramref name="documentIds"/> restricts attention to earlier tokens of the same document
    /// and restarts positions at 0 at each document start, as Llama 3 trains on packed sequences.
    /// </summary>
    /// <param name="idx">(B, T) int64 token ids, T ≤ <see cref="GptConfig.ContextLength"/>.</param>
    /// <param name="documentIds">
    /// (B, T) int64 document ids or null. Tokens with equal ids in a row belong to the same document; each document is
    /// expected to be one contiguous run (positions count the earlier tokens of the same document).
    /// </param>
    /// <returns>(B, T, <see cref="GptConfig.PaddedVocabularySize"/>) logits.</returns>
    public Tensor forward(Tensor idx, Tensor? documentIds)
    {
        var (x, context) = Embed(idx, documentIds);
        return RunTransformer(x, context);
    }

    /// <summary>The embeddings of a full (uncached) pass and what its attention needs: the mask and the positions.</summary>
    private (Tensor X, AttentionContext Context) Embed(Tensor idx, Tensor? documentIds)
    {
        CheckInput(idx, documentIds);
        long T = idx.shape[1];
        var device = idx.device;

        // Which key each query may see, and each token's position. Without documents: the causal triangle (left to
        // the kernel's flag) and positions 0..T-1. With documents: the causal triangle intersected with "same
        // document", and a token's position is the number of earlier tokens of its document.
        Tensor? mask = null;
        Tensor positions;                                           // (T) or (B, T) int64
        if (documentIds is null)
        {
            positions = arange(T, dtype: ScalarType.Int64, device: device);
        }
        else
        {
            var causal = ones(T, T, dtype: ScalarType.Bool, device: device).tril();           // (T, T)
            var sameDocument = documentIds.unsqueeze(2).eq(documentIds.unsqueeze(1));      // (B, T, T)
            var allowed = sameDocument.logical_and(causal);                                 // (B, T, T)
            positions = allowed.sum([-1], type: ScalarType.Int64) - 1;                      // (B, T)
            mask = allowed.unsqueeze(1);                                                    // (B, 1, T, T): broadcast over heads
        }

        var x = (training && _sparseWte is not null ? _sparseWte : wte).call(idx);   // (B, T, C) token embeddings
        Tensor? cos = null, sin = null;
        if (wpe is not null)
        {
            x = HeldScalar.Add(x, wpe.call(positions));             // + (T, C) or (B, T, C) position embeddings
        }
        else
        {
            (cos, sin) = RotaryAngles(positions, x.dtype);         // (T, hs) or (B, 1, T, hs)
        }

        return (x, new AttentionContext(mask, IsCausal: mask is null, cos, sin, Cache: null));
    }

    /// <summary>
    /// Computes the logits of new tokens that continue the sequence held in <paramref name="cache"/>, reusing the
    /// cached keys and values of the earlier tokens instead of recomputing them (incremental decoding): after a prompt
    /// of n tokens, each further token costs one position's work instead of n + 1 positions'. Inference only: no
    /// autograd graph is built. Call <c>eval()</c> first, as for any inference (dropout follows the training mode).
    /// </summary>
    /// <param name="idx">(B, T) int64 new token ids; the cache's length plus T must not exceed the context length.</param>
    /// <param name="cache">A cache made for this model; extended by T positions.</param>
    /// <returns>(B, T, <see cref="GptConfig.PaddedVocabularySize"/>) logits of the new positions.</returns>
    /// <exception cref="ArgumentException">The tokens do not fit, or the cache belongs to another configuration or batch size.</exception>
    public Tensor forward(Tensor idx, KvCache cache) => forward(idx, cache, keyMask: null, positions: null);

    /// <summary>
    /// The logits of the last position only, without a cache, for inference: the output layer (V × C per position,
    /// a third of GPT-2 small's work per token) runs once instead of T times, as nanoGPT's <c>forward</c> without targets.
    /// </summary>
    /// <returns>(B, 1, <see cref="GptConfig.PaddedVocabularySize"/>) logits.</returns>
    internal Tensor ForwardLastPosition(Tensor idx)
    {
        CheckInput(idx, null);
        using var noGrad = no_grad();
        long T = idx.shape[1];
        var positions = arange(T, dtype: ScalarType.Int64, device: idx.device);
        var x = wte.call(idx);
        Tensor? cos = null, sin = null;
        if (wpe is not null)
        {
            x = HeldScalar.Add(x, wpe.call(positions));
        }
        else
        {
            (cos, sin) = RotaryAngles(positions, x.dtype);
        }

        return RunTransformer(x, new AttentionContext(null, IsCausal: true, cos, sin, Cache: null), lastPositionOnly: true);
    }

    /// <summary>
    /// Incremental decoding of a batch whose rows have different lengths (left padding): <paramref name="keyMask"/>
    /// marks the real (non-padding) positions of each row, cached and new, and <paramref name="positions"/> gives each new
    /// token's position within its own row, so a padded row computes what it would compute alone.
    /// </summary>
    /// <param name="idx">(B, T) int64 new token ids.</param>
    /// <param name="cache">A cache made for this model; extended by T positions.</param>
    /// <param name="keyMask">(B, cache length + T) bool, true at real tokens; null when every position is real.</param>
    /// <param name="positions">(B, T) int64 positions of the new tokens; null for cache length + 0..T−1.</param>
    /// <returns>(B, T, <see cref="GptConfig.PaddedVocabularySize"/>) logits of the new positions.</returns>
    internal Tensor forward(Tensor idx, KvCache cache, Tensor? keyMask, Tensor? positions) =>
        forward(idx, cache, keyMask, positions, lastPositionOnly: false);

    /// <summary>As <see cref="forward(Tensor, KvCache, Tensor?, Tensor?)"/>; with <paramref name="lastPositionOnly"/> the
    /// output layer runs on the last position only and the result is (B, 1, V): a prompt's prefill needs no other logits
    /// (with left padding the last position is every row's last real token).</summary>
    internal Tensor forward(Tensor idx, KvCache cache, Tensor? keyMask, Tensor? positions, bool lastPositionOnly)
    {
        ArgumentNullException.ThrowIfNull(cache);
        CheckInput(idx, null);
        cache.CheckFits(Config, idx.shape[0], idx.shape[1]);
        using var noGrad = no_grad();
        long T = idx.shape[1], past = cache.Length;
        var device = idx.device;
        var absolute = arange(past, past + T, dtype: ScalarType.Int64, device: device);         // (T): slots after the cache
        positions ??= absolute;                                                                 // (T) or (B, T)

        // A new token at slot past + i sees keys 0..past + i. One token sees every key, so no mask; several need the
        // causal triangle shifted right by past (SDPA's is_causal aligns it top-left instead). Padding keys are hidden,
        // except from a padding query itself: a query that sees no key at all would make the softmax NaN.
        var keys = arange(past + T, device: device).unsqueeze(0);                               // (1, past + T)
        Tensor? mask = T == 1 ? null : keys.le(absolute.unsqueeze(1));                          // (T, past + T)
        if (keyMask is not null)
        {
            var self = keys.eq(absolute.unsqueeze(1));                                          // (T, past + T)
            var visible = keyMask.unsqueeze(1).logical_or(self);                                // (B, T, past + T)
            mask = (mask is null ? visible : visible.logical_and(mask)).unsqueeze(1);           // (B, 1, T, past + T)
        }

        var x = wte.call(idx);                                      // (B, T, C)
        Tensor? cos = null, sin = null;
        if (wpe is not null)
        {
            x = HeldScalar.Add(x, wpe.call(positions));             // + (T, C) or (B, T, C)
        }
        else
        {
            (cos, sin) = RotaryAngles(positions, x.dtype);         // (T, hs) or (B, 1, T, hs)
        }

        var logits = RunTransformer(x, new AttentionContext(mask, IsCausal: false, cos, sin, cache), lastPositionOnly);
        cache.Advance(T);
        return logits;
    }

    /// <summary>The transformer proper, shared by both forward passes: dropout, the blocks, the final norm, the output layer.</summary>
    private Tensor RunTransformer(Tensor x, AttentionContext context, bool lastPositionOnly = false) =>
        OutputLayer(RunBlocks(x, context, lastPositionOnly));

    /// <summary>Dropout, the blocks and the final norm: the hidden states the output layer reads.</summary>
    private Tensor RunBlocks(Tensor x, AttentionContext context, bool lastPositionOnly)
    {
        x = drop.call(x);
        bool checkpoint = ActivationCheckpointing && training && is_grad_enabled() && context.Cache is null;
        foreach (var block in h)
        {
            x = checkpoint ? CheckpointedBlock.Run(block, x, context) : block.call(x, context);   // (B, T, C)
        }

        if (lastPositionOnly)
        {
            x = x.narrow(1, x.shape[1] - 1, 1);                      // (B, 1, C): only the next token's logits are wanted
        }

        return ln_f.call(x);
    }

    /// <summary>
    /// The output layer: wteᵀ when tied, else its own lm_head. Under autocast its matmul runs in the low precision and
    /// the logits come back in fp32, as PyTorch's cross_entropy (fp32 op list) and sampling would upcast them anyway.
    /// </summary>
    private Tensor OutputLayer(Tensor x) => lm_head is null
        ? Autocast.Float32(Autocast.Linear(x, wte.weight!))        // (B, T, V): tied
        : Autocast.Float32(Autocast.Linear(x, lm_head));           // (B, T, V): untied

    /// <summary>
    /// The summed next-token cross-entropy of a training batch: <c>cross_entropy(forward(idx, documentIds), targets,
    /// ignore_index: -1, reduction: sum)</c>. While <see cref="PreallocatedGradients"/> holds in a training pass, the
    /// output layer and the loss run fused (<see cref="OutputLayerLoss"/>), which never keeps the (B, T, V) logits'
    /// intermediates or a temporary output-weight gradient; otherwise as written above.
    /// </summary>
    /// <param name="idx">(B, T) int64 token ids.</param>
    /// <param name="documentIds">Optional (B, T) document ids (see <see cref="forward(Tensor, Tensor?)"/>).</param>
    /// <param name="targets">(B, T) int64 next-token ids; −1 = not a target.</param>
    /// <returns>A 0-d fp32 tensor: the sum over the targets of −log p(target).</returns>
    internal Tensor TrainingLoss(Tensor idx, Tensor? documentIds, Tensor targets)
    {
        if (!(_preallocatedGradients && training && is_grad_enabled()))
        {
            var logits = forward(idx, documentIds);
            return nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), targets.view(-1), ignore_index: -1, reduction: nn.Reduction.Sum);
        }

        var (x, context) = Embed(idx, documentIds);
        var hidden = RunBlocks(x, context, lastPositionOnly: false);                  // (B, T, C)
        var weight = lm_head is null ? wte.weight! : lm_head.weight!;   // kept by the function until backward
        return OutputLayerLoss.Run(hidden.view(-1, hidden.shape[^1]), weight, targets.view(-1));
    }

    /// <summary>
    /// The cosines and sines of RoPE's angles: position · θ^(−2i/hs) for channel pair i, duplicated to cover both
    /// halves of the head ("rotate half" layout). Computed in fp32 (positions up to 10⁵ need more than bf16's 8
    /// mantissa bits), then cast to the activations' type.
    /// </summary>
    private (Tensor Cos, Tensor Sin) RotaryAngles(Tensor positions, ScalarType dtype)
    {
        int hs = Config.HeadSize;
        var exponents = arange(0, hs, 2, dtype: ScalarType.Float32, device: positions.device) / hs;  // (hs/2): 2i/hs
        var inverseFrequencies = (exponents * -Math.Log(Config.RopeTheta)).exp();                    // (hs/2): θ^(−2i/hs)
        var angles = positions.to(ScalarType.Float32).unsqueeze(-1) * inverseFrequencies;           // (..., T, hs/2)
        angles = cat([angles, angles], dim: -1);                                                     // (..., T, hs)
        if (angles.dim() == 3)
        {
            angles = angles.unsqueeze(1);                                                            // (B, 1, T, hs)
        }

        return (angles.cos().to(dtype), angles.sin().to(dtype));
    }

    private void CheckInput(Tensor idx, Tensor? documentIds)
    {
        ArgumentNullException.ThrowIfNull(idx);
        if (idx.dtype != ScalarType.Int64 || idx.dim() != 2)
        {
            throw new ArgumentException(
                $"Expected token ids of shape (B, T) and type Int64, got shape ({string.Join(", ", idx.shape)}) and type {idx.dtype}.",
                nameof(idx));
        }

        // Inputs must sit where the weights are (ModelInputs builds them there). Checked here, before the first kernel,
        // so a caller that built them elsewhere gets this message rather than an error from deep inside libtorch.
        var device = Device;
        if (idx.device_type != device.type || (device.type != DeviceType.CPU && idx.device_index != device.index))
        {
            throw new ArgumentException(
                $"The token ids are on device {idx.device_type}:{idx.device_index}, but the model's weights are on {device.type}:{device.index}; build inputs on GptModel.Device.",
                nameof(idx));
        }

        if (idx.shape[1] > Config.ContextLength || idx.shape[1] == 0)
        {
            throw new ArgumentException(
                $"The sequence length is {idx.shape[1]}; this model accepts 1 to {Config.ContextLength} tokens (GptConfig.ContextLength).",
                nameof(idx));
        }

        if (documentIds is not null && (documentIds.dtype != ScalarType.Int64 || !documentIds.shape.SequenceEqual(idx.shape)))
        {
            throw new ArgumentException(
                $"Expected document ids of the token ids' shape ({string.Join(", ", idx.shape)}) and type Int64, got shape ({string.Join(", ", documentIds.shape)}) and type {documentIds.dtype}.",
                nameof(documentIds));
        }
    }

    /// <summary>
    /// GPT-2's initialisation (nanoGPT <c>_init_weights</c>): N(0, 0.02) weights and embeddings, zero biases, unit
    /// norm weights; then each residual branch's output projection (attention and MLP <c>c_proj</c>) gets std
    /// 0.02/√(2·n_layer). The residual stream sums 2 such projections per layer, so its variance grows with depth;
    /// the scaling keeps it constant at initialisation (GPT-2 paper, section 2.3).
    /// </summary>
    private void InitializeWeights()
    {
        using var noGrad = no_grad();
        foreach (var (_, module) in named_modules())
        {
            switch (module)
            {
                case Linear linear:
                    nn.init.normal_(linear.weight!, 0.0, InitStd);
                    if (linear.bias is not null)
                    {
                        nn.init.zeros_(linear.bias);
                    }

                    break;
                case Embedding embedding:
                    nn.init.normal_(embedding.weight!, 0.0, InitStd);
                    break;
            }
        }

        double residualStd = InitStd / Math.Sqrt(2.0 * Config.LayerCount);
        foreach (var block in h)
        {
            nn.init.normal_(block.Attention.OutputProjection.weight!, 0.0, residualStd);
            nn.init.normal_(block.Mlp.OutputProjection.weight!, 0.0, residualStd);
        }
    }
}

/// <summary>
/// Activation checkpointing of one block (PyTorch's reentrant <c>torch.utils.checkpoint</c>, which TorchSharp lacks),
/// as a custom autograd function: forward runs the block without building a graph and keeps only its input; backward
/// runs the block again with gradients enabled from that input and backpropagates through the recomputed graph, which
/// adds the parameters' gradients and yields the input's. Per layer only the (B, T, C) input stays alive between
/// forward and backward instead of every intermediate (attention, MLP hidden states: ~20·B·T·C floats per GPT-2 block),
/// for the price of one more forward pass of compute.
/// </summary>
/// <remarks>
/// Dropout must draw the same masks both times, or the gradients would belong to another function: forward keeps
/// torch's CPU generator state, and backward sets it for the recomputation and restores the current one after. On CUDA
/// (whose generator state TorchSharp cannot read) forward seeds the CUDA generator from a CPU draw before the block and
/// backward seeds it the same way; that path is untested here (no CUDA build of TorchSharp on this machine). For the
/// same reason the recomputation runs in the forward's autocast precision: backward is called outside the training
/// step's autocast scope, and a bf16 forward recomputed in fp32 would give the gradients of another function.
/// </remarks>
internal sealed class CheckpointedBlock : autograd.SingleTensorFunction<CheckpointedBlock>
{
    /// <inheritdoc/>
    public override string Name => nameof(CheckpointedBlock);

    /// <summary>The block's output for <paramref name="x"/>, recomputed in backward instead of stored.</summary>
    public static Tensor Run(GptBlock block, Tensor x, AttentionContext context)
    {
        // The function only backpropagates when an input needs a gradient (reentrant checkpointing's rule), and the
        // block's parameters are not inputs: make sure the hidden state asks for one, even below frozen embeddings.
        if (!x.requires_grad)
            x = x.detach().requires_grad_(true);
        return apply(x, block, context);
    }

    /// <inheritdoc/>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var block = (GptBlock)vars[1];
        var context = (AttentionContext)vars[2];
        ctx.save_for_backward([x]);
        ctx.save_data("block", block);
        ctx.save_data("context", context);
        ctx.save_data("rng", new GeneratorState(torch.random.get_rng_state()));
        ctx.save_data("autocast", Autocast.ComputeType is { } low ? (int)low : -1);   // backward runs outside the autocast scope
        if (x.device_type == DeviceType.CUDA)
        {
            // The CUDA generator's state cannot be read through TorchSharp 0.107: seed it instead, from a number drawn
            // from the CPU generator (unused by a CUDA run otherwise), and seed it the same way again in backward.
            long seed = randint(long.MaxValue, [1], dtype: ScalarType.Int64).item<long>();
            torch.cuda.manual_seed(seed);
            ctx.save_data("cudaSeed", seed);
        }

        // Only the output leaves this scope: every intermediate is freed now (autograd is off, nothing keeps them).
        using var scope = NewDisposeScope();
        return block.call(x, context).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        var x = ctx.get_saved_variables()[0];
        var block = (GptBlock)ctx.get_data("block");
        var context = (AttentionContext)ctx.get_data("context");
        var rng = (GeneratorState)ctx.get_data("rng");

        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var input = x.detach().requires_grad_(true);
        var current = torch.random.get_rng_state();
        torch.random.set_rng_state(rng.State);                     // the forward's dropout masks again
        if (ctx.get_data("cudaSeed") is long cudaSeed)
            torch.cuda.manual_seed(cudaSeed);
        Tensor y;
        int autocast = (int)ctx.get_data("autocast");
        using (Autocast.Enable(autocast < 0 ? null : (ScalarType)autocast))   // the forward's precision again, not the caller's
            y = block.call(input, context);
        torch.random.set_rng_state(current);
        rng.State.Dispose();
        autograd.backward([y], [grad_output]);                     // adds into the block's parameter gradients
        return [input.grad!.MoveToOuterDisposeScope(), null!, null!];
    }

    /// <summary>Wraps the generator state: the autograd context keeps tensors only through save_for_backward.</summary>
    private sealed record GeneratorState(Tensor State);
}
