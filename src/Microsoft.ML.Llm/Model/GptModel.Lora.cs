// LoRA on GptModel: adding adapters (PEFT's get_peft_model), merging and unmerging them, and the state dicts that
// saving uses (base weights with the adapters merged in, or the adapters alone). docs/ARCHITECTURE.md §8 "LoRA".

using System.IO.Hashing;
using System.Runtime.InteropServices;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>Where the base weights of a LoRA model come from: the path it was loaded from and the hash of its weights.</summary>
/// <param name="Path">A model zip or a Hugging Face folder (absolute).</param>
/// <param name="WeightsHash">XxHash64 of the base weights (<see cref="GptModel.BaseWeightsHash"/>).</param>
internal sealed record LoraBaseModel(string Path, ulong WeightsHash);

public sealed partial class GptModel
{
    private LoraOptions? _lora;

    /// <summary>The LoRA configuration of this model's adapters (a copy of the options they were made with; changing it
    /// changes nothing), or null when it has none.</summary>
    public LoraOptions? Lora => _lora?.Clone();

    /// <summary>Whether the adapters' updates are currently merged into the base weights (<see cref="MergeLora"/>).</summary>
    public bool IsLoraMerged => LoraLayers.Any() && LoraLayers.All(l => l.Layer.Merged);

    /// <summary>The number of parameters that train (all of them without LoRA; the adapters' with LoRA).</summary>
    public long TrainableParameterCount => parameters().Where(p => p.requires_grad).Sum(p => p.numel());

    /// <summary>The base model the adapters were made for, when it came from a file (adapters-only saving names it).</summary>
    internal LoraBaseModel? LoraBase { get; set; }

    /// <summary>Every wrapped layer, block by block.</summary>
    internal IEnumerable<(int Block, LoraSite Site, LoraLinear Layer)> LoraLayers
    {
        get
        {
            for (int i = 0; i < h.Count; i++)
            {
                var (qkv, attnOut) = h[i].Attention.Lora;
                var (mlpIn, mlpOut) = h[i].Mlp.Lora;
                if (qkv is not null)
                    yield return (i, LoraSite.AttentionQkv, qkv);
                if (attnOut is not null)
                    yield return (i, LoraSite.AttentionOutput, attnOut);
                if (mlpIn is not null)
                    yield return (i, LoraSite.MlpInput, mlpIn);
                if (mlpOut is not null)
                    yield return (i, LoraSite.MlpOutput, mlpOut);
            }
        }
    }

    /// <summary>
    /// Adds LoRA adapters to the layers <see cref="LoraOptions.TargetModules"/> names, in every block, and freezes every
    /// other parameter (<c>requires_grad = false</c>), as PEFT's <c>get_peft_model</c>. B starts at zero, so the model
    /// computes exactly what it computed before. A is drawn from torch's generator (seed it first for reproducible adapters).
    /// </summary>
    /// <param name="options">Rank, alpha, dropout, targets, initialisation; validated here.</param>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="ArgumentException">A target matches no layer (the message lists the accepted names).</exception>
    /// <exception cref="InvalidOperationException">The model has adapters already.</exception>
    public void AddLora(LoraOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (_lora is not null)
            throw new InvalidOperationException("This model has LoRA adapters already; merge them into a new model (GptModel.MergeLora, then save Merged) before adding others.");
        var targets = LoraTargets.Resolve(Config, options.TargetModules);
        var lora = options.Clone();
        foreach (var p in parameters())
            p.requires_grad = false;

        var device = Device;
        for (int i = 0; i < h.Count; i++)
        {
            var block = h[i];
            LoraLinear? Wrap(LoraSite site, Linear layer, string name)
            {
                var adapters = targets.Where(t => t.Site == site)
                    .Select(t => new LoraAdapter(t.Name, layer.weight!.shape[1], t.Offset, t.Size, lora.Rank, lora.Scaling, lora.Dropout, lora.Initialization))
                    .ToList();
                if (adapters.Count == 0)
                    return null;
                var wrapper = new LoraLinear(name + "_lora", layer, adapters);
                wrapper.to(device);
                wrapper.train(training);
                return wrapper;
            }

            block.Attention.AddLora(Wrap(LoraSite.AttentionQkv, block.Attention.QkvProjection, "c_attn"),
                Wrap(LoraSite.AttentionOutput, block.Attention.OutputProjection, "c_proj"));
            block.Mlp.AddLora(Wrap(LoraSite.MlpInput, block.Mlp.InputProjection, "c_fc"),
                Wrap(LoraSite.MlpOutput, block.Mlp.OutputProjection, "c_proj"));
        }

        _lora = lora;
    }

    /// <summary>Adds every adapter's update into its base weight (PEFT's <c>merge_adapter</c>): forward passes then cost
    /// what the base model's cost. Training needs the adapters unmerged (<see cref="UnmergeLora"/>).</summary>
    /// <exception cref="InvalidOperationException">The model has no adapters.</exception>
    public void MergeLora()
    {
        RequireLora(nameof(MergeLora));
        foreach (var (_, _, layer) in LoraLayers)
            layer.Merge();
    }

