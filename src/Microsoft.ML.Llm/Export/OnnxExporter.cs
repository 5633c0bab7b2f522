// ONNX export of a GptModel, both styles, as a graph of standard ONNX operators (opset 17+), read top to bottom as
// Gpt.cs: embeddings → blocks (norm → attention → residual, norm → MLP → residual) → final norm → output layer.
// TorchSharp has no ONNX exporter (no tracer), so the graph is written by hand from the model's configuration, and its
// weights are the model's state dict. The tests check the logits against the TorchSharp model with ONNX Runtime.
//
// Shape letters as in Gpt.cs: B batch, T new tokens, P past tokens, S = P + T, C channels, nh heads, nkv key/value
// heads, r = nh / nkv, hs head size, V vocabulary (unpadded: the padded rows are never exported).

using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Microsoft.ML.Llm.Internal;
using Onnx;
using static System.FormattableString;
using static Microsoft.ML.Llm.OnnxGraphBuilder;
using static TorchSharp.torch;
using DataType = Onnx.TensorProto.Types.DataType;

namespace Microsoft.ML.Llm;

/// <summary>
/// Writes a <see cref="GptModel"/> as an ONNX model that ONNX Runtime (and ML.NET's <c>ApplyOnnxModel</c>) runs:
/// <c>input_ids</c>, <c>attention_mask</c>, <c>position_ids</c> (and optionally the past keys and values) → <c>logits</c>
/// (and the present keys and values), with dynamic batch and sequence axes.
/// </summary>
/// <remarks>
/// <para>Inputs (int64): <c>input_ids</c> (batch_size, sequence_length); <c>attention_mask</c> (batch_size,
/// total_sequence_length), 1 for real tokens and 0 for padding, over the past and the new tokens; <c>position_ids</c>
/// (batch_size, sequence_length), each token's position (with left padding: the cumulative sum of the mask minus 1, as
/// Hugging Face computes them). With <see cref="OnnxExportOptions.WithPastKeyValues"/>: float
/// <c>past_key_values.N.key</c> and <c>.value</c> (batch_size, nkv, past_sequence_length, head size) per layer N.</para>
/// <para>Outputs (float): <c>logits</c> (batch_size, sequence_length, vocabulary size), and with past inputs
/// <c>present.N.key</c> / <c>.value</c> (batch_size, nkv, total_sequence_length, head size).</para>
/// <para>Files: <c>model.onnx</c> (+ <c>model.onnx.data</c> when the weights pass 2 GB), the tokenizer's Hugging Face
/// files, and <c>genai_config.json</c> for ONNX Runtime GenAI. The folder is written under a temporary name and renamed.</para>
/// </remarks>
public static class OnnxExporter
{
    /// <summary>The model's file name in the export folder.</summary>
    public const string ModelFileName = "model.onnx";

    /// <summary>The external data file's name (weights above 2 GB).</summary>
    public const string ExternalDataFileName = "model.onnx.data";

    /// <summary>The ONNX Runtime GenAI configuration's file name.</summary>
    public const string GenAIConfigFileName = "genai_config.json";

