using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using Microsoft.ML.Llm.Data.Internal;
using Microsoft.ML.Llm.Internal;
using Microsoft.ML.Runtime;
using TorchSharp;
using TorchSharp.Modules;
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
        var o = _options;
        ValidateOptions(o);
        var host = _env.Register(nameof(CausalLmTrainer));
        using var ch = host.Start("Training");

        // ---- data, tokenizer, model config: all checked before any training step ----
        var train = TokenBlocks.Read(input, o.TokensColumnName, o.DocumentIdsColumnName, o.LossMaskColumnName, "training data");
        LmTokenizer? tokenizer = o.Tokenizer;
        if (tokenizer is null && input.Schema.GetColumnOrNull(o.TokensColumnName) is { } tc && tc.TryGetTokenizer(out var annotated))
            tokenizer = annotated;
        var val = o.ValidationSet is null ? null
            : TokenBlocks.Read(o.ValidationSet, o.TokensColumnName, o.DocumentIdsColumnName, o.LossMaskColumnName, "validation data", train.BlockLength);
        var config = ResolveConfig(o.Model, tokenizer, train);
        if (train.ContextLength > config.ContextLength)
            throw new ArgumentOutOfRangeException(nameof(CausalLmTrainerOptions.Model), train.ContextLength,
                $"The data's blocks have {train.BlockLength} tokens (context {train.ContextLength}), longer than the model's maximum context " +
                $"GptConfig.ContextLength = {config.ContextLength}. Pack with ContextLength ≤ {config.ContextLength} or raise GptConfig.ContextLength.");
        train.CheckVocabulary(config.VocabularySize, "training data", o.TokensColumnName);
        val?.CheckVocabulary(config.VocabularySize, "validation data", o.TokensColumnName);
        bool docMask = o.UseDocumentMasking;
        if (docMask && !train.HasDocumentIds)
            throw new ArgumentException("Option 'UseDocumentMasking' is true but 'DocumentIdsColumnName' is not set; name the document-ids column PackTokens produced.", nameof(CausalLmTrainerOptions.UseDocumentMasking));

        var device = SelectDevice(ch);
        int seed = o.Seed ?? HostAccess.Seed(_env) ?? 0;
        torch.set_num_threads(o.NumberOfThreads ?? Environment.ProcessorCount);
        torch.manual_seed(seed);

        var model = new GptModel(config);
        model.to(device);
        model.train();
        using var optimizer = torch.optim.AdamW(
            new[]
            {
                new AdamW.ParamGroup(model.DecayParameters, new AdamW.Options { weight_decay = o.WeightDecay }),
                new AdamW.ParamGroup(model.NoDecayParameters, new AdamW.Options { weight_decay = 0.0 }),
            },
            lr: o.LearningRate, beta1: o.Beta1, beta2: o.Beta2, eps: o.Epsilon);

        // ---- run state (restored from a checkpoint when resuming) ----
        long step = 0, rowsConsumed = 0, tokensSeen = 0, bestStep = -1;
        double elapsedBefore = 0, bestLoss = double.PositiveInfinity;
        int noImprovement = 0;
        var history = new List<TrainingMetrics>();
        Dictionary<string, Tensor>? bestWeights = null;
        if (o.ResumeFrom is { } resumeFrom)
        {
            string path = Checkpoint.Resolve(resumeFrom);
            var saved = Checkpoint.Read(path, model, optimizer, out bestWeights);
            if (saved.Config != config)
                throw new ArgumentException($"Option 'ResumeFrom': checkpoint '{path}' holds a model with {saved.Config}, but this run builds {config}. Resume with the same model options.", nameof(CausalLmTrainerOptions.ResumeFrom));
            (step, rowsConsumed, tokensSeen, elapsedBefore) = (saved.Step, saved.RowsConsumed, saved.TokensSeen, saved.ElapsedSeconds);
            (bestLoss, bestStep, noImprovement, seed) = (saved.BestValidationLoss, saved.BestStep, saved.EvaluationsWithoutImprovement, saved.Seed);
            history.AddRange(saved.History);
            HostAccess.Info(ch, $"Resumed from '{path}' at step {step}.");
        }

        int rowsPerMicro = o.BatchSize;
        long rowsPerStep = (long)rowsPerMicro * o.GradientAccumulationSteps;
        long tokensPerStep = rowsPerStep * train.ContextLength;
        long? horizon = o.MaxSteps;
        if (o.MaxTokens is { } mt) horizon = Min(horizon, (mt + tokensPerStep - 1) / tokensPerStep);
        if (o.MaxEpochs is { } me) horizon = Min(horizon, (long)Math.Ceiling(me * train.Count / rowsPerStep));
        bool oneEpochDefault = horizon is null && o.TimeBudget is null;   // no limit set: one pass over the data
        if (oneEpochDefault) horizon = (train.Count + rowsPerStep - 1) / rowsPerStep;
        long? decaySteps = o.DecaySteps ?? horizon;
        if (decaySteps is null && o.Schedule != LearningRateScheduleKind.Constant)
            HostAccess.Warning(ch, $"Schedule {o.Schedule} with only a time budget: the decay horizon is unknown, so the learning rate stays at its peak. Set DecaySteps.");

        HostAccess.Info(ch, string.Create(CultureInfo.InvariantCulture,
            $"Training {config.Style} GPT: {model.ParameterCount / 1e6:F2}M parameters, {model.FlopsPerToken / 1e6:F2} MFLOP/token, " +
            $"{train.Count} blocks of {train.ContextLength} tokens, batch {o.BatchSize}×{o.GradientAccumulationSteps}, device {device.type}, seed {seed}."));

        var tensorBoard = o.LogDirectory is null ? null : torch.utils.tensorboard.SummaryWriter(o.LogDirectory);
        var parameters = model.parameters().ToArray();
        var permutations = new EpochPermutations(seed, train.Count);
        var rows = new int[rowsPerMicro];
        var validationRows = val is null ? null : LanguageModelEvaluator.SampleRows(val.Count, o.BatchSize, o.EvaluationBatches, seed);
        var clock = Stopwatch.StartNew();
        long firstStep = step;   // steps done before this call (resume) do not count towards this run's speed
        double lastReportSeconds = 0;
        long lastReportTokens = tokensSeen;
        bool stopEarly = false;

        TimeSpan Elapsed() => TimeSpan.FromSeconds(elapsedBefore + clock.Elapsed.TotalSeconds);

        void SaveCheckpoint()
        {
            if (o.CheckpointDirectory is null) return;
            var state = new Checkpoint
            {
                Config = config, Step = step, RowsConsumed = rowsConsumed, TokensSeen = tokensSeen, ElapsedSeconds = Elapsed().TotalSeconds,
                BestValidationLoss = bestLoss, BestStep = bestStep, EvaluationsWithoutImprovement = noImprovement, Seed = seed, History = history,
            };
            string written = Checkpoint.Write(o.CheckpointDirectory, state, model, optimizer, bestWeights, o.KeepCheckpoints);
            HostAccess.Info(ch, $"Checkpoint written: {written}");
        }

        LanguageModelMetrics? Validate()
        {
            if (val is null) return null;
            var m = LanguageModelEvaluator.Evaluate(model, val, o.BatchSize, validationRows, tokenizer, device, docMask);
            if (m.Loss < bestLoss - o.EarlyStoppingMinDelta)
            {
                bestLoss = m.Loss;
                bestStep = step;
                noImprovement = 0;
                if (o.KeepBestWeights)
                {
                    if (bestWeights is not null) foreach (var t in bestWeights.Values) t.Dispose();
                    using var scope = NewDisposeScope();   // detach() makes a handle per tensor: keep only the clones
                    bestWeights = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone().MoveToOuterDisposeScope());
                }
            }
            else
            {
                noImprovement++;
                if (o.EarlyStoppingPatience is { } patience && noImprovement >= patience)
                {
                    stopEarly = true;
                    HostAccess.Info(ch, $"Early stopping at step {step}: no improvement of the validation loss for {noImprovement} evaluations (best {bestLoss:F4} at step {bestStep}).");
                }
            }
            return m;
        }

        double lastLoss = double.NaN, lastGradNorm = double.NaN, lastLr = double.NaN;
        while (true)
        {
            // ---- stopping: whichever limit comes first ----
            if (stopEarly
                || (o.MaxSteps is { } maxSteps && step >= maxSteps)
                || (o.MaxTokens is { } maxTokens && tokensSeen >= maxTokens)
                || (o.MaxEpochs is { } maxEpochs && rowsConsumed >= maxEpochs * train.Count)
                || (o.TimeBudget is { } budget && Elapsed() >= budget)
                || (oneEpochDefault && step >= horizon))
                break;
            if (o.CancellationToken.IsCancellationRequested || HostAccess.IsCanceled(host))
            {
                SaveCheckpoint();
                HostAccess.Info(ch, $"Training cancelled at step {step}.");
                throw new OperationCanceledException($"Training was cancelled at step {step}" +
                    (o.CheckpointDirectory is null ? "." : $"; resume with ResumeFrom = \"{o.CheckpointDirectory}\"."), o.CancellationToken);
            }

            // ---- one optimizer step: one dispose scope, gradient accumulation over micro-batches ----
            lastLr = LearningRateSchedule.At(o.Schedule, step, o.LearningRate, o.MinLearningRate, o.WarmupSteps, decaySteps, o.DecayFraction);
            foreach (var group in optimizer.ParamGroups)
                group.LearningRate = lastLr;
            using (var scope = NewDisposeScope())
            {
                optimizer.zero_grad();
                double loss = 0;
                for (int micro = 0; micro < o.GradientAccumulationSteps; micro++)
                {
                    permutations.Fill(rowsConsumed, rows);
                    rowsConsumed += rows.Length;
                    var (x, y, d) = train.Batch(rows, device, docMask);
                    var logits = model.forward(x, d);                                       // (B, T, Vp)
                    var microLoss = nn.functional.cross_entropy(logits.view(-1, logits.shape[^1]), y.view(-1), ignore_index: -1);
                    // Scale so the accumulated gradient is the mean over all micro-batches (nanoGPT train.py).
                    (microLoss / o.GradientAccumulationSteps).backward();
                    loss += microLoss.item<float>() / o.GradientAccumulationSteps;
                }
                lastGradNorm = o.GradientClipNorm > 0
                    ? nn.utils.clip_grad_norm_(parameters, o.GradientClipNorm)
                    : GlobalNorm(parameters);
                optimizer.step();
                lastLoss = loss;
            }
            step++;
            tokensSeen += tokensPerStep;
            if (!double.IsFinite(lastLoss))
                throw new InvalidOperationException($"The training loss became {lastLoss} at step {step} (learning rate {lastLr:G4}). Lower LearningRate or enable GradientClipNorm.");

            // ---- evaluation, logging, checkpoints ----
            bool last = (o.MaxSteps is { } ms && step >= ms) || (horizon is { } hz && step >= hz);
            LanguageModelMetrics? validation = step % o.EvaluationInterval == 0 || last ? Validate() : null;
            var elapsed = Elapsed();
            double now = clock.Elapsed.TotalSeconds;
            double tokPerSec = (tokensSeen - lastReportTokens) / Math.Max(1e-9, now - lastReportSeconds);
            double epoch = (double)rowsConsumed / train.Count;
            history.Add(new TrainingMetrics(step, epoch, tokensSeen, lastLoss, lastLr, lastGradNorm, tokPerSec, elapsed.TotalSeconds,
                validation?.Loss, validation?.Perplexity, validation?.BitsPerByte));
            if (step % o.LogInterval == 0 || validation is not null || last)
            {
                TimeSpan? eta = EstimateRemaining(clock.Elapsed, step - firstStep, horizon - step, o.TimeBudget - elapsed);
                var report = new TrainingProgress(step, epoch, lastLoss, lastLr, lastGradNorm, tokPerSec, elapsed, eta, validation);
                HostAccess.Info(ch, Describe(report));
                o.Progress?.Report(report);
                tensorBoard?.add_scalar("train/loss", (float)lastLoss, (int)step);
                tensorBoard?.add_scalar("train/lr", (float)lastLr, (int)step);
                tensorBoard?.add_scalar("train/grad_norm", (float)lastGradNorm, (int)step);
                tensorBoard?.add_scalar("train/tokens_per_second", (float)tokPerSec, (int)step);
                if (validation is not null)
                {
                    tensorBoard?.add_scalar("val/loss", (float)validation.Loss, (int)step);
                    tensorBoard?.add_scalar("val/perplexity", (float)validation.Perplexity, (int)step);
                    if (!double.IsNaN(validation.BitsPerByte)) tensorBoard?.add_scalar("val/bits_per_byte", (float)validation.BitsPerByte, (int)step);
                }
                lastReportSeconds = now;
                lastReportTokens = tokensSeen;
            }
            if (o.CheckpointDirectory is not null && step % o.CheckpointInterval == 0)
                SaveCheckpoint();
        }

        // ---- finish: final evaluation if the last step had none, last checkpoint, best weights, logs ----
        if (val is not null && (history.Count == 0 || history[^1].ValidationLoss is null))
        {
            var m = Validate();
            if (history.Count > 0 && m is not null)
                history[^1] = history[^1] with { ValidationLoss = m.Loss, ValidationPerplexity = m.Perplexity, ValidationBitsPerByte = m.BitsPerByte };
        }
        if (o.CheckpointDirectory is not null && (step % o.CheckpointInterval != 0 || stopEarly))
            SaveCheckpoint();
        if (o.KeepBestWeights && bestWeights is not null)
        {
            using (torch.no_grad())
                foreach (var (name, tensorValue) in model.state_dict())
                    tensorValue.copy_(bestWeights[name]);
            HostAccess.Info(ch, $"Restored the best weights (validation loss {bestLoss:F4} at step {bestStep}).");
        }
        if (bestWeights is not null) foreach (var t in bestWeights.Values) t.Dispose();
        if (o.LogDirectory is not null)
        {
            Directory.CreateDirectory(o.LogDirectory);
            Checkpoint.WriteCsv(Path.Combine(o.LogDirectory, "metrics.csv"), history);
        }
        model.eval();
        return new CausalLmTransformer(_env, model, tokenizer, o.TokensColumnName, history);
    }

    private static long? Min(long? a, long b) => a is { } x ? Math.Min(x, b) : b;

    /// <summary>Time to the step limit at this run's mean step time, capped by what is left of the time budget.</summary>
    private static TimeSpan? EstimateRemaining(TimeSpan elapsedThisRun, long stepsThisRun, long? stepsLeft, TimeSpan? budgetLeft)
    {
        TimeSpan? bySteps = stepsLeft is { } left && stepsThisRun > 0 ? elapsedThisRun / stepsThisRun * left : null;
        if (budgetLeft is { } b && b < TimeSpan.Zero) budgetLeft = TimeSpan.Zero;
        return bySteps is { } s && budgetLeft is { } bl ? (s < bl ? s : bl) : bySteps ?? budgetLeft;
    }

    private static double GlobalNorm(IEnumerable<Parameter> parameters)
    {
        using var scope = NewDisposeScope();
        double sum = 0;
        foreach (var p in parameters)
            if (p.grad is { } g)
                sum += g.to(ScalarType.Float64).pow(2).sum().item<double>();
        return Math.Sqrt(sum);
    }

    private static string Describe(TrainingProgress p) =>
        FormattableString.Invariant($"step {p.Step}: loss {p.Loss:F4}, lr {p.LearningRate:G3}, grad norm {p.GradientNorm:F3}, {p.TokensPerSecond:F0} tokens/s, elapsed {p.Elapsed:hh\\:mm\\:ss}") +
        (p.EstimatedRemaining is { } eta ? FormattableString.Invariant($", ETA {eta:hh\\:mm\\:ss}") : "") +
        (p.Validation is { } v
            ? FormattableString.Invariant($" | val loss {v.Loss:F4}, ppl {v.Perplexity:F2}") + (double.IsNaN(v.BitsPerByte) ? "" : FormattableString.Invariant($", {v.BitsPerByte:F4} bits/byte"))
            : "");

    private GptConfig ResolveConfig(GptConfig? requested, LmTokenizer? tokenizer, TokenBlocks train)
    {
        int vocab = requested is { VocabularySize: > 0 } r ? r.VocabularySize
            : tokenizer?.VocabularySize ?? train.MaxTokenId + 1;
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
            return new Device(DeviceType.CUDA, gpu.Value);
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
        Positive(nameof(o.LearningRate), o.LearningRate);
        NonNegative(nameof(o.MinLearningRate), o.MinLearningRate);
        if (o.MinLearningRate > o.LearningRate)
            throw new ArgumentOutOfRangeException(nameof(o.MinLearningRate), o.MinLearningRate,
                $"Option 'MinLearningRate' ({o.MinLearningRate.ToString(CultureInfo.InvariantCulture)}) must not exceed 'LearningRate' ({o.LearningRate.ToString(CultureInfo.InvariantCulture)}).");
        if (o.WarmupSteps < 0)
            throw new ArgumentOutOfRangeException(nameof(o.WarmupSteps), o.WarmupSteps, $"Option 'WarmupSteps' must be ≥ 0; got {o.WarmupSteps}.");
        if (o.DecaySteps is { } ds) PositiveInt(nameof(o.DecaySteps), ds);
        if (!(o.DecayFraction > 0 && o.DecayFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(o.DecayFraction), o.DecayFraction, $"Option 'DecayFraction' must be in (0, 1]; got {o.DecayFraction.ToString(CultureInfo.InvariantCulture)}.");
        InOpenUnit(nameof(o.Beta1), o.Beta1);
        InOpenUnit(nameof(o.Beta2), o.Beta2);
        Positive(nameof(o.Epsilon), o.Epsilon);
        NonNegative(nameof(o.WeightDecay), o.WeightDecay);
        NonNegative(nameof(o.GradientClipNorm), o.GradientClipNorm);
        if (o.MaxSteps is { } s) PositiveInt(nameof(o.MaxSteps), s);
        if (o.MaxTokens is { } t) PositiveInt(nameof(o.MaxTokens), t);
        if (o.MaxEpochs is { } e) Positive(nameof(o.MaxEpochs), e);
        if (o.TimeBudget is { } tb && tb <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(o.TimeBudget), tb, $"Option 'TimeBudget' must be positive; got {tb}.");
        PositiveInt(nameof(o.EvaluationInterval), o.EvaluationInterval);
        if (o.EvaluationBatches is { } eb) PositiveInt(nameof(o.EvaluationBatches), eb);
        if (o.EarlyStoppingPatience is { } p) PositiveInt(nameof(o.EarlyStoppingPatience), p);
        NonNegative(nameof(o.EarlyStoppingMinDelta), o.EarlyStoppingMinDelta);
        PositiveInt(nameof(o.CheckpointInterval), o.CheckpointInterval);
        PositiveInt(nameof(o.KeepCheckpoints), o.KeepCheckpoints);
        PositiveInt(nameof(o.LogInterval), o.LogInterval);
        if (o.NumberOfThreads is { } n) PositiveInt(nameof(o.NumberOfThreads), n);
        if (o.EarlyStoppingPatience is not null && o.ValidationSet is null)
            throw new ArgumentException("Option 'EarlyStoppingPatience' is set but 'ValidationSet' is null; early stopping needs validation data.", nameof(o.EarlyStoppingPatience));
    }

    /// <summary>Seeded per-epoch permutations of the rows: the data order is a pure function of (seed, rows consumed).</summary>
    private sealed class EpochPermutations(int seed, int count)
    {
        private long _epoch = -1;
        private readonly int[] _order = new int[count];

        public void Fill(long rowsConsumed, Span<int> rows)
        {
            for (int i = 0; i < rows.Length; i++)
            {
                long position = rowsConsumed + i;
                long epoch = position / count;
                if (epoch != _epoch)
                {
                    for (int j = 0; j < count; j++) _order[j] = j;
                    // System.Random with an explicit seed is a fixed algorithm across .NET versions.
                    new Random(unchecked(seed * 1_000_003 + (int)epoch)).Shuffle(_order);
                    _epoch = epoch;
                }
                rows[i] = _order[(int)(position % count)];
            }
        }
    }
}
