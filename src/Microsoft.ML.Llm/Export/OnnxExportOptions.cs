using static System.FormattableString;

namespace Microsoft.ML.Llm;

/// <summary>How the weights of the linear layers are stored in an exported ONNX model.</summary>
public enum OnnxWeightQuantization
{
    /// <summary>fp32 weights, fp32 matmuls: the logits equal the TorchSharp model's within rounding.</summary>
    None,

    /// <summary>
    /// Per-channel symmetric int8 weights (one fp32 scale per output channel, zero point 0) for every linear layer and
    /// the token embedding / output layer, with dynamic int8 quantization of the activations: standard ONNX
    /// <c>DynamicQuantizeLinear</c> → <c>MatMulInteger</c> → rescale, the graph ONNX Runtime's <c>quantize_dynamic</c>
    /// writes (and fuses into its int8 kernels on CPU). About 4× smaller weights; norms, biases and learned positions stay fp32.
    /// </summary>
    Int8,

    /// <summary>
    /// Blockwise symmetric 8-bit weights (one fp32 scale per <see cref="OnnxExportOptions.BlockSize"/> input weights of
    /// each output channel) in ONNX Runtime's contrib operator <c>com.microsoft.MatMulNBits</c> (bits 8, accuracy level 4:
    /// int8 activations, int32 accumulation on CPU). ONNX Runtime only: other runtimes lack the operator. Every linear
    /// layer's input size must be a multiple of the block size.
    /// </summary>
    Int8MatMulNBits,
}

/// <summary>Options of <see cref="CausalLmTransformer.ExportToOnnx(string, OnnxExportOptions?)"/>.</summary>
public sealed class OnnxExportOptions
{
    /// <summary>The default value of every option, written once.</summary>
    internal static class Defaults
    {
        public const int Opset = 17;
        public const bool WithPastKeyValues = true;
        public const OnnxWeightQuantization Quantization = OnnxWeightQuantization.None;
        public const bool IncludeTokenizer = true;
        public const bool WriteGenAIConfig = true;
        public const int BlockSize = 64;

        /// <summary>Protobuf messages are limited to 2 GiB; above this many bytes of weights they go to an external data file.</summary>
        public const long ExternalDataThreshold = 2L * 1024 * 1024 * 1024 - 64L * 1024 * 1024;
    }

    /// <summary>The lowest opset written: LayerNormalization entered the default domain in opset 17.</summary>
    public const int MinOpset = 17;

    /// <summary>The highest opset written; ONNX Runtime 1.20 and later run opsets 17 to 21 on CPU.</summary>
    public const int MaxOpset = 21;

    /// <summary>The ONNX opset of the default domain, from <see cref="MinOpset"/> to <see cref="MaxOpset"/>; 17 by default.</summary>
    public int Opset { get; set; } = Defaults.Opset;

    /// <summary>
    /// Whether the model takes the keys and values of earlier tokens (<c>past_key_values.N.key</c> / <c>.value</c>,
    /// (batch, kv heads, past, head size)) and returns them extended (<c>present.N.key</c> / <c>.value</c>), the names
    /// Hugging Face Optimum and ONNX Runtime GenAI use, for incremental decoding; true by default. A first pass feeds
    /// past tensors with 0 positions. False: <c>input_ids</c>, <c>attention_mask</c>, <c>position_ids</c> → <c>logits</c> only,
    /// the shape ML.NET's <c>ApplyOnnxModel</c> scores.
    /// </summary>
    public bool WithPastKeyValues { get; set; } = Defaults.WithPastKeyValues;

    /// <summary>How the linear layers' weights are stored; <see cref="OnnxWeightQuantization.None"/> (fp32) by default.</summary>
    public OnnxWeightQuantization Quantization { get; set; } = Defaults.Quantization;

    /// <summary>
    /// The block size of <see cref="OnnxWeightQuantization.Int8MatMulNBits"/>: a power of two from 16 (MatMulNBits' rule)
    /// that divides every linear layer's input size; 64 by default (one fp32 scale per 64 weights: 3.5-3.7× smaller than
    /// fp32, the target; 32 gives 3.3-3.5×). Smaller blocks are a little more accurate and larger.
    /// </summary>
    public int BlockSize { get; set; } = Defaults.BlockSize;

    /// <summary>Whether the tokenizer's Hugging Face files (tokenizer.json, tokenizer_config.json, ...) are written beside the model (when it has one).</summary>
    public bool IncludeTokenizer { get; set; } = Defaults.IncludeTokenizer;

    /// <summary>
    /// Whether <c>genai_config.json</c> for ONNX Runtime GenAI is written (needs <see cref="WithPastKeyValues"/>; skipped without it).
    /// </summary>
    public bool WriteGenAIConfig { get; set; } = Defaults.WriteGenAIConfig;

    /// <summary>Weights larger than this many bytes in all are written to <c>model.onnx.data</c> (ONNX external data); internal for tests.</summary>
    internal long ExternalDataThreshold { get; set; } = Defaults.ExternalDataThreshold;

    /// <summary>Throws, naming the option and the accepted values, when an option is out of range.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public void Validate()
    {
        if (Opset < MinOpset || Opset > MaxOpset)
        {
            throw new ArgumentOutOfRangeException(nameof(Opset), Opset,
                Invariant($"OnnxExportOptions.Opset is {Opset}; the exporter writes opsets {MinOpset} to {MaxOpset} (LayerNormalization needs 17; ONNX Runtime 1.20+ runs up to 21)."));
        }

        if (!Enum.IsDefined(Quantization))
        {
            throw new ArgumentOutOfRangeException(nameof(Quantization), Quantization,
                Invariant($"OnnxExportOptions.Quantization is {(int)Quantization}; expected {nameof(OnnxWeightQuantization.None)}, {nameof(OnnxWeightQuantization.Int8)} or {nameof(OnnxWeightQuantization.Int8MatMulNBits)}."));
        }

        if (BlockSize < 16 || (BlockSize & (BlockSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(BlockSize), BlockSize,
                Invariant($"OnnxExportOptions.BlockSize is {BlockSize}; MatMulNBits takes a power of two from 16 (16, 32, 64, 128, ...)."));
        }

        if (ExternalDataThreshold < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ExternalDataThreshold), ExternalDataThreshold,
                "OnnxExportOptions.ExternalDataThreshold must be 0 or more bytes.");
        }
    }
}