    /// <summary>Exports <paramref name="model"/> (and <paramref name="tokenizer"/>) to the folder <paramref name="folder"/>.</summary>
    /// <param name="model">The model; both <see cref="GptStyle"/>s, any size.</param>
    /// <param name="tokenizer">The tokenizer written beside the model, or null.</param>
    /// <param name="folder">A folder that does not exist yet, or is empty.</param>
    /// <param name="options">The export options; null for the defaults.</param>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range (named).</exception>
    /// <exception cref="IOException"><paramref name="folder"/> exists and is not empty, or is a file, or cannot be written.</exception>
    /// <exception cref="UnauthorizedAccessException"><paramref name="folder"/> is in a place this process may not write.</exception>
    public static void Export(GptModel model, LmTokenizer? tokenizer, string folder, OnnxExportOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        options ??= new OnnxExportOptions();
        options.Validate();
        string target = AtomicFolder.CheckTarget(folder, "ONNX export");
        if (!options.IncludeTokenizer)
            tokenizer = null;
        try
        {
            tokenizer?.CheckHuggingFaceExportable();
        }
        catch (NotSupportedException e)
        {
            throw new NotSupportedException($"The model's tokenizer cannot be written beside the ONNX model: {e.Message} Set OnnxExportOptions.IncludeTokenizer = false to export the model alone (nothing was written).", e);
        }

        AtomicFolder.Write(target, "ONNX export", temp =>
        {
            ModelProto proto;
            using (var scope = NewDisposeScope())
                proto = BuildModel(model, options);
            WriteModel(proto, temp, options.ExternalDataThreshold);
            tokenizer?.SaveHuggingFace(temp, model.Config.ContextLength);
            if (options.WithPastKeyValues && options.WriteGenAIConfig)
            {
                var genai = GenAIConfig(model.Config, tokenizer);
                File.WriteAllText(Path.Combine(temp, GenAIConfigFileName), genai.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            }

        });
    }

    /// <summary>ONNX Runtime's contrib operator domain (MatMulNBits).</summary>
    private const string MicrosoftDomain = "com.microsoft";

    /// <summary>The IR version that goes with an opset (onnx/helper.py's VERSION_TABLE).</summary>
    private static long IrVersion(int opset) => opset switch
    {
        <= 18 => 8,
        <= 20 => 9,
        _ => 10,
    };

    /// <summary>Builds the whole model in memory (initializers inline).</summary>
    internal static ModelProto BuildModel(GptModel model, OnnxExportOptions options)
    {
        var graph = new GraphBuilder(model, options).Build();
        var proto = new ModelProto
        {
            IrVersion = IrVersion(options.Opset),
            ProducerName = "Microsoft.ML.Llm",
            ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "",
            Graph = graph,
        };
        proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = options.Opset });
        if (options.Quantization == OnnxWeightQuantization.Int8MatMulNBits)
            proto.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
        var config = model.Config;
        foreach (var (key, value) in new (string, string)[]
        {
            ("style", config.Style.ToString()),
            ("context_length", config.ContextLength.ToString(CultureInfo.InvariantCulture)),
            ("quantization", options.Quantization.ToString()),
        })
        {
            proto.MetadataProps.Add(new StringStringEntryProto { Key = key, Value = value });
        }

