// LoRA adapters in Hugging Face PEFT's layout (peft/utils/save_and_load.py, peft/tuners/lora/config.py):
// adapter_config.json (peft_type "LORA", r, lora_alpha, lora_dropout, target_modules, use_rslora, fan_in_fan_out, …) and
// adapter_model.safetensors, whose keys are the base model's module path under "base_model.model." followed by
// ".lora_A.weight" (r, in) or ".lora_B.weight" (out, r), the adapter name ("default") removed:
//   GPT-2: base_model.model.transformer.h.0.attn.c_attn.lora_A.weight
//   Llama: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
// GPT-2's Conv1D layers store their weight (in, out), so PEFT sets fan_in_fan_out = true for them; that flag only
// transposes ΔW when merging: lora_A and lora_B have nn.Linear's shapes for both architectures, which are ours.

using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Llm.Internal;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Interchange;

/// <summary>Exports and imports LoRA adapters in PEFT's folder layout.</summary>
internal static class PeftAdapter
{
    internal const string ConfigFile = "adapter_config.json";
    internal const string WeightsFile = "adapter_model.safetensors";
    private const string KeyPrefix = "base_model.model.";

    /// <summary>One PEFT module's adapter: its module path (without the prefix) and our adapter's A and the rows of B.</summary>
    private sealed record PeftModule(string Path, string TargetName, LoraAdapter Adapter, long RowOffset, long Rows);

    /// <summary>Writes <paramref name="model"/>'s adapters as PEFT's adapter_config.json + adapter_model.safetensors.</summary>
    public static void Save(GptModel model, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        var lora = model.Lora ?? throw new InvalidOperationException("The model has no LoRA adapters to export (train with CausalLmTrainerOptions.Lora, or call GptModel.AddLora).");
        string target = AtomicFolder.CheckTarget(folder, "export");

        var modules = Modules(model);
        bool gpt2 = model.Config.Style == GptStyle.Gpt2;
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = model.LoraBase?.Path,
            ["r"] = lora.Rank,
            ["lora_alpha"] = lora.Alpha,
            ["lora_dropout"] = lora.Dropout,
            ["target_modules"] = new JsonArray(modules.Select(m => m.TargetName).Distinct().Select(n => (JsonNode)JsonValue.Create(n)!).ToArray()),
            ["use_rslora"] = lora.UseRsLora,
            ["fan_in_fan_out"] = gpt2,                   // GPT-2's Conv1D stores (in, out)
            ["bias"] = "none",
            ["init_lora_weights"] = lora.Initialization == LoraInitialization.Gaussian ? "gaussian" : true,
            ["use_dora"] = false,
            ["modules_to_save"] = null,
            ["layers_to_transform"] = null,
            ["rank_pattern"] = new JsonObject(),
            ["alpha_pattern"] = new JsonObject(),
            ["inference_mode"] = true,
        };

        AtomicFolder.Write(target, "export", temp =>
        {
            File.WriteAllText(Path.Combine(temp, ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            using (var scope = NewDisposeScope())
            {
                var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
                foreach (var m in modules)
                {
                    tensors[KeyPrefix + m.Path + ".lora_A.weight"] = m.Adapter.A.detach().to(ScalarType.Float32, CPU).contiguous();
                    tensors[KeyPrefix + m.Path + ".lora_B.weight"] = m.Adapter.B.detach().narrow(0, m.RowOffset, m.Rows).to(ScalarType.Float32, CPU).contiguous();
                }

                SafetensorsFile.Save(Path.Combine(temp, WeightsFile), tensors);
            }

        });
    }

    /// <summary>
    /// Adds the adapters of a PEFT folder to <paramref name="model"/> (a plain model: the base the adapters were trained on),
    /// checking the configuration and every tensor's name and shape.
    /// </summary>
    public static void Load(GptModel model, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (model.Lora is not null)
            throw new InvalidOperationException("The model has LoRA adapters already; load PEFT adapters onto a plain base model.");
        string configPath = Path.Combine(folder, ConfigFile), weightsPath = Path.Combine(folder, WeightsFile);
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"The PEFT adapter folder '{folder}' has no {ConfigFile}.", configPath);
        if (!File.Exists(weightsPath))
        {
            string hint = File.Exists(Path.Combine(folder, "adapter_model.bin")) ? " (adapter_model.bin pickles are not read: save with safe_serialization=True)" : "";
            throw new FileNotFoundException($"The PEFT adapter folder '{folder}' has no {WeightsFile}{hint}.", weightsPath);
        }

        // On failure the model keeps half-filled adapters: callers load into a model of their own and discard it.
        var lora = ReadConfig(configPath);
        CausalLmTransformer.AddLoraKeepingGenerator(model, lora);
        var tensors = SafetensorsFile.Load(weightsPath);
        try
        {
            Fill(model, tensors, weightsPath);
        }
        finally
        {
            foreach (var t in tensors.Values)
                t.Dispose();
        }
    }

