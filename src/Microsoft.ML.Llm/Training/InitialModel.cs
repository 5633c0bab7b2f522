using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm;

/// <summary>
/// The weights fine-tuning starts from (<see cref="CausalLmTrainerOptions.InitialModel"/>): a loaded
/// <see cref="CausalLmTransformer"/>, an ML.NET model zip holding one, or a Hugging Face checkpoint folder. Assign any of the
/// three directly: <c>options.InitialModel = transformer;</c> or <c>options.InitialModel = "gpt2-folder";</c>.
/// </summary>
public sealed class InitialModel
{
    private readonly CausalLmTransformer? _transformer;
    private readonly string? _path;

    private InitialModel(CausalLmTransformer? transformer, string? path)
    {
        _transformer = transformer;
        _path = path;
    }

    /// <summary>Starts from a loaded model (its weights are copied; the model itself is not changed).</summary>
    public static InitialModel FromTransformer(CausalLmTransformer transformer)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return new(transformer, null);
    }

    /// <summary>Starts from a model zip (a file saved by <c>mlContext.Model.Save</c>) or a Hugging Face folder (holding config.json).</summary>
    public static InitialModel FromPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return new(null, path);
    }

    /// <summary>Starts from a loaded model.</summary>
    public static implicit operator InitialModel(CausalLmTransformer transformer) => FromTransformer(transformer);

    /// <summary>Starts from a model zip or a Hugging Face folder.</summary>
    public static implicit operator InitialModel(string path) => FromPath(path);

    /// <summary>The model zip or Hugging Face folder, or null for a loaded model.</summary>
    internal string? Path => _path;

    /// <summary>What the trainer's messages call this source.</summary>
    public override string ToString() => _path is null ? "the given CausalLmTransformer" : $"'{_path}'";

    /// <summary>Loads the model and tokenizer; <c>Owned</c> is true when the caller must dispose the model.</summary>
    internal (GptModel Model, LmTokenizer? Tokenizer, bool Owned) Load()
    {
        if (_transformer is not null)
            return (_transformer.Model, _transformer.Tokenizer, false);
        string path = _path!;
        if (Directory.Exists(path))
        {
            var model = HuggingFaceCheckpoint.LoadModel(path);
            var tokenizer = HuggingFaceCheckpoint.LoadTokenizerIfPresent(path, model);
            return (model, tokenizer, true);
        }

        if (!File.Exists(path))
        {
            throw new FileNotFoundException(
                $"CausalLmTrainerOptions.InitialModel is '{path}', which does not exist; expected a model zip file or a Hugging Face checkpoint folder.", path);
        }

        var loaded = new MLContext(seed: 0).Model.Load(path, out _);
        var lm = loaded as CausalLmTransformer
            ?? (loaded as IEnumerable<ITransformer>)?.OfType<CausalLmTransformer>().FirstOrDefault()
            ?? throw new ArgumentException($"CausalLmTrainerOptions.InitialModel is '{path}', a model zip without a CausalLmTransformer; expected one saved from a pipeline ending in mlContext.Llm().Trainers.CausalLm(...).", "InitialModel");
        return (lm.Model, lm.Tokenizer, true);
    }
}