        return proto;
    }

    /// <summary>
    /// Writes <paramref name="proto"/> as model.onnx in <paramref name="folder"/>; when its weights pass
    /// <paramref name="threshold"/> bytes, every initializer of 1 KiB or more goes to model.onnx.data (ONNX external data:
    /// location, offset and length per tensor, offsets aligned to 4 KiB), since one protobuf message cannot pass 2 GiB.
    /// </summary>
    private static void WriteModel(ModelProto proto, string folder, long threshold)
    {
        long total = proto.Graph.Initializer.Sum(t => (long)t.RawData.Length);
        if (total > threshold)
        {
            using var data = new FileStream(Path.Combine(folder, ExternalDataFileName), FileMode.CreateNew, FileAccess.Write);
            foreach (var tensor in proto.Graph.Initializer)
            {
                if (tensor.RawData.Length < 1024)
                    continue;
                long offset = (data.Position + 4095) / 4096 * 4096;
                data.SetLength(offset);
                data.Position = offset;
                tensor.RawData.WriteTo(data);
                tensor.DataLocation = TensorProto.Types.DataLocation.External;
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = ExternalDataFileName });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
                tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = tensor.RawData.Length.ToString(CultureInfo.InvariantCulture) });
                tensor.RawData = ByteString.Empty;
            }
        }

        using var file = new FileStream(Path.Combine(folder, ModelFileName), FileMode.CreateNew, FileAccess.Write);
        proto.WriteTo(file);
    }

    /// <summary>
    /// genai_config.json as ONNX Runtime GenAI reads it (model.decoder: file, sizes, input and output names; search:
    /// greedy defaults). Both styles declare type "llama" (see below).
    /// </summary>
    internal static JsonObject GenAIConfig(GptConfig config, LmTokenizer? tokenizer)
    {
        // GenAI requires an end-of-sequence id inside the vocabulary; without a tokenizer's end-of-text token the last
        // id stands in (generation through GenAI then stops when the model emits it).
        int eos = tokenizer?.EndOfTextId ?? config.ResolvedVocabularySize - 1;
        return new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = eos,
                ["context_length"] = config.ContextLength,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = ModelFileName,
                    ["head_size"] = config.HeadSize,
                    ["hidden_size"] = config.EmbeddingSize,
                    ["inputs"] = new JsonObject
                    {
                        ["input_ids"] = "input_ids",
                        ["attention_mask"] = "attention_mask",
                        ["position_ids"] = "position_ids",
                        ["past_key_names"] = "past_key_values.%d.key",
                        ["past_value_names"] = "past_key_values.%d.value",
                    },
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = "present.%d.key",
                        ["present_value_names"] = "present.%d.value",
                    },
                    ["num_attention_heads"] = config.HeadCount,
                    ["num_hidden_layers"] = config.LayerCount,
                    ["num_key_value_heads"] = config.ResolvedKeyValueHeadCount,
                },
                ["eos_token_id"] = eos,
                ["pad_token_id"] = eos,
                // GenAI's "type" picks its input/output convention, not the architecture: "llama" is its plain
                // decoder-only loop with separate past key/value tensors, which both styles export; its "gpt2" type
                // expects the legacy combined past_N tensors (2, B, nh, S, hs) instead.
                ["type"] = "llama",
                ["vocab_size"] = config.ResolvedVocabularySize,
            },
            ["search"] = new JsonObject
            {
                ["diversity_penalty"] = 0.0,
                ["do_sample"] = false,
                ["early_stopping"] = true,
                ["length_penalty"] = 1.0,
                ["max_length"] = config.ContextLength,
                ["min_length"] = 0,
                ["no_repeat_ngram_size"] = 0,
                ["num_beams"] = 1,
                ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = false,
                ["repetition_penalty"] = 1.0,
                ["temperature"] = 1.0,
                ["top_k"] = 1,
                ["top_p"] = 1.0,
            },
        };
    }

    /// <summary>
    /// Per-channel symmetric int8 quantization of a (out, in) weight: scale[o] = max |W[o, :]| / 127 (1 for an all-zero
    /// row), q = round(W / scale) in [−127, 127]. Returns qᵀ (in, out), the layout MatMulInteger's B takes, and the scales.
    /// </summary>
    internal static (sbyte[] TransposedValues, float[] Scales) QuantizeRows(Tensor weight)
    {
        using var scope = NewDisposeScope();
        var w = weight.detach().to(ScalarType.Float32, CPU);
        var scale = w.abs().amax([1]) / 127f;                                           // (out)
        scale = where(scale.gt(0), scale, ones_like(scale));
        var q = (w / scale.unsqueeze(1)).round().clamp(-127, 127).to(ScalarType.Int8);   // (out, in)
        return (q.t().contiguous().data<sbyte>().ToArray(), scale.contiguous().data<float>().ToArray());
    }

    /// <summary>
    /// Blockwise symmetric 8-bit quantization for MatMulNBits: each run of <paramref name="block"/> input weights of an
    /// output row gets scale max |w| / 127 (1 when all zero); codes are round(w / scale) + 128 (the kernel's default zero
    /// point) in [1, 255], laid out (out, in / block, block).
    /// </summary>
    internal static (byte[] Codes, float[] Scales) QuantizeBlocks(Tensor weight, int block)
    {
        using var scope = NewDisposeScope();
        var w = weight.detach().to(ScalarType.Float32, CPU);
        var blocks = w.reshape(w.shape[0], w.shape[1] / block, block);                       // (out, in/b, b)
        var scale = blocks.abs().amax([2]) / 127f;                                            // (out, in/b)
        scale = where(scale.gt(0), scale, ones_like(scale));
        var codes = ((blocks / scale.unsqueeze(2)).round().clamp(-127, 127) + 128).to(ScalarType.Byte);
        return (codes.contiguous().data<byte>().ToArray(), scale.contiguous().data<float>().ToArray());
    }

    private static float[] Floats(Tensor t) => t.detach().to(ScalarType.Float32, CPU).contiguous().data<float>().ToArray();

    /// <summary>Writes the graph of one model; one instance per export.</summary>
    private sealed class GraphBuilder
    {
        private readonly GptConfig _config;
        private readonly OnnxExportOptions _options;
        private readonly Dictionary<string, Tensor> _state;
        private readonly OnnxGraphBuilder _g = new();
        private readonly int _v, _c, _nh, _nkv, _hs;

        public GraphBuilder(GptModel model, OnnxExportOptions options)
        {
            _config = model.Config;
            _options = options;
            _state = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().to(ScalarType.Float32, CPU), StringComparer.Ordinal);
            _v = _config.ResolvedVocabularySize;
            _c = _config.EmbeddingSize;
            _nh = _config.HeadCount;
            _nkv = _config.ResolvedKeyValueHeadCount;
            _hs = _config.HeadSize;
        }

        private bool Int8 => _options.Quantization == OnnxWeightQuantization.Int8;

        private bool NBits => _options.Quantization == OnnxWeightQuantization.Int8MatMulNBits;

        private readonly HashSet<string> _used = new(StringComparer.Ordinal);

        /// <summary>The state-dict entry <paramref name="name"/>, or null when the model has none (no bias, tied head).</summary>
        private Tensor? Weight(string name)
        {
            _used.Add(name);
            return _state.TryGetValue(name, out var t) ? t : null;
        }

        private Tensor Required(string name) => Weight(name)
            ?? throw new InvalidOperationException($"The model has no weight '{name}', which its configuration implies; the ONNX exporter reads GptModel's own layout.");

        public GraphProto Build()
        {
            bool past = _options.WithPastKeyValues;
            string ids = _g.Input("input_ids", DataType.Int64, "batch_size", "sequence_length");
            string mask = _g.Input("attention_mask", DataType.Int64, "batch_size", "total_sequence_length");
            string positions = _g.Input("position_ids", DataType.Int64, "batch_size", "sequence_length");
            var pastKeys = new string[_config.LayerCount];
            var pastValues = new string[_config.LayerCount];
            if (past)
            {
                for (int i = 0; i < _config.LayerCount; i++)
                {
                    pastKeys[i] = _g.Input($"past_key_values.{i}.key", DataType.Float, "batch_size", _nkv, "past_sequence_length", _hs);
                    pastValues[i] = _g.Input($"past_key_values.{i}.value", DataType.Float, "batch_size", _nkv, "past_sequence_length", _hs);
                }
            }

            // The output layer's weight, (C, V) for MatMul; tied to the token embedding unless the model has lm_head.
            var wte = Required("wte.weight").narrow(0, 0, _v);                                // (V, C)
            var head = HeadWeight(Weight("lm_head.weight")?.narrow(0, 0, _v) ?? wte);

            // Token embeddings (B, T, C), + learned positions (GPT-2 style) or rotary angles (modern style).
            string x = _config.TiedEmbeddings ? EmbedFromHead(head, ids) : Embed(wte, ids);
            string? cos = null, sin = null;
            if (_config.Style == GptStyle.Gpt2)
            {
                string wpe = _g.Initializer("transformer.wpe.weight", Floats(Required("wpe.weight")), _config.ContextLength, _c);
                x = _g.Op("Add", [x, _g.Op("Gather", [wpe, positions])]);
            }
            else
            {
                (cos, sin) = RotaryAngles(positions);
            }

            string allowed = AttentionMask(ids, mask);
            for (int i = 0; i < _config.LayerCount; i++)
            {
                string p = $"h.{i}.";
                var (attention, presentKey, presentValue) = Attention(p, Norm(p + "ln_1", x), allowed, cos, sin,
                    past ? pastKeys[i] : null, past ? pastValues[i] : null);
                x = _g.Op("Add", [x, attention]);
                x = _g.Op("Add", [x, Mlp(p + "mlp", Norm(p + "ln_2", x))]);
                if (past)
                {
                    _g.Output(presentKey, $"present.{i}.key", DataType.Float, "batch_size", _nkv, "total_sequence_length", _hs);
                    _g.Output(presentValue, $"present.{i}.value", DataType.Float, "batch_size", _nkv, "total_sequence_length", _hs);
                }
            }

            x = Norm("ln_f", x);
            string logits = MatMul(x, head, bias: null);
            _g.Output(logits, "logits", DataType.Float, "batch_size", "sequence_length", _v);

            // A weight the graph did not read (a LoRA adapter, a layer this exporter does not know) would silently be
            // missing from the export: refuse instead.
            var unknown = _state.Keys.Where(k => !_used.Contains(k)).ToList();
            if (unknown.Count > 0)
            {
                throw new NotSupportedException(
                    $"The model has weights the ONNX exporter does not know: {string.Join(", ", unknown.Take(5))}{(unknown.Count > 5 ? ", ..." : "")}; merge adapters into the base weights before exporting.");
            }

            // Present outputs were declared layer by layer; ONNX Runtime GenAI and Optimum list logits first.
            var outputs = _g.Graph.Output.ToList();
            _g.Graph.Output.Clear();
            _g.Graph.Output.AddRange(outputs.OrderBy(o => o.Name == "logits" ? 0 : 1));
            return _g.Graph;
        }

        /// <summary>
        /// A linear layer's weight as stored: fp32 (in, out); int8 (in, out) with per-output-channel scales; or
        /// MatMulNBits' uint8 codes (out, in / block, block) with per-block scales (out · in / block).
        /// </summary>
        private sealed record LinearWeight(string Values, string? Scales, long In, long Out, bool Blockwise = false);

        private LinearWeight HeadWeight(Tensor weight) => StoreLinear("lm_head", weight);

        private LinearWeight StoreLinear(string name, Tensor weight)
        {
            long outSize = weight.shape[0], inSize = weight.shape[1];
            if (NBits)
            {
                int block = _options.BlockSize;
                if (inSize % block != 0)
                {
                    throw new ArgumentException(
                        Invariant($"OnnxExportOptions.BlockSize is {block}, but '{name}' has {inSize} input features, not a multiple of it; MatMulNBits quantizes whole blocks of the input axis. Choose a power of two from 16 that divides every layer's input size (EmbeddingSize {_c}, MLP hidden size {_config.IntermediateSize}), or Quantization = Int8."),
                        nameof(OnnxExportOptions.BlockSize));
                }

                var (codes, blockScales) = QuantizeBlocks(weight, block);
                return new(_g.Initializer(name + ".weight_quantized", codes, outSize, inSize / block, block),
                    _g.Initializer(name + ".weight_scale", blockScales, outSize * (inSize / block)), inSize, outSize, Blockwise: true);
            }

            if (!Int8)
                return new(_g.Initializer(name + ".weight", Floats(weight.t()), inSize, outSize), null, inSize, outSize);
            var (values, scales) = QuantizeRows(weight);
            return new(_g.Initializer(name + ".weight_quantized", values, inSize, outSize), _g.Initializer(name + ".weight_scale", scales, outSize), inSize, outSize);
        }

        /// <summary>y = x·W (+ b): MatMul in fp32, or DynamicQuantizeLinear → MatMulInteger → ·(x scale · W scales) in int8.</summary>
        private string MatMul(string x, LinearWeight w, Tensor? bias, string? biasName = null)
        {
            string y;
            if (w.Blockwise)
            {
                // ONNX Runtime's contrib MatMulNBits: 8-bit codes with the default zero point 128 (symmetric);
                // accuracy_level 4 lets the CPU kernel quantize the activations to int8 and accumulate in int32.
                y = _g.Ops("MatMulNBits", [x, w.Values, w.Scales!], 1, MicrosoftDomain, Attr("K", w.In), Attr("N", w.Out), Attr("bits", 8L),
                    Attr("block_size", (long)_options.BlockSize), Attr("accuracy_level", 4L))[0];
            }
            else if (w.Scales is null)
            {
                y = _g.Op("MatMul", [x, w.Values]);
            }
            else
            {
                var q = _g.Ops("DynamicQuantizeLinear", [x], 3);                              // uint8 x, scale, zero point
                var product = _g.Op("MatMulInteger", [q[0], w.Values, q[2]]);                 // int32 (..., out)
                var scale = _g.Op("Mul", [q[1], w.Scales]);                                  // (out)
                y = _g.Op("Mul", [_g.Op("Cast", [product], Attr("to", (long)DataType.Float)), scale]);
            }

            return bias is null ? y : _g.Op("Add", [y, _g.Initializer(biasName!, Floats(bias), bias.shape[0])]);
        }

        private string Linear(string name, string x)
        {
            var w = StoreLinear(name, Required(name + ".weight"));
            return MatMul(x, w, Weight(name + ".bias"), name + ".bias");
        }

        /// <summary>Token embeddings from the (C, V) output weight (tied): Gather along axis 1, then (B, T, C).</summary>
        private string EmbedFromHead(LinearWeight head, string ids)
        {
            if (head.Blockwise)
            {
                // Rows of the (V, C / block, block) codes, minus the zero point 128, times their blocks' scales.
                long blocks = _c / _options.BlockSize;
                string codes = _g.Op("Cast", [_g.Op("Gather", [head.Values, ids])], Attr("to", (long)DataType.Float));      // (B, T, C/b, b)
                string scales = _g.Op("Reshape", [head.Scales!, _g.Int64s(head.Out, blocks)]);                          // (V, C/b)
                string rowScales = _g.Op("Unsqueeze", [_g.Op("Gather", [scales, ids]), _g.Int64s(-1)]);                  // (B, T, C/b, 1)
                string values = _g.Op("Mul", [_g.Op("Sub", [codes, _g.FloatScalar(128f)]), rowScales]);
                return _g.Op("Reshape", [values, _g.Int64s(0, 0, _c)]);                                                  // (B, T, C)
            }

            string e = _g.Op("Transpose", [_g.Op("Gather", [head.Values, ids], Attr("axis", 1L))], Attr("perm", new long[] { 1, 2, 0 }));
            return Dequantize(e, head.Scales, ids);
        }

        /// <summary>Token embeddings from an untied (V, C) table.</summary>
        private string Embed(Tensor wte, string ids)
        {
            if (NBits)
                return EmbedFromHead(StoreLinear("transformer.wte", wte), ids);
            if (!Int8)
                return _g.Op("Gather", [_g.Initializer("transformer.wte.weight", Floats(wte), _v, _c), ids]);
            var (transposed, scales) = QuantizeRows(wte);                                     // (C, V) values, (V) scales
            var values = _g.Initializer("transformer.wte.weight_quantized", transposed, _c, _v);
            return EmbedFromHead(new LinearWeight(values, _g.Initializer("transformer.wte.weight_scale", scales, _v), _c, _v), ids);
        }

        private string Dequantize(string embedded, string? scales, string ids)
        {
            if (scales is null)
                return embedded;
            string rowScales = _g.Op("Unsqueeze", [_g.Op("Gather", [scales, ids]), _g.Int64s(-1)]);   // (B, T, 1)
            return _g.Op("Mul", [_g.Op("Cast", [embedded], Attr("to", (long)DataType.Float)), rowScales]);
        }

        /// <summary>
        /// (B, 1, T, S) bool (tiled r times along T for grouped-query attention): key s is visible to new token t when
        /// s ≤ P + t (causal, shifted by the past) and attention_mask[b, s] is 1.
        /// </summary>
        private string AttentionMask(string ids, string mask)
        {
            string one = _g.Int64Scalar(1);
            string total = _g.Op("Gather", [_g.Op("Shape", [mask]), one]);                      // S
            string length = _g.Op("Gather", [_g.Op("Shape", [ids]), one]);                      // T
            string pastLength = _g.Op("Sub", [total, length]);                                 // P
            string keys = _g.Op("Range", [_g.Int64Scalar(0), total, one]);                     // (S)
            string queries = _g.Op("Range", [pastLength, total, one]);                         // (T): P .. S − 1
            string causal = _g.Op("LessOrEqual", [_g.Op("Unsqueeze", [keys, _g.Int64s(0)]), _g.Op("Unsqueeze", [queries, _g.Int64s(1)])]);  // (T, S)
            string padding = _g.Op("Unsqueeze", [_g.Op("Cast", [mask], Attr("to", (long)DataType.Bool)), _g.Int64s(1, 2)]);               // (B, 1, 1, S)
            string allowed = _g.Op("And", [causal, padding]);                                  // (B, 1, T, S)
            int r = _nh / _nkv;
            return r == 1 ? allowed : _g.Op("Tile", [allowed, _g.Int64s(1, 1, r, 1)]);       // (B, 1, r·T, S)
        }

        /// <summary>RoPE's cos and sin, (B, 1, T, hs), from position_ids: the same fp32 inverse frequencies as Gpt.cs.</summary>
        private (string Cos, string Sin) RotaryAngles(string positions)
        {
            using var scope = NewDisposeScope();
            var exponents = arange(0, _hs, 2, dtype: ScalarType.Float32) / _hs;
            var inverse = (exponents * -Math.Log(_config.RopeTheta)).exp();                   // (hs/2), as GptModel.RotaryAngles
            string frequencies = _g.Initializer("rotary.inv_freq", Floats(inverse), _hs / 2);
            string p = _g.Op("Unsqueeze", [_g.Op("Cast", [positions], Attr("to", (long)DataType.Float)), _g.Int64s(-1)]);   // (B, T, 1)
            string half = _g.Op("Mul", [p, frequencies]);                                       // (B, T, hs/2)
            string angles = _g.Op("Concat", [half, half], Attr("axis", -1L));                  // (B, T, hs)
            string axis1 = _g.Int64s(1);
            return (_g.Op("Unsqueeze", [_g.Op("Cos", [angles]), axis1]), _g.Op("Unsqueeze", [_g.Op("Sin", [angles]), axis1]));
        }

        private string Rotate(string x, string cos, string sin)
        {
            var halves = _g.Ops("Split", [x, _g.Int64s(_hs / 2, _hs / 2)], 2, Attr("axis", -1L));     // 2 × (B, n, T, hs/2)
            string rotated = _g.Op("Concat", [_g.Op("Neg", [halves[1]]), halves[0]], Attr("axis", -1L));
            return _g.Op("Add", [_g.Op("Mul", [x, cos]), _g.Op("Mul", [rotated, sin])]);
        }

        /// <summary>LayerNorm (GPT-2 style) or RMSNorm (modern style) over the last axis.</summary>
        private string Norm(string name, string x)
        {
            string weight = _g.Initializer(name + ".weight", Floats(Required(name + ".weight")), _c);
            float epsilon = (float)_config.NormEpsilon;
            if (_config.Style == GptStyle.Gpt2)
            {
                var bias = Weight(name + ".bias");
                var inputs = bias is null ? new[] { x, weight } : [x, weight, _g.Initializer(name + ".bias", Floats(bias), _c)];
                return _g.Op("LayerNormalization", inputs, Attr("axis", -1L), Attr("epsilon", epsilon));
            }

            // x · rsqrt(mean(x²) + ε) · w; ReduceMean takes its axes as an attribute before opset 18, as an input from 18.
            string square = _g.Op("Mul", [x, x]);
            string meanSquare = _options.Opset < 18
                ? _g.Op("ReduceMean", [square], Attr("axes", new long[] { -1 }), Attr("keepdims", 1L))
                : _g.Op("ReduceMean", [square, _g.Int64s(-1)], Attr("keepdims", 1L));
            string inverseRms = _g.Op("Reciprocal", [_g.Op("Sqrt", [_g.Op("Add", [meanSquare, _g.FloatScalar(epsilon)])])]);
            return _g.Op("Mul", [_g.Op("Mul", [x, inverseRms]), weight]);
        }

        private (string Output, string PresentKey, string PresentValue) Attention(string p, string x, string allowed, string? cos, string? sin, string? pastKey, string? pastValue)
        {
            long kvSize = (long)_nkv * _hs;
            var qkv = _g.Ops("Split", [Linear(p + "attn.c_attn", x), _g.Int64s(_c, kvSize, kvSize)], 3, Attr("axis", 2L));
            long[] toHeads = [0, 2, 1, 3];
            string q = _g.Op("Transpose", [_g.Op("Reshape", [qkv[0], _g.Int64s(0, 0, _nh, _hs)])], Attr("perm", toHeads));    // (B, nh, T, hs)
            string k = _g.Op("Transpose", [_g.Op("Reshape", [qkv[1], _g.Int64s(0, 0, _nkv, _hs)])], Attr("perm", toHeads));   // (B, nkv, T, hs)
            string v = _g.Op("Transpose", [_g.Op("Reshape", [qkv[2], _g.Int64s(0, 0, _nkv, _hs)])], Attr("perm", toHeads));   // (B, nkv, T, hs)
            if (cos is not null && sin is not null)
            {
                q = Rotate(q, cos, sin);
                k = Rotate(k, cos, sin);
            }

            if (pastKey is not null && pastValue is not null)
            {
                k = _g.Op("Concat", [pastKey, k], Attr("axis", 2L));                          // (B, nkv, S, hs)
                v = _g.Op("Concat", [pastValue, v], Attr("axis", 2L));
            }

            // Grouped-query attention without copying keys: query heads g·r … g·r + r − 1 share key/value head g, so
            // (B, nh, T, hs) viewed as (B, nkv, r·T, hs) puts each group's queries beside its keys (the mask was tiled to match).
            string queries = _nh == _nkv ? q : _g.Op("Reshape", [q, _g.Int64s(0, _nkv, -1, _hs)]);
            string scores = _g.Op("Mul", [_g.Op("MatMul", [queries, _g.Op("Transpose", [k], Attr("perm", new long[] { 0, 1, 3, 2 }))]),
                _g.FloatScalar((float)(1.0 / Math.Sqrt(_hs)))]);                              // (B, nkv, r·T, S)
            scores = _g.Op("Where", [allowed, scores, _g.FloatScalar(float.MinValue)]);     // masked keys get no weight
            string y = _g.Op("MatMul", [_g.Op("Softmax", [scores], Attr("axis", -1L)), v]);  // (B, nkv, r·T, hs)
            if (_nh != _nkv)
                y = _g.Op("Reshape", [y, _g.Int64s(0, _nh, -1, _hs)]);                        // (B, nh, T, hs)
            y = _g.Op("Reshape", [_g.Op("Transpose", [y], Attr("perm", toHeads)), _g.Int64s(0, 0, _c)]);   // (B, T, C)
            return (Linear(p + "attn.c_proj", y), k, v);
        }

        private string Mlp(string p, string x)
        {
            string hidden = Linear(p + ".c_fc", x);
            if (_config.Style == GptStyle.Modern)
            {
                long h = _config.IntermediateSize;
                var gateAndUp = _g.Ops("Split", [hidden, _g.Int64s(h, h)], 2, Attr("axis", -1L));
                string gate = _g.Op("Mul", [gateAndUp[0], _g.Op("Sigmoid", [gateAndUp[0]])]);   // SiLU
                hidden = _g.Op("Mul", [gate, gateAndUp[1]]);
            }
            else if (_config.GeluApproximation == GeluApproximation.None)
            {
                // Exact GELU: 0.5·x·(1 + erf(x/√2)).
                string erf = _g.Op("Erf", [_g.Op("Mul", [hidden, _g.FloatScalar(1f / MathF.Sqrt(2f))])]);
                hidden = _g.Op("Mul", [_g.Op("Mul", [hidden, _g.FloatScalar(0.5f)]), _g.Op("Add", [erf, _g.FloatScalar(1f)])]);
            }
            else
            {
                // GELU, tanh approximation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
                string cube = _g.Op("Mul", [_g.Op("Mul", [hidden, hidden]), hidden]);
                string inner = _g.Op("Mul", [_g.Op("Add", [hidden, _g.Op("Mul", [cube, _g.FloatScalar(0.044715f)])]), _g.FloatScalar(MathF.Sqrt(2f / MathF.PI))]);
                string tanh = _g.Op("Tanh", [inner]);
                hidden = _g.Op("Mul", [_g.Op("Mul", [hidden, _g.FloatScalar(0.5f)]), _g.Op("Add", [tanh, _g.FloatScalar(1f)])]);
            }

            return Linear(p + ".c_proj", hidden);
        }
    }
}