    /// <summary>Reads adapter_config.json into LoRA options; rejects PEFT features this library does not implement.</summary>
    internal static LoraOptions ReadConfig(string path)
    {
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"The PEFT config '{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The PEFT config '{path}' is not valid JSON ({e.Message}).", e);
        }

        string? peftType = json["peft_type"]?.GetValue<string>();
        if (peftType != "LORA")
            throw new NotSupportedException($"The PEFT config '{path}' has peft_type '{peftType ?? "(none)"}'; only \"LORA\" adapters are read.");
        string? task = json["task_type"]?.GetValue<string>();
        if (task is not null && task != "CAUSAL_LM")
            throw new NotSupportedException($"The PEFT config '{path}' has task_type '{task}'; only \"CAUSAL_LM\" adapters are read.");
        void Unsupported(string field, string accepted)
        {
            throw new NotSupportedException($"The PEFT config '{path}' sets {field} = {json[field]!.ToJsonString()}; this library reads LoRA adapters with {field} {accepted}.");
        }

        if (json["use_dora"] is JsonValue dora && dora.TryGetValue(out bool d) && d)
            Unsupported("use_dora", "false");
        if (json["bias"] is JsonValue bias && bias.TryGetValue(out string? b) && b != "none")
            Unsupported("bias", "\"none\"");
        if (json["modules_to_save"] is JsonArray { Count: > 0 })
            Unsupported("modules_to_save", "null");
        if (json["layers_to_transform"] is JsonNode layers && layers is not JsonArray { Count: 0 })
            Unsupported("layers_to_transform", "null");
        if (json["rank_pattern"] is JsonObject { Count: > 0 })
            Unsupported("rank_pattern", "{}");
        if (json["alpha_pattern"] is JsonObject { Count: > 0 })
            Unsupported("alpha_pattern", "{}");

        var targets = json["target_modules"] switch
        {
            JsonArray a => a.Select(n => n?.GetValue<string>() ?? "").ToArray(),
            JsonValue v when v.TryGetValue(out string? one) => [one!],
            _ => throw new InvalidDataException($"The PEFT config '{path}' has no target_modules (a list of module names, or \"all-linear\")."),
        };
        var lora = new LoraOptions
        {
            Rank = json["r"]?.GetValue<int>() ?? 8,
            Alpha = json["lora_alpha"]?.GetValue<double>() ?? 8,
            Dropout = json["lora_dropout"]?.GetValue<double>() ?? 0,
            UseRsLora = json["use_rslora"]?.GetValue<bool>() ?? false,
            TargetModules = targets,
            Initialization = json["init_lora_weights"] is JsonValue init && init.TryGetValue(out string? s) && s == "gaussian" ? LoraInitialization.Gaussian : LoraInitialization.KaimingUniform,
        };
        try
        {
            lora.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The PEFT config '{path}' is invalid: {e.Message}", e);
        }

        return lora;
    }

    /// <summary>Copies the file's lora_A / lora_B tensors into the adapters, every one named and shaped as expected, none left over.</summary>
    private static void Fill(GptModel model, Dictionary<string, Tensor> tensors, string path)
    {
        var modules = Modules(model);
        var used = new HashSet<string>(StringComparer.Ordinal);
        using var noGrad = no_grad();
        Tensor Get(string key, long[] shape)
        {
            if (!tensors.TryGetValue(key, out var t))
                throw new InvalidDataException($"The PEFT adapter file '{path}' lacks tensor '{key}', which its adapter_config.json implies for this base model.");
            if (!t.shape.SequenceEqual(shape))
                throw new InvalidDataException($"Tensor '{key}' in '{path}' has shape [{string.Join(", ", t.shape)}]; the base model and adapter_config.json imply [{string.Join(", ", shape)}].");
            used.Add(key);
            return t;
        }

        foreach (var m in modules)
        {
            var adapter = m.Adapter;
            var a = Get(KeyPrefix + m.Path + ".lora_A.weight", adapter.A.shape);
            var bRows = Get(KeyPrefix + m.Path + ".lora_B.weight", [m.Rows, adapter.Rank]);
            if (m.RowOffset == 0)
            {
                adapter.A.copy_(a);          // a fused adapter split on export: every part carries the same A
            }
            else if (!adapter.A.eq(a.to(adapter.A.device)).all().item<bool>())
            {
                throw new InvalidDataException($"Tensor '{KeyPrefix + m.Path}.lora_A.weight' in '{path}' differs from its sibling's; adapters of a fused layer share one A.");
            }

            adapter.B.narrow(0, m.RowOffset, m.Rows).copy_(bRows);
        }

        var extra = tensors.Keys.Where(k => !used.Contains(k)).ToList();
        if (extra.Count > 0)
        {
            throw new InvalidDataException(
                $"The PEFT adapter file '{path}' has {extra.Count} tensor(s) that its adapter_config.json and this base model do not have: {string.Join(", ", extra.Take(6))}{(extra.Count > 6 ? ", …" : "")}.");
        }
    }

    /// <summary>The PEFT modules of <paramref name="model"/>'s adapters, with our adapter and the rows of its B each stands for.</summary>
    private static List<PeftModule> Modules(GptModel model)
    {
        bool gpt2 = model.Config.Style == GptStyle.Gpt2;
        var c = model.Config;
        long e = c.EmbeddingSize, kv = (long)c.ResolvedKeyValueHeadCount * c.HeadSize, hidden = c.IntermediateSize;
        var list = new List<PeftModule>();
        foreach (var (block, site, layer) in model.LoraLayers)
        {
            foreach (var adapter in layer.Adapters)
            {
                if (gpt2)
                {
                    if (adapter.Offset != 0 || adapter.Size != layer.Base.weight!.shape[0])
                    {
                        throw new NotSupportedException(
                            $"The adapter '{adapter.Name}' updates part of GPT-2's fused attn.c_attn; PEFT's GPT2LMHeadModel has no such module (queries, keys and values are one Conv1D), so it cannot be exported. Target c_attn instead.");
                    }

                    string path = $"transformer.h.{block}.{GptModel.SitePath(site)}";
                    list.Add(new PeftModule(path, path[(path.LastIndexOf('.') + 1)..], adapter, 0, adapter.Size));
                    continue;
                }

                string prefix = $"model.layers.{block}.";
                string parentPath = site is LoraSite.AttentionQkv or LoraSite.AttentionOutput ? "self_attn." : "mlp.";
                if (adapter.Name is "c_attn")
                {
                    // Our fused q|k|v adapter as three PEFT modules with the same A and B's rows split: B·A restricted to
                    // the q rows is exactly q_proj's update.
                    list.Add(new PeftModule(prefix + "self_attn.q_proj", "q_proj", adapter, 0, e));
                    list.Add(new PeftModule(prefix + "self_attn.k_proj", "k_proj", adapter, e, kv));
                    list.Add(new PeftModule(prefix + "self_attn.v_proj", "v_proj", adapter, e + kv, kv));
                }
                else if (adapter.Name is "c_fc")
                {
                    list.Add(new PeftModule(prefix + "mlp.gate_proj", "gate_proj", adapter, 0, hidden));
                    list.Add(new PeftModule(prefix + "mlp.up_proj", "up_proj", adapter, hidden, hidden));
                }
                else
                {
                    list.Add(new PeftModule(prefix + parentPath + adapter.Name, adapter.Name, adapter, 0, adapter.Size));
                }
            }
        }

        return list;
    }
}