    /// <summary>Subtracts the merged updates again (PEFT's <c>unmerge_adapter</c>; exact up to float rounding).</summary>
    /// <exception cref="InvalidOperationException">The model has no adapters.</exception>
    public void UnmergeLora()
    {
        RequireLora(nameof(UnmergeLora));
        foreach (var (_, _, layer) in LoraLayers)
            layer.Unmerge();
    }

    private void RequireLora(string method)
    {
        if (_lora is null)
            throw new InvalidOperationException($"GptModel.{method}: this model has no LoRA adapters (train with CausalLmTrainerOptions.Lora, or call AddLora).");
    }

    /// <summary>Whether a state-dict entry belongs to a LoRA adapter (adapter modules are named <c>…_lora</c>).</summary>
    internal static bool IsAdapterEntry(string name) => name.Contains("_lora.", StringComparison.Ordinal);

    /// <summary>The adapters' entries of the state dict (live tensors).</summary>
    internal Dictionary<string, Tensor> AdapterStateDict() =>
        state_dict().Where(kv => IsAdapterEntry(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);

    /// <summary>
    /// The base model's state dict (the names of a model without adapters): live tensors, except that with
    /// <paramref name="merged"/> each adapted weight whose adapters are not merged yet is replaced by a merged copy
    /// (in the current dispose scope). The model itself does not change.
    /// </summary>
    internal Dictionary<string, Tensor> BaseStateDict(bool merged)
    {
        var state = state_dict().Where(kv => !IsAdapterEntry(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        if (!merged)
            return state;
        foreach (var (block, site, layer) in LoraLayers)
        {
            if (layer.Merged)
                continue;
            string name = $"h.{block}.{SitePath(site)}.weight";
            var copy = state[name].detach().clone();
            layer.AddDeltas(copy, 1.0);
            state[name] = copy;
        }

        return state;
    }

    /// <summary>Writes the weights in TorchSharp's <c>Module.save</c> format: every entry without adapters; with adapters,
    /// either the merged base weights (<see cref="LoraSaveMode.Merged"/>) or the adapters alone.</summary>
    internal void SaveWeights(BinaryWriter writer, LoraSaveMode? mode)
    {
        using var scope = NewDisposeScope();
        var entries = _lora is null || mode is null ? state_dict()
            : mode == LoraSaveMode.Merged ? BaseStateDict(merged: true) : AdapterStateDict();
        nn.Module.save_state_dict(writer, entries);
    }

    /// <summary>Reads adapter weights written by <see cref="SaveWeights"/> in <see cref="LoraSaveMode.Adapters"/> mode:
    /// exactly this model's adapter entries, no others.</summary>
    internal void LoadAdapterWeights(BinaryReader reader)
    {
        var loaded = new Dictionary<string, bool>(StringComparer.Ordinal);
        load(reader, strict: false, loadedParameters: loaded);
        var expected = AdapterStateDict().Keys.ToHashSet(StringComparer.Ordinal);
        var unknown = loaded.Where(kv => !kv.Value || !expected.Contains(kv.Key)).Select(kv => kv.Key).ToList();
        var missing = expected.Where(n => !loaded.ContainsKey(n)).ToList();
        if (unknown.Count > 0 || missing.Count > 0)
        {
            throw new InvalidDataException(
                $"The adapter weights do not match the LoRA configuration: {missing.Count} adapter tensor(s) missing ({string.Join(", ", missing.Take(4))}), " +
                $"{unknown.Count} unexpected ({string.Join(", ", unknown.Take(4))}).");
        }
    }

    /// <summary>
    /// XxHash64 (seed 0) of the base weights (adapters excluded, merged updates not subtracted): every entry of the
    /// state dict in ordinal name order, name (UTF-8) then its fp32 values. The same weights give the same hash whether
    /// they were read from a model zip or a Hugging Face folder.
    /// </summary>
    internal ulong BaseWeightsHash()
    {
        using var scope = NewDisposeScope();
        var hash = new XxHash64();
        foreach (var (name, tensor) in BaseStateDict(merged: false).OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            hash.Append(System.Text.Encoding.UTF8.GetBytes(name));
            var values = tensor.detach().to(ScalarType.Float32, CPU).contiguous().data<float>().ToArray();
            hash.Append(MemoryMarshal.AsBytes(values.AsSpan()));
        }

        return hash.GetCurrentHashAsUInt64();
    }

    /// <summary>Our module path of a site: attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj.</summary>
    internal static string SitePath(LoraSite site) => site switch
    {
        LoraSite.AttentionQkv => "attn.c_attn",
        LoraSite.AttentionOutput => "attn.c_proj",
        LoraSite.MlpInput => "mlp.c_fc",
        _ => "mlp.c_proj",
    };
}
