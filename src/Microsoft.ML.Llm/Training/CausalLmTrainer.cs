using Microsoft.ML.Llm.Internal;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Trains a GPT-style causal language model on blocks of tokens, inside <see cref="Fit"/>, with TorchSharp.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// | Estimator characteristic | Value |
/// | -- | -- |
/// | Machine learning task | Causal language modeling (next-token prediction) |
/// | Is normalization required? | No |
/// | Is caching required? | No (the token blocks are read once into memory) |
/// | Required NuGet in addition to Microsoft.ML | Microsoft.ML.Llm, TorchSharp, and a native backend: TorchSharp-cpu or TorchSharp-cuda-linux |
/// | Input column | <see cref="CausalLmTrainerOptions.TokensColumnName"/>: vector of Int32 token ids, context + 1 per row |
/// | Output columns | `LogLikelihood` (Single: mean log-likelihood per predicted token), `Perplexity` (Single) |
///
/// The loop is nanoGPT's: AdamW with decoupled weight decay on ≥2-D weights only, warmup then a decaying learning rate,
/// gradient accumulation, clipping by global norm. It adds what nanoGPT leaves to the user: validation with early stopping
/// and best-weight restore, atomic checkpoints with exact resume (same loss curve as an uninterrupted run on CPU),
/// progress reports, cancellation at step boundaries, a metrics history, CSV and TensorBoard logs.
/// Under <c>mpirun -np N</c> it trains data-parallel over MPI: N replicas, rank-strided data, gradients averaged
/// (<see cref="CausalLmTrainerOptions.Distributed"/>, <see cref="DistributedOptions"/>).
/// The device follows ML.NET's rule: <see cref="MLContext.GpuDeviceId"/> selects a CUDA device; when CUDA is not
/// available training falls back to the CPU if <see cref="MLContext.FallbackToCpu"/> is true, else it fails.
/// ]]></format>
/// </remarks>
public sealed class CausalLmTrainer : IEstimator<CausalLmTransformer>
{
    private readonly IHostEnvironment _env;
    private readonly CausalLmTrainerOptions _options;

    internal CausalLmTrainer(IHostEnvironment env, CausalLmTrainerOptions options)
    {
        _env = env ?? throw new ArgumentNullException(nameof(env));
        _options = options ?? throw new ArgumentNullException(nameof(options));
        ValidateOptions(options);
    }

    /// <summary>The options this trainer was created with (read by the sweep, which fits a copy per trial).</summary>
    internal CausalLmTrainerOptions Options => _options;

    /// <summary>A trainer in the same environment with other options (a sweep trial's copy).</summary>
    internal CausalLmTrainer WithOptions(CausalLmTrainerOptions options) => new(_env, options);

