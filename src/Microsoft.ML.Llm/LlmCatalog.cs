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

    /// <summary>
    /// Loads LoRA adapters saved in Hugging Face PEFT's layout (<c>adapter_config.json</c> + <c>adapter_model.safetensors</c>,
    /// as <c>PeftModel.save_pretrained</c> or <see cref="CausalLmTransformer.SaveLoraAdapters"/> write them) onto a copy of
    /// <paramref name="baseModel"/>: a loaded model, a model zip or a Hugging Face folder. The result carries the adapters
    /// unmerged (<see cref="GptModel.MergeLora"/> merges them); saving it writes them merged, or, for a base given as a path,
    /// alone (<see cref="CausalLmTransformer.LoraSaveMode"/>).
    /// </summary>
    /// <param name="baseModel">The model the adapters were trained on.</param>
    /// <param name="adapterFolder">The PEFT adapter folder.</param>
    /// <param name="tokensColumnName">The token-block column the transformer scores.</param>
    public CausalLmTransformer LoadLoraAdapter(InitialModel baseModel, string adapterFolder, string tokensColumnName = CausalLmTrainerOptions.Defaults.TokensColumnName)
    {
        ArgumentNullException.ThrowIfNull(baseModel);
        return CausalLmTransformer.LoadPeftAdapter(_context, baseModel, adapterFolder, tokensColumnName);
    }

    /// <summary>
    /// A generator over the <see cref="CausalLmTransformer"/> in <paramref name="model"/> (itself or the first one in a
    /// chain). Given the whole pipeline, prompts pass through the text transforms that fed the tokenizer's input column
    /// (<c>NormalizeForLm</c>, <c>RedactPii</c>) before they are tokenized, as the training text did.
    /// </summary>
    public TextGenerator CreateGenerator(ITransformer model)
    {
        var lm = FindLanguageModel(model, out var before);
        var tokenizer = lm.Tokenizer ?? throw new ArgumentException(
            "The model was trained without a tokenizer (bare token ids), so it cannot turn text into tokens. Train it after TokenizeForLm or set CausalLmTrainerOptions.Tokenizer.", nameof(model));
        return new TextGenerator(lm.Model, tokenizer, PromptTransforms(before));
    }

    /// <summary>
    /// Generates a completion column from a prompt column with the language model in <paramref name="model"/> (the
    /// <see cref="CausalLmTransformer"/> itself, or the fitted pipeline that contains it, whose text transforms the prompts
    /// then pass through before tokenization). The estimator needs no training; its transformer is row-to-row, generates
    /// <paramref name="batchSize"/> rows per batch when a cursor reads it, and saves into the model zip with its options.
    /// Appended to that fitted pipeline (<c>pipeline.Append(generator)</c>), the chain generates over prompts given in the
    /// pipeline's text column, in its <c>Transform</c> and in a <c>PredictionEngine</c> (see <see cref="TextGenerationTransformer"/>).
    /// </summary>
    /// <param name="outputColumnName">The completion column added (Text; a vector of Text when <see cref="GenerationOptions.NumReturnSequences"/> &gt; 1).</param>
    /// <param name="inputColumnName">The prompt column (Text).</param>
    /// <param name="model">The language model, or a fitted pipeline containing it.</param>
    /// <param name="options">How to generate; null: <see cref="GenerationOptions"/>' defaults.</param>
    /// <param name="batchSize">Rows generated together.</param>
    public TextGenerationEstimator GenerateText(string outputColumnName, string inputColumnName, ITransformer model,
        GenerationOptions? options = null, int batchSize = TextGenerationOptions.Defaults.BatchSize)
        => GenerateText(model, new TextGenerationOptions
        {
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName,
            Generation = options ?? new GenerationOptions(),
            BatchSize = batchSize,
        });

    /// <summary>Generates a completion column from a prompt column, as chosen by <paramref name="options"/> (see the other overload).</summary>
    public TextGenerationEstimator GenerateText(ITransformer model, TextGenerationOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var lm = FindLanguageModel(model, out var before);
        return new TextGenerationEstimator(lm, PromptTransforms(before), options);
    }

    /// <summary>
    /// The text transforms on the path of the text that the (last) tokenizer before the language model read, in pipeline
    /// order: walking back from the tokenizer's input column, each <c>NormalizeForLm</c> or <c>RedactPii</c> that wrote the
    /// column, then its own input column, and so on. Filters and language detection do not change the text and are skipped.
    /// </summary>
    internal static IReadOnlyList<Llm.Data.Internal.AppendColumnsTransformerBase> PromptTransforms(IReadOnlyList<ITransformer> before)
    {
        int at = before.Count - 1;
        while (at >= 0 && before[at] is not Llm.Data.LmTokenizerTransformer)
        {
            at--;
        }

        if (at < 0)
        {
            return [];
        }

        string column = ((Llm.Data.LmTokenizerTransformer)before[at]).InputColumnName;
        var found = new List<Llm.Data.Internal.AppendColumnsTransformerBase>();
        for (int i = at - 1; i >= 0; i--)
        {
            (string Output, string Input)? columns = before[i] switch
            {
                Llm.Data.TextNormalizerTransformer n => (n.OutputColumnName, n.InputColumnName),
                Llm.Data.PiiRedactorTransformer r => (r.OutputColumnName, r.InputColumnName),
                _ => null,
            };
            if (columns is { } c && c.Output == column)
            {
                found.Insert(0, (Llm.Data.Internal.AppendColumnsTransformerBase)before[i]);
                column = c.Input;
            }
        }

        return found;
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

    /// <summary>
    /// Exports the language model of <paramref name="model"/> (a <see cref="CausalLmTransformer"/> or a chain ending in
    /// one) to an ONNX folder that ONNX Runtime, ONNX Runtime GenAI and <c>ApplyOnnxModel</c> run; see <see cref="OnnxExporter"/>.
    /// </summary>
    /// <param name="model">The trained model or the pipeline holding it.</param>
    /// <param name="folder">A folder that does not exist yet (or is empty).</param>
    /// <param name="withPastKeyValues">Whether to add past/present key-value inputs and outputs for incremental decoding.</param>
    /// <param name="quantization">How the linear layers' weights are stored (fp32 or int8).</param>
    public void ExportToOnnx(ITransformer model, string folder, bool withPastKeyValues = OnnxExportOptions.Defaults.WithPastKeyValues,
        OnnxWeightQuantization quantization = OnnxExportOptions.Defaults.Quantization) =>
        ExportToOnnx(model, folder, new OnnxExportOptions { WithPastKeyValues = withPastKeyValues, Quantization = quantization });

    /// <summary>Exports the language model of <paramref name="model"/> to an ONNX folder with the given options; see <see cref="OnnxExporter"/>.</summary>
    /// <param name="model">The trained model or the pipeline holding it.</param>
    /// <param name="folder">A folder that does not exist yet (or is empty).</param>
    /// <param name="options">Opset, past key/value inputs, int8 weights, tokenizer files.</param>
    public void ExportToOnnx(ITransformer model, string folder, OnnxExportOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        FindLanguageModel(model, out _).ExportToOnnx(folder, options);
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
