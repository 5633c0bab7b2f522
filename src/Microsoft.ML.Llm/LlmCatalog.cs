using Microsoft.ML.Llm;

namespace Microsoft.ML;

/// <summary>Entry point of the language-model components: <c>mlContext.Llm()</c> (as AutoML uses <c>mlContext.Auto()</c>).</summary>
public static class LlmMLContextExtensions
{
    /// <summary>Trainers, generation and evaluation for causal language models.</summary>
    public static LlmCatalog Llm(this MLContext mlContext)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        return new LlmCatalog(mlContext);
    }
}

/// <summary>Causal language-model trainers, generation and evaluation.</summary>
public sealed class LlmCatalog
{
    private readonly MLContext _context;

    internal LlmCatalog(MLContext context)
    {
        _context = context;
        Trainers = new LlmTrainers(context);
    }

    /// <summary>Language-model trainers.</summary>
    public LlmTrainers Trainers { get; }

    /// <summary>
    /// Cancels work running on this MLContext (ML.NET's own MLContext.CancelExecution, which ML.NET 5 keeps internal):
    /// a running <see cref="CausalLmTrainer"/> stops at the next step boundary, writes a checkpoint and throws
    /// <see cref="OperationCanceledException"/>. The context stays cancelled; create a new MLContext to train again.
    /// </summary>
    public void CancelExecution() => Llm.Internal.HostAccess.CancelExecution(_context);

    /// <summary>
    /// Loads a Hugging Face checkpoint folder (GPT2LMHeadModel or LlamaForCausalLM: config.json, model.safetensors or
    /// its shards, and the tokenizer files when present) as a <see cref="CausalLmTransformer"/> that scores, generates,
    /// fine-tunes (<see cref="CausalLmTrainerOptions.InitialModel"/>) and saves like a trained one.
    /// See <see cref="HuggingFaceCheckpoint"/> for what is read and checked.
    /// </summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <param name="tokensColumnName">The token-block column the transformer scores.</param>
    public CausalLmTransformer LoadHuggingFace(string folder, string tokensColumnName = CausalLmTrainerOptions.Defaults.TokensColumnName)
    {
        var model = HuggingFaceCheckpoint.LoadModel(folder);
        var tokenizer = HuggingFaceCheckpoint.LoadTokenizerIfPresent(folder, model);
        return new CausalLmTransformer(_context, model, tokenizer, tokensColumnName, []);
    }

    /// <summary>A generator over the <see cref="CausalLmTransformer"/> in <paramref name="model"/> (itself or the last one in a chain).</summary>
    public TextGenerator CreateGenerator(ITransformer model)
    {
        var lm = FindLanguageModel(model, out _);
        var tokenizer = lm.Tokenizer ?? throw new ArgumentException(
            "The model was trained without a tokenizer (bare token ids), so it cannot turn text into tokens. Train it after TokenizeForLm or set CausalLmTrainerOptions.Tokenizer.", nameof(model));
        return new TextGenerator(lm.Model, tokenizer);
    }

    /// <summary>
    /// Loss, perplexity and bits per byte of <paramref name="model"/> on <paramref name="data"/>. When the model is a
    /// chain, the data goes through the transforms before the language model first (tokenize, pack). The loss-mask and
    /// document-id columns PackTokens annotates on the token column are picked up, so padding and prompts are not scored
    /// and packed documents do not see each other (see <see cref="LanguageModelEvaluationOptions"/> to name or opt out).
    /// </summary>
    public LanguageModelMetrics Evaluate(ITransformer model, IDataView data, int batchSize = LanguageModelEvaluationOptions.Defaults.BatchSize)
    {
        if (batchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(batchSize), batchSize, $"Parameter 'batchSize' must be a positive integer; got {batchSize}.");
        return Evaluate(model, data, new LanguageModelEvaluationOptions { BatchSize = batchSize });
    }

