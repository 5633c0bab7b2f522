using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// One LoRA adapter: the trainable pair A (rank × in) and B (size × rank) whose product, times <see cref="Scaling"/>,
/// updates rows [<see cref="Offset"/>, <see cref="Offset"/> + <see cref="Size"/>) of a base linear layer's weight. PEFT's
/// <c>lora_A</c> / <c>lora_B</c> / <c>lora_dropout</c> / <c>scaling</c> of one adapter (peft/tuners/lora/layer.py).
/// </summary>
/// <remarks>
/// A row range instead of a whole layer lets one adapter stand for a Hugging Face projection that our model fuses with
/// others: Llama's <c>q_proj</c> is the query rows of our <c>attn.c_attn</c>, <c>gate_proj</c> the first half of the
/// modern <c>mlp.c_fc</c>. The adapter's output is then exactly what PEFT adds to that projection's output.
/// </remarks>
internal sealed class LoraAdapter : nn.Module<Tensor, Tensor>
{
    private readonly Linear lora_A;
    private readonly Linear lora_B;
    private readonly double _dropout;

    /// <summary>Makes an adapter whose A starts as <paramref name="initialization"/> says and B at zero (so ΔW = 0).</summary>
    public LoraAdapter(string name, long inFeatures, long offset, long size, int rank, double scaling, double dropout, LoraInitialization initialization)
        : base(name)
    {
        Name = name;
        Offset = offset;
        Size = size;
        Rank = rank;
        Scaling = scaling;
        _dropout = dropout;
        lora_A = nn.Linear(inFeatures, rank, hasBias: false);
        lora_B = nn.Linear(rank, size, hasBias: false);
        RegisterComponents();
        using var noGrad = no_grad();
        if (initialization == LoraInitialization.Gaussian)
            nn.init.normal_(lora_A.weight!, 0.0, 1.0 / rank);                   // PEFT init_lora_weights="gaussian"
        else
            nn.init.kaiming_uniform_(lora_A.weight!, Math.Sqrt(5));             // PEFT init_lora_weights=True (nn.Linear's init)
        nn.init.zeros_(lora_B.weight!);
    }

    /// <summary>The adapter's name within its layer: the Hugging Face projection it stands for (<c>q_proj</c>, <c>c_attn</c>, …).</summary>
    public string Name { get; }

    /// <summary>The first output row of the base layer this adapter updates.</summary>
    public long Offset { get; }

    /// <summary>The number of output rows this adapter updates.</summary>
    public long Size { get; }

    /// <summary>The rank r.</summary>
    public int Rank { get; }

    /// <summary>alpha / r, or alpha / √r with rsLoRA.</summary>
    public double Scaling { get; }

    /// <summary>A: (rank, in).</summary>
    public Parameter A => lora_A.weight!;

    /// <summary>B: (size, rank).</summary>
    public Parameter B => lora_B.weight!;

    /// <summary>The update of the adapted rows' output: B·A·dropout(x) · scaling, (…, <see cref="Size"/>).</summary>
    public override Tensor forward(Tensor x)
    {
        var input = _dropout > 0 ? nn.functional.dropout(x, _dropout, training) : x;
        return Autocast.Linear(Autocast.Linear(input, lora_A), lora_B) * Scaling;
    }

    /// <summary>ΔW = B·A · scaling, (size, in), fp32: what merging adds to the base weight's rows.</summary>
    public Tensor DeltaWeight() => B.matmul(A) * Scaling;
}
