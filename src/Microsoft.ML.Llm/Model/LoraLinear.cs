using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// A base linear layer with LoRA adapters on some of its output rows (PEFT's <c>lora.Linear</c>: base layer + adapters):
/// <c>y = W·x + b + Σ scatter(adapterᵢ(x))</c>, or <c>W'·x + b</c> with <c>W' = W + Σ ΔWᵢ</c> once merged.
/// </summary>
/// <remarks>
/// The base layer stays registered where it was (<c>h.0.attn.c_attn.weight</c>, so the model's own names and zips do
/// not change) and is only referenced here; this module registers the adapters alone, under the layer's name plus
/// <c>_lora</c> (<c>h.0.attn.c_attn_lora.q_proj.lora_A.weight</c>).
/// </remarks>
internal sealed class LoraLinear : nn.Module<Tensor, Tensor>
{
    private readonly BaseLayer _base;
    private readonly List<LoraAdapter> _adapters;

    public LoraLinear(string name, Linear baseLayer, IEnumerable<LoraAdapter> layerAdapters) : base(name)
    {
        _base = new BaseLayer(baseLayer);
        _adapters = layerAdapters.OrderBy(a => a.Offset).ToList();
        RegisterComponents();
        foreach (var adapter in _adapters)
            register_module(adapter.Name, adapter);
    }

    /// <summary>The wrapped layer.</summary>
    public Linear Base => _base.Layer;

    /// <summary>The adapters, by increasing offset.</summary>
    public IReadOnlyList<LoraAdapter> Adapters => _adapters;

    /// <summary>Whether the adapters' updates are currently added into the base weight.</summary>
    public bool Merged { get; private set; }

    public override Tensor forward(Tensor x)
    {
        var y = Autocast.Linear(x, Base);                                   // (…, out)
        if (Merged)
            return y;
        long outFeatures = y.shape[^1];
        foreach (var adapter in Adapters)
        {
            var delta = adapter.call(x);                                    // (…, size)
            if (adapter.Size != outFeatures)
                delta = nn.functional.pad(delta, [adapter.Offset, outFeatures - adapter.Offset - adapter.Size]);   // zeros around the rows
            y = HeldScalar.Add(y, delta.to(y.dtype));
        }

        return y;
    }

    /// <summary>Adds every adapter's ΔW into the base weight (PEFT's <c>merge</c>); forward then costs the base layer only.</summary>
    public void Merge()
    {
        if (Merged)
            return;
        AddDeltas(Base.weight!, 1.0);
        Merged = true;
    }

    /// <summary>Subtracts what <see cref="Merge"/> added (PEFT's <c>unmerge</c>; exact up to float rounding).</summary>
    public void Unmerge()
    {
        if (!Merged)
            return;
        AddDeltas(Base.weight!, -1.0);
        Merged = false;
    }

    /// <summary>Adds sign · ΔW of every adapter into the rows of <paramref name="weight"/> (the base weight or a copy of it).</summary>
    public void AddDeltas(Tensor weight, double sign)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var alpha = sign.ToScalar();   // held: see HeldScalar
        foreach (var adapter in Adapters)
            weight.narrow(0, adapter.Offset, adapter.Size).add_(adapter.DeltaWeight().to(weight.dtype), alpha: alpha);
    }

    /// <summary>Holds the base layer without registering it (it is registered in its own parent already).</summary>
    private sealed class BaseLayer(Linear layer)
    {
        public Linear Layer { get; } = layer;
    }
}