    /// <summary>
    /// Loss, perplexity and bits per byte of <paramref name="model"/> on <paramref name="data"/>, with the columns and
    /// masking chosen by <paramref name="options"/>.
    /// </summary>
    public LanguageModelMetrics Evaluate(ITransformer model, IDataView data, LanguageModelEvaluationOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, $"LanguageModelEvaluationOptions.BatchSize must be a positive integer; got {options.BatchSize}.");
        var lm = FindLanguageModel(model, out var before);
        foreach (var t in before)
            data = t.Transform(data);
        var columns = TokenColumns.Resolve(data.Schema, lm.TokensColumnName, options.LossMaskColumnName, options.DocumentIdsColumnName,
            options.UseAnnotatedColumns, options.UseDocumentMasking);
        var blocks = TokenBlocks.Read(data, lm.TokensColumnName, columns.DocumentIds, columns.LossMask, "evaluation data");
        blocks.CheckVocabulary(lm.Config.ResolvedVocabularySize, "evaluation data", lm.TokensColumnName);
        return LanguageModelEvaluator.Evaluate(lm.Model, blocks, options.BatchSize, rows: null, lm.Tokenizer, columns.DocumentMasking);
    }

    /// <summary>
    /// A hyperparameter sweep over a whole pipeline, shaped like AutoML's <c>mlContext.Auto().CreateExperiment()</c>:
    /// set the data, the pipeline (<see cref="CreateSweepableEstimator"/>), a tuner and a budget, then
    /// <see cref="LlmExperiment.RunAsync"/>.
    /// </summary>
    public LlmExperiment CreateExperiment() => new(_context);

    /// <summary>
    /// A pipeline to sweep: <paramref name="factory"/> builds the whole pipeline (tokenizer, packing, trainer) from
    /// one parameter of <paramref name="searchSpace"/> (AutoML's <c>CreateSweepableEstimator</c>).
    /// </summary>
    public SweepableEstimator CreateSweepableEstimator(Func<MLContext, Llm.Sweeping.Parameter, IEstimator<ITransformer>> factory, Llm.Sweeping.SearchSpace searchSpace) =>
        new(factory, searchSpace);

    /// <summary>
    /// A sweep over the options class <typeparamref name="TOptions"/> (its ML.NET search-space attributes,
    /// <c>[Range]</c>/<c>[Choice]</c>): an <see cref="LlmExperiment"/> with the data and the pipeline set, the factory
    /// receiving each trial's options as a <typeparamref name="TOptions"/>. Set a tuner and a budget, then
    /// <see cref="LlmExperiment.RunAsync"/>.
    /// </summary>
    public LlmExperiment Sweep<TOptions>(IDataView train, IDataView? validation, Func<MLContext, TOptions, IEstimator<ITransformer>> factory)
        where TOptions : class, new()
    {
        ArgumentNullException.ThrowIfNull(factory);
        return CreateExperiment()
            .SetDataset(train, validation)
            .SetPipeline(new Llm.Sweeping.SearchSpace<TOptions>(), (ctx, p) => factory(ctx, p.AsType<TOptions>()));
    }

    private static CausalLmTransformer FindLanguageModel(ITransformer model, out List<ITransformer> before)
    {
        ArgumentNullException.ThrowIfNull(model);
        before = [];
        if (model is CausalLmTransformer direct)
            return direct;
        if (model is IEnumerable<ITransformer> chain)
        {
            foreach (var t in chain)
            {
                if (t is CausalLmTransformer lm)
                    return lm;
                before.Add(t);
            }
        }
        throw new ArgumentException($"The model ({model.GetType().Name}) contains no CausalLmTransformer; pass the model returned by a pipeline ending in mlContext.Llm().Trainers.CausalLm(...).", nameof(model));
    }
}

/// <summary>Language-model trainers: <c>mlContext.Llm().Trainers</c>.</summary>
public sealed class LlmTrainers
{
    private readonly IHostEnvironment _env;

    internal LlmTrainers(IHostEnvironment env) => _env = env;

    /// <summary>Trains a GPT on blocks of tokens with the given options.</summary>
    public CausalLmTrainer CausalLm(CausalLmTrainerOptions options) => new(_env, options);

    /// <summary>Trains a GPT on blocks of tokens; the remaining options keep their defaults.</summary>
    /// <param name="tokensColumnName">Column of token blocks (PackTokens output).</param>
    /// <param name="model">Architecture; null = <see cref="GptConfig.ShakespeareChar"/> sized to the tokenizer.</param>
    /// <param name="maxSteps">Optimizer steps.</param>
    /// <param name="batchSize">Blocks per step.</param>
    /// <param name="learningRate">Peak learning rate (cosine decay to a tenth of it: <see cref="CausalLmTrainerOptions.MinLearningRate"/>'s default).</param>
    /// <param name="validationSet">Held-out data evaluated during training.</param>
    public CausalLmTrainer CausalLm(string tokensColumnName = CausalLmTrainerOptions.Defaults.TokensColumnName, GptConfig? model = null,
        long? maxSteps = null, int batchSize = CausalLmTrainerOptions.Defaults.BatchSize,
        double learningRate = CausalLmTrainerOptions.Defaults.LearningRate, IDataView? validationSet = null)
        => new(_env, new CausalLmTrainerOptions
        {
            TokensColumnName = tokensColumnName,
            Model = model,
            MaxSteps = maxSteps,
            BatchSize = batchSize,
            LearningRate = learningRate,
            ValidationSet = validationSet,
        });
}
