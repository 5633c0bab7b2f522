// How our GptModel maps onto Hugging Face's GPT2LMHeadModel and LlamaForCausalLM: config.json fields and tensor names.
//
// GPT-2 (transformers modeling_gpt2.py): transformer.wte / wpe / h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
// mlp.c_proj} / ln_f, lm_head tied to wte. Its linear layers are Conv1D modules whose weight is stored (in, out), the
// transpose of nn.Linear's (out, in). c_attn is fused q|k|v exactly as ours.
// Llama (modeling_llama.py): model.embed_tokens, model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
// post_attention_layernorm, mlp.{gate,up,down}_proj}, model.norm, lm_head. Our fused c_attn is q|k|v concatenated along
// the output dimension, our c_fc is gate|up (the first half goes through SiLU). HF's checkpoint conversion already
// permuted q/k rows for the "rotate half" RoPE layout (apply_rotary_pos_emb with rotate_half), which is the layout
// GptAttention.ApplyRotary uses, so q_proj and k_proj load unchanged.

using System.Globalization;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Interchange;

/// <summary>The Hugging Face architectures this library reads and writes.</summary>
internal enum HuggingFaceArchitecture
{
    Gpt2,
    Llama,
}

/// <summary>Maps configurations and tensors between our layout and Hugging Face's.</summary>
internal static class HuggingFaceLayout
{
    internal const string Gpt2ClassName = "GPT2LMHeadModel";
    internal const string LlamaClassName = "LlamaForCausalLM";

    // ---------------------------------------------------------------- config.json → GptConfig

    /// <summary>Reads config.json into our configuration (vocabulary padding 1: the embedding has exactly vocab_size rows).</summary>
    internal static (GptConfig Config, HuggingFaceArchitecture Architecture) ReadConfig(string path)
    {
        JsonObject json;
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"The config file '{path}' does not hold a JSON object.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"The config file '{path}' is not valid JSON ({e.Message}).", e);
        }