    /// <summary>Checks the column and adds <c>LogLikelihood</c> and <c>Perplexity</c>.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        if (!inputSchema.TryFindColumn(_options.TokensColumnName, out var col))
            throw SchemaChecks.MissingColumn(nameof(inputSchema), _options.TokensColumnName);
        if (col.Kind == SchemaShape.Column.VectorKind.Scalar || col.ItemType is not NumberDataViewType)
            throw SchemaChecks.Mismatch(nameof(inputSchema), _options.TokensColumnName, "Vector<Int32>", SchemaChecks.Describe(col));
        var columns = inputSchema.ToDictionary(c => c.Name);
        foreach (var name in new[] { CausalLmTransformer.LogLikelihoodColumnName, CausalLmTransformer.PerplexityColumnName })
            columns[name] = ModelPersistence.SchemaColumn(name, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single, false);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }

    /// <summary>Trains the model. Every bad input is reported before the first step.</summary>
    public CausalLmTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        ValidateOptions(_options);
        var host = _env.Register(nameof(CausalLmTrainer));
        using var ch = host.Start("Training");
        var inputs = ReadInputs(input, out bool ownsInitial);
        using var ownedInitial = ownsInitial ? inputs.InitialWeights : null;
        int seed = _options.Seed ?? HostAccess.Seed(_env) ?? 0;
        using var run = new TrainingRun(host, ch, _options, inputs, SelectDevice(ch), seed);
        while (run.StopReason() is null)
        {
            run.ThrowIfCancelled();
            run.Step();
            run.EndStep();
        }

        return run.Finish(_env);
    }

    /// <summary>Reads the data and resolves the tokenizer and the model configuration, checking them against each other.</summary>
    private TrainingInputs ReadInputs(IDataView input, out bool ownsInitial)
    {
        var o = _options;
        var columns = TokenColumns.Resolve(input.Schema, o.TokensColumnName, o.LossMaskColumnName, o.DocumentIdsColumnName, o.UseAnnotatedColumns, o.UseDocumentMasking);
        var train = TokenBlocks.Read(input, o.TokensColumnName, columns.DocumentIds, columns.LossMask, "training data");
        LmTokenizer? tokenizer = o.Tokenizer;
        if (tokenizer is null && input.Schema.GetColumnOrNull(o.TokensColumnName) is { } tc && tc.TryGetTokenizer(out var annotated))
            tokenizer = annotated;
        ownsInitial = false;
        GptModel? initial = null;
        if (o.InitialModel is { } initialModel)
        {
            if (o.Model is not null)
                throw new ArgumentException($"Options 'Model' and 'InitialModel' are both set; fine-tuning takes the architecture of InitialModel ({initialModel}), so leave Model null.", nameof(CausalLmTrainerOptions.Model));
            (initial, var initialTokenizer, ownsInitial) = initialModel.Load();
            if (tokenizer is not null && initialTokenizer is not null && tokenizer.VocabularySize != initialTokenizer.VocabularySize)
            {
                throw new ArgumentException(
                    $"The data's tokenizer has {tokenizer.VocabularySize} tokens but the tokenizer of InitialModel {initialModel} has {initialTokenizer.VocabularySize}; tokenize the data with the initial model's tokenizer.",
                    nameof(CausalLmTrainerOptions.InitialModel));
            }

            tokenizer ??= initialTokenizer;
            if (tokenizer is not null && tokenizer.VocabularySize > initial.VocabularySize)
            {
                throw new ArgumentException(
                    $"The tokenizer has {tokenizer.VocabularySize} tokens but InitialModel {initialModel} has a vocabulary of {initial.VocabularySize}.",
                    nameof(CausalLmTrainerOptions.InitialModel));
            }
        }
        var val = o.ValidationSet is null ? null
            : TokenBlocks.Read(o.ValidationSet, o.TokensColumnName, columns.DocumentIds, columns.LossMask, "validation data", train.BlockLength);
        var config = initial?.Config ?? ResolveConfig(o.Model, tokenizer, train);
        if (train.ContextLength > config.ContextLength)
        {
            throw new ArgumentOutOfRangeException(initial is null ? nameof(CausalLmTrainerOptions.Model) : nameof(CausalLmTrainerOptions.InitialModel), train.ContextLength,
                $"The data's blocks have {train.BlockLength} tokens (context {train.ContextLength}), longer than the model's maximum context " +
                $"GptConfig.ContextLength = {config.ContextLength}. Pack with ContextLength ≤ {config.ContextLength} or raise GptConfig.ContextLength.");
        }

        train.CheckVocabulary(config.ResolvedVocabularySize, "training data", o.TokensColumnName);
        val?.CheckVocabulary(config.ResolvedVocabularySize, "validation data", o.TokensColumnName);
        if (o.Lora is { } lora)
        {
            LoraTargets.Resolve(config, lora.TargetModules);     // a target that matches no layer fails before step 1
            if (lora.SaveMode == LoraSaveMode.Adapters && o.InitialModel?.Path is null)
            {
                throw new ArgumentException(
                    "LoraOptions.SaveMode is Adapters, which saves the adapters with the path of their base model, but InitialModel is " +
                    (o.InitialModel is null ? "null (a random start)" : "a loaded model") + "; set InitialModel to a model zip or Hugging Face folder path, or use SaveMode Merged.",
                    nameof(CausalLmTrainerOptions.Lora));
            }

            if (lora.SaveMode == LoraSaveMode.Adapters && initial?.Lora is not null)
            {
                throw new ArgumentException(
                    $"LoraOptions.SaveMode is Adapters, but InitialModel {o.InitialModel} has LoRA adapters itself, so new adapters would have no plain base file to name; save it merged first (LoraSaveMode.Merged) and start from that zip, or use SaveMode Merged.",
                    nameof(CausalLmTrainerOptions.Lora));
            }
        }

        return new TrainingInputs(train, val, tokenizer, config, initial, columns.DocumentMasking, o.InitialModel?.Path);
    }

    /// <summary>The requested configuration (ShakespeareChar when none) with its vocabulary size resolved: the
    /// configuration's own, else the tokenizer's, else the largest token id in the data + 1.</summary>
    private GptConfig ResolveConfig(GptConfig? requested, LmTokenizer? tokenizer, TokenBlocks train)
    {
        int vocab = requested?.VocabularySize ?? tokenizer?.VocabularySize ?? train.MaxTokenId + 1;
        var config = requested is null ? GptConfig.ShakespeareChar(vocab) with { ContextLength = Math.Max(64, train.ContextLength) }
            : requested with { VocabularySize = vocab };
        config.Validate();
        return config;
    }

    private Device SelectDevice(IChannel ch)
    {
        int? gpu = HostAccess.GpuDeviceId(_env);
        if (gpu is null)
            return CPU;
        if (torch.cuda.is_available())
            return ModelInputs.Cuda(gpu.Value, torch.cuda.device_count());
        if (HostAccess.FallbackToCpu(_env))
        {
            HostAccess.Warning(ch, $"MLContext.GpuDeviceId is {gpu} but CUDA is not available to TorchSharp; training on the CPU (MLContext.FallbackToCpu is true).");
            return CPU;
        }
        throw new InvalidOperationException(
            $"MLContext.GpuDeviceId is {gpu} but CUDA is not available to TorchSharp, and MLContext.FallbackToCpu is false. " +
            "Reference TorchSharp-cuda-linux (or TorchSharp-cuda-windows) instead of TorchSharp-cpu, or set FallbackToCpu = true.");
    }

    /// <summary>Checks every numeric option; messages name the option, the value and what is accepted.</summary>
    internal static void ValidateOptions(CausalLmTrainerOptions o)
    {
        static void Positive(string name, double value)
        {
            if (!(value > 0) || double.IsInfinity(value))
                throw new ArgumentOutOfRangeException(name, value, $"Option '{name}' must be a positive finite number; got {value.ToString(CultureInfo.InvariantCulture)}.");
        }
        static void NonNegative(string name, double value)
        {
            if (!(value >= 0) || double.IsInfinity(value))
                throw new ArgumentOutOfRangeException(name, value, $"Option '{name}' must be a finite number ≥ 0; got {value.ToString(CultureInfo.InvariantCulture)}.");
        }
        static void InOpenUnit(string name, double value)
        {
            if (!(value >= 0 && value < 1))
                throw new ArgumentOutOfRangeException(name, value, $"Option '{name}' must be in [0, 1); got {value.ToString(CultureInfo.InvariantCulture)}.");
        }
        static void PositiveInt(string name, long value)
        {
            if (value <= 0)
                throw new ArgumentOutOfRangeException(name, value, $"Option '{name}' must be a positive integer; got {value}.");
        }
        if (string.IsNullOrWhiteSpace(o.TokensColumnName))
            throw new ArgumentException($"Option 'TokensColumnName' must name a column; got '{o.TokensColumnName}'.", nameof(o.TokensColumnName));
        PositiveInt(nameof(o.BatchSize), o.BatchSize);
        PositiveInt(nameof(o.GradientAccumulationSteps), o.GradientAccumulationSteps);
        if (o.Precision is { } precision && !Enum.IsDefined(precision))
            throw new ArgumentOutOfRangeException(nameof(o.Precision), precision, $"Option 'Precision' is {(int)precision}; expected {GptModel.PrecisionNames}, or null to choose per device.");
        Positive(nameof(o.InitialLossScale), o.InitialLossScale);
        Positive(nameof(o.LearningRate), o.LearningRate);
        if (o.MinLearningRate is { } minLr)
        {
            NonNegative(nameof(o.MinLearningRate), minLr);
            if (minLr > o.LearningRate)
            {
                throw new ArgumentOutOfRangeException(nameof(o.MinLearningRate), minLr,
                    $"Option 'MinLearningRate' ({minLr.ToString(CultureInfo.InvariantCulture)}) must not exceed 'LearningRate' ({o.LearningRate.ToString(CultureInfo.InvariantCulture)}); leave it unset for LearningRate / 10.");
            }
        }
        if (o.WarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(o.WarmupSteps), o.WarmupSteps, $"Option 'WarmupSteps' must be ≥ 0; got {o.WarmupSteps}.");
        if (o.DecaySteps is { } ds)
            PositiveInt(nameof(o.DecaySteps), ds);
        if (!(o.DecayFraction > 0 && o.DecayFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(o.DecayFraction), o.DecayFraction, $"Option 'DecayFraction' must be in (0, 1]; got {o.DecayFraction.ToString(CultureInfo.InvariantCulture)}.");
        InOpenUnit(nameof(o.Beta1), o.Beta1);
        InOpenUnit(nameof(o.Beta2), o.Beta2);
        Positive(nameof(o.Epsilon), o.Epsilon);
        NonNegative(nameof(o.WeightDecay), o.WeightDecay);
        NonNegative(nameof(o.GradientClipNorm), o.GradientClipNorm);
        if (o.MaxSteps is { } s)
            PositiveInt(nameof(o.MaxSteps), s);
        if (o.MaxTokens is { } t)
            PositiveInt(nameof(o.MaxTokens), t);
        if (o.MaxEpochs is { } e)
            Positive(nameof(o.MaxEpochs), e);
        if (o.TimeBudget is { } tb && tb <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(o.TimeBudget), tb, $"Option 'TimeBudget' must be positive; got {tb}.");
        PositiveInt(nameof(o.EvaluationInterval), o.EvaluationInterval);
        if (o.EvaluateAtTokens is { } evaluateAt && evaluateAt.Any(t => t <= 0))
        {
            long bad = evaluateAt.First(t => t <= 0);
            throw new ArgumentOutOfRangeException(nameof(o.EvaluateAtTokens), bad, $"Option 'EvaluateAtTokens' must hold positive token counts; got {bad}.");
        }
        if (o.EvaluateAtTimes is { } evaluateAtTimes && evaluateAtTimes.Any(t => t <= TimeSpan.Zero))
        {
            var bad = evaluateAtTimes.First(t => t <= TimeSpan.Zero);
            throw new ArgumentOutOfRangeException(nameof(o.EvaluateAtTimes), bad, $"Option 'EvaluateAtTimes' must hold positive times; got {bad}.");
        }
        if (o.EvaluationBatches is { } eb)
            PositiveInt(nameof(o.EvaluationBatches), eb);
        if (o.EarlyStoppingPatience is { } p)
            PositiveInt(nameof(o.EarlyStoppingPatience), p);
        NonNegative(nameof(o.EarlyStoppingMinDelta), o.EarlyStoppingMinDelta);
        PositiveInt(nameof(o.CheckpointInterval), o.CheckpointInterval);
        PositiveInt(nameof(o.KeepCheckpoints), o.KeepCheckpoints);
        PositiveInt(nameof(o.LogInterval), o.LogInterval);
        if (o.NumberOfThreads is { } n)
            PositiveInt(nameof(o.NumberOfThreads), n);
        if (o.PeakFlops is { } pf)
            Positive(nameof(o.PeakFlops), pf);
        if (o.Distributed is { } d)
        {
            if (!Enum.IsDefined(d.Mode))
                throw new ArgumentOutOfRangeException(nameof(o.Distributed), d.Mode, $"Option 'Distributed.Mode' is {(int)d.Mode}; expected Auto, None or Mpi.");
            if (d.GlobalBatchSize is { } gb)
                PositiveInt("Distributed.GlobalBatchSize", gb);
            Positive("Distributed.BucketSizeMegabytes", d.BucketSizeMegabytes);
            if (d.CollectiveTimeout <= TimeSpan.Zero)
                throw new ArgumentOutOfRangeException(nameof(o.Distributed), d.CollectiveTimeout, $"Option 'Distributed.CollectiveTimeout' must be positive; got {d.CollectiveTimeout}.");
        }
        if (o.EarlyStoppingPatience is not null && o.ValidationSet is null)
            throw new ArgumentException("Option 'EarlyStoppingPatience' is set but 'ValidationSet' is null; early stopping needs validation data.", nameof(o.EarlyStoppingPatience));
        o.Lora?.Validate();
    }
}
