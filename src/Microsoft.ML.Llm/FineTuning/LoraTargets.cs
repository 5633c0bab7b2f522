namespace Microsoft.ML.Llm;

/// <summary>The four linear layers of a block that LoRA can adapt.</summary>
internal enum LoraSite
{
    /// <summary><c>attn.c_attn</c>: queries, keys and values fused (Llama's q_proj | k_proj | v_proj).</summary>
    AttentionQkv,

    /// <summary><c>attn.c_proj</c>: the attention's output projection (Llama's o_proj).</summary>
    AttentionOutput,

    /// <summary><c>mlp.c_fc</c>: the MLP's input projection (modern style: gate_proj | up_proj fused).</summary>
    MlpInput,

    /// <summary><c>mlp.c_proj</c>: the MLP's output projection (Llama's down_proj).</summary>
    MlpOutput,
}

/// <summary>One adapter to create in every block: the layer, the output rows it updates and its (Hugging Face) name.</summary>
/// <param name="Site">The layer.</param>
/// <param name="Name">The adapter's name, the Hugging Face module it stands for (<c>q_proj</c>, <c>c_attn</c>, …).</param>
/// <param name="Offset">First output row of the layer that the adapter updates.</param>
/// <param name="Size">Number of rows it updates.</param>
internal sealed record LoraTarget(LoraSite Site, string Name, long Offset, long Size);

/// <summary>
/// Resolves <see cref="LoraOptions.TargetModules"/> names to the layers and row ranges of a configuration: Hugging Face /
/// PEFT names for both architectures, our module paths, and PEFT's <c>all-linear</c>.
/// </summary>
internal static class LoraTargets
{
    /// <summary>PEFT's <c>all-linear</c>: every linear layer of the blocks (not the output head).</summary>
    public const string AllLinear = "all-linear";

    /// <summary>PEFT's defaults (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING): gpt2 → c_attn, llama → q_proj, v_proj.</summary>
    public static IReadOnlyList<string> DefaultNames(GptConfig config) =>
        config.Style == GptStyle.Gpt2 ? ["c_attn"] : ["q_proj", "v_proj"];

    /// <summary>Every name this configuration accepts, each with the adapters it creates per block.</summary>
    public static IReadOnlyDictionary<string, LoraTarget[]> Available(GptConfig config)
    {
        long c = config.EmbeddingSize, kv = (long)config.ResolvedKeyValueHeadCount * config.HeadSize, h = config.IntermediateSize;
        var qkv = new LoraTarget(LoraSite.AttentionQkv, "c_attn", 0, c + 2 * kv);
        var q = new LoraTarget(LoraSite.AttentionQkv, "q_proj", 0, c);
        var k = new LoraTarget(LoraSite.AttentionQkv, "k_proj", c, kv);
        var v = new LoraTarget(LoraSite.AttentionQkv, "v_proj", c + kv, kv);
        bool modern = config.Style == GptStyle.Modern;
        var o = new LoraTarget(LoraSite.AttentionOutput, modern ? "o_proj" : "c_proj", 0, c);
        var fc = new LoraTarget(LoraSite.MlpInput, "c_fc", 0, modern ? 2 * h : h);
        var down = new LoraTarget(LoraSite.MlpOutput, modern ? "down_proj" : "c_proj", 0, c);
        var names = new Dictionary<string, LoraTarget[]>(StringComparer.Ordinal)
        {
            ["q_proj"] = [q],
            ["k_proj"] = [k],
            ["v_proj"] = [v],
            ["o_proj"] = [o],
            ["c_attn"] = [qkv],
            ["attn.c_attn"] = [qkv],
            ["c_proj"] = [o, down],
            ["attn.c_proj"] = [o],
            ["c_fc"] = [fc],
            ["mlp.c_fc"] = [fc],
            ["mlp.c_proj"] = [down],
            ["down_proj"] = [down],
        };
        if (modern)
        {
            var gate = new LoraTarget(LoraSite.MlpInput, "gate_proj", 0, h);
            var up = new LoraTarget(LoraSite.MlpInput, "up_proj", h, h);
            names["gate_proj"] = [gate];
            names["up_proj"] = [up];
            names[AllLinear] = [q, k, v, o, gate, up, down];     // PEFT's all-linear on Llama: the seven projections
        }
        else
        {
            names["up_proj"] = [fc];                             // GPT-2's c_fc is the up projection
            names[AllLinear] = [qkv, o, fc, down];               // PEFT's all-linear on GPT-2: its four Conv1D layers
        }

        return names;
    }

    /// <summary>
    /// The adapters <paramref name="names"/> (null or empty: <see cref="DefaultNames"/>) create in each block, checked:
    /// every name matches a layer and no two adapters update the same rows.
    /// </summary>
    /// <exception cref="ArgumentException">A name matches no layer (the message lists the accepted names), or two overlap.</exception>
    public static IReadOnlyList<LoraTarget> Resolve(GptConfig config, IReadOnlyList<string>? names)
    {
        var available = Available(config);
        var requested = names is { Count: > 0 } ? names : DefaultNames(config);
        var targets = new List<LoraTarget>();
        var from = new Dictionary<LoraTarget, string>();
        foreach (string raw in requested)
        {
            string name = raw.Trim();
            if (!available.TryGetValue(name, out var matched))
            {
                string style = config.Style == GptStyle.Gpt2 ? "GPT-2-style" : "modern-style (Llama)";
                throw new ArgumentException(
                    $"LoraOptions.TargetModules names '{raw}', which matches no layer of this {style} model; accepted names: {string.Join(", ", available.Keys)}.",
                    nameof(LoraOptions.TargetModules));
            }

            foreach (var target in matched)
            {
                if (targets.Contains(target))
                    continue;                                     // named twice (c_proj and o_proj): one adapter
                var overlap = targets.FirstOrDefault(t => t.Site == target.Site && t.Offset < target.Offset + target.Size && target.Offset < t.Offset + t.Size);
                if (overlap is not null)
                {
                    throw new ArgumentException(
                        $"LoraOptions.TargetModules names '{from[overlap]}' and '{raw}', which adapt overlapping rows of the same layer ({overlap.Name} and {target.Name}); name only one of them.",
                        nameof(LoraOptions.TargetModules));
                }

                targets.Add(target);
                from[target] = raw;
            }
        }

        return targets;
    }
}