        string? architecture = json["architectures"] is JsonArray { Count: > 0 } a ? a[0]?.GetValue<string>() : null;
        string? modelType = Get<string>(json, "model_type", path);
        if (architecture == Gpt2ClassName || (architecture is null && modelType == "gpt2"))
            return (ReadGpt2(json, path), HuggingFaceArchitecture.Gpt2);
        if (architecture == LlamaClassName || (architecture is null && modelType == "llama"))
            return (ReadLlama(json, path), HuggingFaceArchitecture.Llama);
        throw new NotSupportedException(
            $"The config file '{path}' describes architecture '{architecture ?? "(none)"}' (model_type '{modelType ?? "(none)"}'); supported are {Gpt2ClassName} (model_type 'gpt2') and {LlamaClassName} (model_type 'llama').");
    }

    private static GptConfig ReadGpt2(JsonObject json, string path)
    {
        string activation = Get<string>(json, "activation_function", path) ?? "gelu_new";
        // gelu_new, gelu_pytorch_tanh: GPT-2's tanh approximation; gelu: the exact GELU (nanoGPT's nn.GELU()).
        GeluApproximation gelu = activation switch
        {
            "gelu_new" or "gelu_pytorch_tanh" => GeluApproximation.Tanh,
            "gelu" => GeluApproximation.None,
            _ => throw Unsupported(path, "activation_function", activation, "\"gelu_new\" (GELU, tanh approximation), as GPT-2, or \"gelu\" (exact GELU)"),
        };
        if (Get<bool?>(json, "scale_attn_by_inverse_layer_idx", path) == true)
            throw Unsupported(path, "scale_attn_by_inverse_layer_idx", "true", "false");
        if (Get<bool?>(json, "scale_attn_weights", path) == false)
            throw Unsupported(path, "scale_attn_weights", "false", "true");
        int embedding = Required<int>(json, "n_embd", path);
        return new GptConfig
        {
            Style = GptStyle.Gpt2,
            VocabularySize = Required<int>(json, "vocab_size", path),
            VocabularyPaddingMultiple = 1,
            ContextLength = Required<int>(json, "n_positions", path),
            LayerCount = Required<int>(json, "n_layer", path),
            HeadCount = Required<int>(json, "n_head", path),
            EmbeddingSize = embedding,
            MlpHiddenSize = Get<int?>(json, "n_inner", path),
            Bias = true,
            NormEpsilon = Get<double?>(json, "layer_norm_epsilon", path) ?? 1e-5,
            Dropout = Get<double?>(json, "resid_pdrop", path) ?? 0.1,
            TiedEmbeddings = Get<bool?>(json, "tie_word_embeddings", path) ?? true,
            GeluApproximation = gelu,
        };
    }

    private static GptConfig ReadLlama(JsonObject json, string path)
    {
        string activation = Get<string>(json, "hidden_act", path) ?? "silu";
        if (activation != "silu")
            throw Unsupported(path, "hidden_act", activation, "\"silu\" (SwiGLU)");
        if (json["rope_scaling"] is JsonObject scaling && scaling["rope_type"]?.GetValue<string>() is { } ropeType && ropeType != "default")
            throw Unsupported(path, "rope_scaling.rope_type", ropeType, "null or \"default\" (plain RoPE)");
        if (json["rope_scaling"] is JsonObject scaling2 && scaling2["type"]?.GetValue<string>() is { } type && type != "default")
            throw Unsupported(path, "rope_scaling.type", type, "null or \"default\" (plain RoPE)");
        bool attentionBias = Get<bool?>(json, "attention_bias", path) ?? false;
        bool mlpBias = Get<bool?>(json, "mlp_bias", path) ?? false;
        if (attentionBias != mlpBias)
            throw Unsupported(path, "mlp_bias", mlpBias ? "true" : "false", $"the same as attention_bias ({(attentionBias ? "true" : "false")}): GptConfig.Bias covers both");
        int hidden = Required<int>(json, "hidden_size", path);
        int heads = Required<int>(json, "num_attention_heads", path);
        if (Get<int?>(json, "head_dim", path) is int headDim && heads > 0 && headDim != hidden / heads)
            throw Unsupported(path, "head_dim", headDim.ToString(CultureInfo.InvariantCulture), $"hidden_size / num_attention_heads ({hidden / Math.Max(heads, 1)})");
        return new GptConfig
        {
            Style = GptStyle.Modern,
            VocabularySize = Required<int>(json, "vocab_size", path),
            VocabularyPaddingMultiple = 1,
            ContextLength = Required<int>(json, "max_position_embeddings", path),
            LayerCount = Required<int>(json, "num_hidden_layers", path),
            HeadCount = heads,
            KeyValueHeadCount = Get<int?>(json, "num_key_value_heads", path) is int kv && kv != heads ? kv : null,
            EmbeddingSize = hidden,
            MlpHiddenSize = Required<int>(json, "intermediate_size", path),
            Bias = attentionBias,
            NormEpsilon = Get<double?>(json, "rms_norm_eps", path) ?? 1e-6,
            RopeTheta = Get<double?>(json, "rope_theta", path) ?? 10000,
            Dropout = Get<double?>(json, "attention_dropout", path) ?? 0,
            TiedEmbeddings = Get<bool?>(json, "tie_word_embeddings", path) ?? false,
        };
    }

    private static T Required<T>(JsonObject json, string name, string path) =>
        Get<T>(json, name, path) ?? throw new InvalidDataException($"The config file '{path}' lacks \"{name}\", which the architecture needs.");

    private static T? Get<T>(JsonObject json, string name, string path)
    {
        var node = json[name];
        if (node is null)
            return default;
        try
        {
            return node.GetValue<T>();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"The config file '{path}' has \"{name}\": {node.ToJsonString()}; expected a {typeof(T).Name.Replace("Nullable`1", Nullable.GetUnderlyingType(typeof(T))?.Name ?? "")} value.", e);
        }
    }

    private static NotSupportedException Unsupported(string path, string field, string value, string accepted) =>
        new($"The config file '{path}' has \"{field}\": {value}; this library supports {accepted}.");

    // ---------------------------------------------------------------- GptConfig → config.json

    /// <summary>The config.json that transformers' <c>AutoConfig</c> reads back to an equivalent model.</summary>
    internal static JsonObject WriteConfig(GptConfig config, int? bosId, int? eosId)
    {
        int vocabulary = config.ResolvedVocabularySize;
        if (config.Style == GptStyle.Gpt2)
        {
            if (config.ResolvedKeyValueHeadCount != config.HeadCount)
                throw new NotSupportedException($"GptConfig.KeyValueHeadCount is {config.KeyValueHeadCount}; {Gpt2ClassName} has no grouped-query attention, so a GPT-2-style model exports with KeyValueHeadCount null (or equal to HeadCount, {config.HeadCount}) only.");
            return new JsonObject
            {
                ["architectures"] = new JsonArray(Gpt2ClassName),
                ["model_type"] = "gpt2",
                ["vocab_size"] = vocabulary,
                ["n_positions"] = config.ContextLength,
                ["n_ctx"] = config.ContextLength,
                ["n_embd"] = config.EmbeddingSize,
                ["n_layer"] = config.LayerCount,
                ["n_head"] = config.HeadCount,
                ["n_inner"] = config.MlpHiddenSize,   // null: 4·n_embd, our default too
                ["activation_function"] = config.GeluApproximation == GeluApproximation.Tanh ? "gelu_new" : "gelu",
                ["layer_norm_epsilon"] = config.NormEpsilon,
                ["resid_pdrop"] = config.Dropout,
                ["embd_pdrop"] = config.Dropout,
                ["attn_pdrop"] = config.Dropout,
                ["initializer_range"] = 0.02,
                ["scale_attn_weights"] = true,
                ["tie_word_embeddings"] = config.TiedEmbeddings,
                ["bos_token_id"] = bosId,
                ["eos_token_id"] = eosId,
                ["torch_dtype"] = "float32",
            };
        }

        return new JsonObject
        {
            ["architectures"] = new JsonArray(LlamaClassName),
            ["model_type"] = "llama",
            ["vocab_size"] = vocabulary,
            ["max_position_embeddings"] = config.ContextLength,
            ["hidden_size"] = config.EmbeddingSize,
            ["intermediate_size"] = config.IntermediateSize,
            ["num_hidden_layers"] = config.LayerCount,
            ["num_attention_heads"] = config.HeadCount,
            ["num_key_value_heads"] = config.ResolvedKeyValueHeadCount,
            ["head_dim"] = config.HeadSize,
            ["hidden_act"] = "silu",
            ["rms_norm_eps"] = config.NormEpsilon,
            ["rope_theta"] = config.RopeTheta,
            ["rope_scaling"] = null,
            ["attention_bias"] = config.UseBias,
            ["mlp_bias"] = config.UseBias,
            ["attention_dropout"] = config.Dropout,
            ["initializer_range"] = 0.02,
            ["tie_word_embeddings"] = config.TiedEmbeddings,
            ["bos_token_id"] = bosId,
            ["eos_token_id"] = eosId,
            ["torch_dtype"] = "float32",
        };
    }

    // ---------------------------------------------------------------- tensors

    /// <summary>Names a tensor may carry that are buffers, not weights (written by older transformers versions).</summary>
    private static bool IsIgnorableBuffer(string name, HuggingFaceArchitecture architecture) => architecture == HuggingFaceArchitecture.Gpt2
        ? name.EndsWith(".attn.bias", StringComparison.Ordinal) || name.EndsWith(".attn.masked_bias", StringComparison.Ordinal)
        : name.EndsWith(".self_attn.rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>The Hugging Face tensors of a model with <paramref name="config"/>: name → shape, in the order written.</summary>
    internal static List<(string Name, long[] Shape)> ExpectedTensors(GptConfig config, HuggingFaceArchitecture architecture)
    {
        long v = config.ResolvedVocabularySize, c = config.EmbeddingSize, h = config.IntermediateSize;
        long kv = (long)config.ResolvedKeyValueHeadCount * config.HeadSize;
        var list = new List<(string, long[])>();
        if (architecture == HuggingFaceArchitecture.Gpt2)
        {
            list.Add(("transformer.wte.weight", [v, c]));
            list.Add(("transformer.wpe.weight", [config.ContextLength, c]));
            for (int i = 0; i < config.LayerCount; i++)
            {
                string p = $"transformer.h.{i}.";
                list.Add((p + "ln_1.weight", [c]));
                list.Add((p + "ln_1.bias", [c]));
                list.Add((p + "attn.c_attn.weight", [c, 3 * c]));
                list.Add((p + "attn.c_attn.bias", [3 * c]));
                list.Add((p + "attn.c_proj.weight", [c, c]));
                list.Add((p + "attn.c_proj.bias", [c]));
                list.Add((p + "ln_2.weight", [c]));
                list.Add((p + "ln_2.bias", [c]));
                list.Add((p + "mlp.c_fc.weight", [c, h]));
                list.Add((p + "mlp.c_fc.bias", [h]));
                list.Add((p + "mlp.c_proj.weight", [h, c]));
                list.Add((p + "mlp.c_proj.bias", [c]));
            }

            list.Add(("transformer.ln_f.weight", [c]));
            list.Add(("transformer.ln_f.bias", [c]));
        }
        else
        {
            bool bias = config.UseBias;
            list.Add(("model.embed_tokens.weight", [v, c]));
            for (int i = 0; i < config.LayerCount; i++)
            {
                string p = $"model.layers.{i}.";
                list.Add((p + "input_layernorm.weight", [c]));
                foreach (var (name, rows) in new[] { ("q_proj", c), ("k_proj", kv), ("v_proj", kv) })
                {
                    list.Add((p + $"self_attn.{name}.weight", [rows, c]));
                    if (bias)
                        list.Add((p + $"self_attn.{name}.bias", [rows]));
                }

                list.Add((p + "self_attn.o_proj.weight", [c, c]));
                if (bias)
                    list.Add((p + "self_attn.o_proj.bias", [c]));
                list.Add((p + "post_attention_layernorm.weight", [c]));
                list.Add((p + "mlp.gate_proj.weight", [h, c]));
                list.Add((p + "mlp.up_proj.weight", [h, c]));
                list.Add((p + "mlp.down_proj.weight", [c, h]));
                if (bias)
                {
                    list.Add((p + "mlp.gate_proj.bias", [h]));
                    list.Add((p + "mlp.up_proj.bias", [h]));
                    list.Add((p + "mlp.down_proj.bias", [c]));
                }
            }

            list.Add(("model.norm.weight", [c]));
        }

        if (!config.TiedEmbeddings)
            list.Add(("lm_head.weight", [v, c]));
        return list;
    }

    /// <summary>
    /// Checks <paramref name="tensors"/> against the tensors <paramref name="config"/> needs (every one present with its
    /// shape, none unknown) and converts them to our state dict. The result's tensors belong to the current dispose scope.
    /// </summary>
    internal static Dictionary<string, Tensor> ToOurs(GptConfig config, HuggingFaceArchitecture architecture, IReadOnlyDictionary<string, Tensor> tensors,
        IReadOnlyDictionary<string, string> fileOf, string folder)
    {
        var expected = ExpectedTensors(config, architecture);
        var expectedNames = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        string FileOf(string name) => fileOf.TryGetValue(name, out var f) ? f : folder;

        var missing = expected.Where(e => !tensors.ContainsKey(e.Name)).Select(e => e.Name).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidDataException(
                $"The checkpoint in '{folder}' lacks {missing.Count} tensor(s) that its config.json needs: {string.Join(", ", missing.Take(8))}{(missing.Count > 8 ? ", …" : "")}.");
        }

        string headName = architecture == HuggingFaceArchitecture.Gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
        var extra = tensors.Keys.Where(n => !expectedNames.Contains(n) && !IsIgnorableBuffer(n, architecture)).ToList();
        if (config.TiedEmbeddings && extra.Remove("lm_head.weight") && !tensors["lm_head.weight"].allclose(tensors[headName], 0, 0))
        {
            throw new InvalidDataException(
                $"Tensor 'lm_head.weight' in '{FileOf("lm_head.weight")}' differs from '{headName}', but config.json has tie_word_embeddings = true (a tied head is the embedding itself).");
        }

        if (extra.Count > 0)
        {
            throw new InvalidDataException(
                $"The checkpoint in '{folder}' has {extra.Count} tensor(s) that a {(architecture == HuggingFaceArchitecture.Gpt2 ? Gpt2ClassName : LlamaClassName)} with its config.json does not have: {string.Join(", ", extra.Take(8))}{(extra.Count > 8 ? ", …" : "")}.");
        }

        foreach (var (name, shape) in expected)
        {
            var actual = tensors[name].shape;
            if (!actual.SequenceEqual(shape))
            {
                throw new InvalidDataException(
                    $"Tensor '{name}' in '{FileOf(name)}' has shape [{string.Join(", ", actual)}]; config.json implies [{string.Join(", ", shape)}].");
            }
        }

        Tensor T(string name) => tensors[name];
        Tensor Conv1D(string name) => tensors[name].t();       // (in, out) → nn.Linear's (out, in)
        Tensor PadRows(Tensor t) => t.shape[0] == config.PaddedVocabularySize
            ? t
            : cat([t, zeros(config.PaddedVocabularySize - t.shape[0], t.shape[1])], 0);
        var ours = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (architecture == HuggingFaceArchitecture.Gpt2)
        {
            ours["wte.weight"] = PadRows(T("transformer.wte.weight"));
            ours["wpe.weight"] = T("transformer.wpe.weight");
            for (int i = 0; i < config.LayerCount; i++)
            {
                string hf = $"transformer.h.{i}.", me = $"h.{i}.";
                foreach (string norm in new[] { "ln_1", "ln_2" })
                {
                    ours[me + norm + ".weight"] = T(hf + norm + ".weight");
                    ours[me + norm + ".bias"] = T(hf + norm + ".bias");
                }

                foreach (string linear in new[] { "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj" })
                {
                    ours[me + linear + ".weight"] = Conv1D(hf + linear + ".weight");
                    ours[me + linear + ".bias"] = T(hf + linear + ".bias");
                }
            }

            ours["ln_f.weight"] = T("transformer.ln_f.weight");
            ours["ln_f.bias"] = T("transformer.ln_f.bias");
        }
        else
        {
            ours["wte.weight"] = PadRows(T("model.embed_tokens.weight"));
            for (int i = 0; i < config.LayerCount; i++)
            {
                string hf = $"model.layers.{i}.", me = $"h.{i}.";
                ours[me + "ln_1.weight"] = T(hf + "input_layernorm.weight");
                ours[me + "ln_2.weight"] = T(hf + "post_attention_layernorm.weight");
                ours[me + "attn.c_attn.weight"] = cat([T(hf + "self_attn.q_proj.weight"), T(hf + "self_attn.k_proj.weight"), T(hf + "self_attn.v_proj.weight")], 0);
                ours[me + "attn.c_proj.weight"] = T(hf + "self_attn.o_proj.weight");
                ours[me + "mlp.c_fc.weight"] = cat([T(hf + "mlp.gate_proj.weight"), T(hf + "mlp.up_proj.weight")], 0);
                ours[me + "mlp.c_proj.weight"] = T(hf + "mlp.down_proj.weight");
                if (config.UseBias)
                {
                    ours[me + "attn.c_attn.bias"] = cat([T(hf + "self_attn.q_proj.bias"), T(hf + "self_attn.k_proj.bias"), T(hf + "self_attn.v_proj.bias")], 0);
                    ours[me + "attn.c_proj.bias"] = T(hf + "self_attn.o_proj.bias");
                    ours[me + "mlp.c_fc.bias"] = cat([T(hf + "mlp.gate_proj.bias"), T(hf + "mlp.up_proj.bias")], 0);
                    ours[me + "mlp.c_proj.bias"] = T(hf + "mlp.down_proj.bias");
                    // RMSNorm has no bias; our norms carry an unused one when Bias is set: zero.
                    ours[me + "ln_1.bias"] = zeros(config.EmbeddingSize);
                    ours[me + "ln_2.bias"] = zeros(config.EmbeddingSize);
                }
            }

            ours["ln_f.weight"] = T("model.norm.weight");
            if (config.UseBias)
                ours["ln_f.bias"] = zeros(config.EmbeddingSize);
        }

        if (!config.TiedEmbeddings)
            ours["lm_head.weight"] = PadRows(T("lm_head.weight"));
        return ours;
    }

    /// <summary>Converts our model's weights to Hugging Face tensors (contiguous fp32, in the current dispose scope).</summary>
    internal static Dictionary<string, Tensor> ToHuggingFace(GptModel model, HuggingFaceArchitecture architecture)
    {
        var config = model.Config;
        var state = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(ScalarType.Float32, CPU));
        long v = config.ResolvedVocabularySize, c = config.EmbeddingSize, h = config.IntermediateSize;
        long kv = (long)config.ResolvedKeyValueHeadCount * config.HeadSize;
        Tensor S(string name) => state[name];
        Tensor Bias(string name, long size) => state.TryGetValue(name, out var b) ? b : zeros(size);   // GPT-2 always has biases
        var hf = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        if (architecture == HuggingFaceArchitecture.Gpt2)
        {
            hf["transformer.wte.weight"] = S("wte.weight").narrow(0, 0, v);
            hf["transformer.wpe.weight"] = S("wpe.weight");
            for (int i = 0; i < config.LayerCount; i++)
            {
                string p = $"transformer.h.{i}.", me = $"h.{i}.";
                foreach (string norm in new[] { "ln_1", "ln_2" })
                {
                    hf[p + norm + ".weight"] = S(me + norm + ".weight");
                    hf[p + norm + ".bias"] = Bias(me + norm + ".bias", c);
                }

                foreach (var (linear, outSize) in new[] { ("attn.c_attn", 3 * c), ("attn.c_proj", c), ("mlp.c_fc", h), ("mlp.c_proj", c) })
                {
                    hf[p + linear + ".weight"] = S(me + linear + ".weight").t();
                    hf[p + linear + ".bias"] = Bias(me + linear + ".bias", outSize);
                }
            }

            hf["transformer.ln_f.weight"] = S("ln_f.weight");
            hf["transformer.ln_f.bias"] = Bias("ln_f.bias", c);
        }
        else
        {
            hf["model.embed_tokens.weight"] = S("wte.weight").narrow(0, 0, v);
            for (int i = 0; i < config.LayerCount; i++)
            {
                string p = $"model.layers.{i}.", me = $"h.{i}.";
                hf[p + "input_layernorm.weight"] = S(me + "ln_1.weight");
                var qkv = S(me + "attn.c_attn.weight").split([c, kv, kv], 0);
                hf[p + "self_attn.q_proj.weight"] = qkv[0];
                hf[p + "self_attn.k_proj.weight"] = qkv[1];
                hf[p + "self_attn.v_proj.weight"] = qkv[2];
                hf[p + "self_attn.o_proj.weight"] = S(me + "attn.c_proj.weight");
                hf[p + "post_attention_layernorm.weight"] = S(me + "ln_2.weight");
                var gateUp = S(me + "mlp.c_fc.weight").split([h, h], 0);
                hf[p + "mlp.gate_proj.weight"] = gateUp[0];
                hf[p + "mlp.up_proj.weight"] = gateUp[1];
                hf[p + "mlp.down_proj.weight"] = S(me + "mlp.c_proj.weight");
                if (config.UseBias)
                {
                    var qkvBias = S(me + "attn.c_attn.bias").split([c, kv, kv], 0);
                    hf[p + "self_attn.q_proj.bias"] = qkvBias[0];
                    hf[p + "self_attn.k_proj.bias"] = qkvBias[1];
                    hf[p + "self_attn.v_proj.bias"] = qkvBias[2];
                    hf[p + "self_attn.o_proj.bias"] = S(me + "attn.c_proj.bias");
                    var gateUpBias = S(me + "mlp.c_fc.bias").split([h, h], 0);
                    hf[p + "mlp.gate_proj.bias"] = gateUpBias[0];
                    hf[p + "mlp.up_proj.bias"] = gateUpBias[1];
                    hf[p + "mlp.down_proj.bias"] = S(me + "mlp.c_proj.bias");
                }
            }

            hf["model.norm.weight"] = S("ln_f.weight");
        }

        if (!config.TiedEmbeddings)
            hf["lm_head.weight"] = S("lm_head.weight").narrow(0, 0, v);
        return hf.ToDictionary(kv => kv.Key, kv => kv.Value.contiguous(), StringComparer.Ordinal);
    }
}
