using System.Diagnostics;
using Microsoft.ML.Llm.Internal;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>The checked inputs of a run: data, tokenizer and the resolved model configuration.</summary>
/// <param name="Train">The training blocks.</param>
/// <param name="Validation">The validation blocks, if any.</param>
/// <param name="Tokenizer">The tokenizer (from the options or the tokens column), if any.</param>
/// <param name="Config">The model configuration, its vocabulary size resolved.</param>
/// <param name="InitialWeights">The model whose weights training starts from (fine-tuning), or null for a random start.</param>
/// <param name="DocumentMasking">Whether attention and targets stay within documents (resolved by <see cref="TokenColumns"/>).</param>
/// <param name="InitialModelPath">The file or folder <paramref name="InitialWeights"/> came from, when it came from one (LoRA adapters name it as their base).</param>
internal sealed record TrainingInputs(TokenBlocks Train, TokenBlocks? Validation, LmTokenizer? Tokenizer, GptConfig Config, GptModel? InitialWeights = null,
    bool DocumentMasking = false, string? InitialModelPath = null);

/// <summary>Why a run ends, from <see cref="TrainingRun.StopReason"/>.</summary>
internal enum TrainingStopReason
{
    /// <summary>EarlyStoppingPatience evaluations in a row without improvement.</summary>
    EarlyStopping,

    /// <summary>MaxSteps reached.</summary>
    MaxSteps,

    /// <summary>MaxTokens reached.</summary>
    MaxTokens,

    /// <summary>MaxEpochs reached.</summary>
    MaxEpochs,

    /// <summary>TimeBudget spent.</summary>
    TimeBudget,

    /// <summary>No limit set: one pass over the data done.</summary>
    OneEpoch,
}

/// <summary>
/// One training run: the model on its device, the optimizer, the data stream and the <see cref="TrainingState"/>
/// (everything a checkpoint restores). <see cref="CausalLmTrainer.Fit"/> drives it:
/// <c>while (StopReason() is null) { ThrowIfCancelled(); Step(); EndStep(); }</c> then <see cref="Finish"/>.
/// </summary>
/// <remarks>
/// The seams where the next features plug in are fields chosen here, one implementation each today:
/// <see cref="IPrecisionPolicy"/> (fp32), <see cref="ITrainableParameterSelector"/> (all parameters),
/// <see cref="IGradientSynchronizer"/> (one process, or an MPI all-reduce) and <see cref="ITrainingDataSource"/> (token blocks).
/// Data parallelism (<see cref="IReplicaGroup"/>, Training/Distributed) touches the loop in four places: each replica reads
/// its rows of the global batch, gradients and the loss are averaged before clipping, validation sums are reduced, and
/// only rank 0 writes checkpoints and logs.
/// </remarks>
internal sealed class TrainingRun : IDisposable
{
    private readonly IHost _host;
    private readonly IChannel _ch;
    private readonly CausalLmTrainerOptions _o;
    private readonly GptConfig _config;
    private readonly GptModel _model;
    private readonly FusedAdamW _optimizer;
    private readonly LmTokenizer? _tokenizer;

    // The seams (see TrainingSeams.cs).
    private readonly IPrecisionPolicy _precision;
    private readonly TrainableParameters _trainable;
    private readonly IGradientSynchronizer _gradients;
    private readonly ITrainingDataSource _data;

    private readonly IReplicaGroup _replicas;          // one process, or this rank of a data-parallel MPI job
    private readonly int _microBatch;                  // rows this replica reads per micro-batch

    private readonly TokenBlocks? _validation;
    private readonly int[]? _validationRows;          // a fixed sample, the same at every evaluation; null = all rows
    private readonly int[]? _validationShare;         // data parallel: this replica's share of those rows
    private readonly bool _documentMasking;
    private readonly bool _maskedTargets;            // some targets may be −1 (loss mask, document boundaries)
    private readonly long _tokensPerStep;
    private readonly long? _horizon;                  // the step limit implied by the options, if known
    private readonly long? _decaySteps;
    private readonly bool _oneEpochDefault;           // no limit set: one pass over the data
    private readonly SummaryWriter? _tensorBoard;

    private readonly Stopwatch _clock;
    private readonly double _elapsedBefore;           // wall time of the run before this call (resume)
    private readonly long _firstStep;                 // steps done before this call do not count towards this run's speed
    private double _lastReportSeconds;
    private long _lastReportTokens;
    private readonly PendingStepValues _pending = new();
    private readonly IDisposable? _heap;              // freed memory kept in the process while the run lasts (NativeHeap)
    private readonly ThroughputMeter _throughput;
    private bool _finished;

    /// <summary>Builds the model on <paramref name="device"/> and the optimizer, then restores a checkpoint when resuming.</summary>
    public TrainingRun(IHost host, IChannel ch, CausalLmTrainerOptions options, TrainingInputs inputs, Device device, int seed)
    {
        _host = host;
        _ch = ch;
        _o = options;
        _config = inputs.Config;
        _tokenizer = inputs.Tokenizer;
        _validation = inputs.Validation;
        _documentMasking = inputs.DocumentMasking;
        _maskedTargets = inputs.Train.HasLossMask || _documentMasking;

        // Data parallelism: which replica this is; all replicas must run the same options on the same data.
        _replicas = ReplicaGroups.For(options.Distributed);
        _gradients = _replicas.Gradients;
        _microBatch = ReplicaGroups.MicroBatch(options, _replicas.WorldSize);
        _replicas.CheckSameRun(RunFingerprint.Of(options, inputs, _microBatch, seed));

        // The model's initial weights come from torch's generator: seed it first.
        torch.set_num_threads(options.NumberOfThreads ?? Environment.ProcessorCount);
        // Null: the checkpoint's precision when resuming, else the device's preferred one.
        var precision = options.Precision ?? CheckpointPrecision(options.ResumeFrom) ?? PrecisionSupport.Preferred(device, ch);
        PrecisionSupport.Check(precision, device, ch);
        torch.manual_seed(seed);

        // The model's own precision drives validation and the returned model's scoring and generation. With the
        // per-device default on the CPU that is fp32 even when training runs in bf16: small models decode faster in
        // fp32 there (Tiny Shakespeare: bf16 0.7× fp32's tokens/s even with the weights cast once per generation call;
        // GPT-2 124M: 1.4×; benchmarks/README.md, "Mixed precision"); validation runs in it too, so the returned model evaluates to the
        // validation losses the history records. An explicit Precision is used for both.
        var inference = options.Precision is null && device.type == DeviceType.CPU ? TrainingPrecision.Fp32 : precision;
        if (inference != precision)
            HostAccess.Info(ch, $"Validation and the trained model's scoring and generation run in {inference} (training in {precision}): on the CPU fp32 inference is the faster one.");
        _model = new GptModel(_config) { Precision = inference };
        if (inputs.InitialWeights is { } initial)
        {
            // Fine-tuning: the same architecture, its weights copied over the random ones (drawn anyway, so the generator
            // advances as in a fresh run and dropout masks do not depend on where the weights came from).
            // A LoRA model passes on its base weights with its adapters merged in.
            using var noGrad = torch.no_grad();
            using var copyScope = NewDisposeScope();
            var source = initial.BaseStateDict(merged: true);
            foreach (var (name, parameter) in _model.named_parameters())
                parameter.copy_(source[name]);
        }

        if (options.Lora is { } lora)
        {
            // LoRA: adapters on the targeted layers (A from the seeded generator, B = 0), every other weight frozen.
            _model.AddLora(lora);
            if (inputs.InitialWeights is { } baseModel && inputs.InitialModelPath is { } basePath)
                _model.LoraBase = new LoraBaseModel(Path.GetFullPath(basePath), baseModel.BaseWeightsHash());
        }

        _model.to(device);
        _model.train();
        _model.ActivationCheckpointing = options.ActivationCheckpointing;
        _trainable = options.Lora is null ? AllParameters.Instance.Select(_model) : LoraParameters.Instance.Select(_model);

        // The parameters move into the optimizer's flat buffers here (see FusedAdamW), before any weights load.
        _optimizer = new FusedAdamW(_trainable.Decay, _trainable.NoDecay, options.LearningRate, options.Beta1, options.Beta2, options.Epsilon, options.WeightDecay);
        _model.PreallocatedGradients = true;   // every .grad is now a dense view of the optimizer's buffer (see the property)
        _throughput = new ThroughputMeter(_model, device, Autocast.ComputeTypeOf(precision) ?? ScalarType.Float32, options.PeakFlops);

        if (options.ResumeFrom is { } resumeFrom)
        {
            string path = Checkpoint.Resolve(resumeFrom);
            State = Checkpoint.Read(path, _config, precision, _model, _optimizer);
            HostAccess.Info(ch, $"Resumed from '{path}' at step {State.Step}.");
        }
        else
        {
            State = new TrainingState
            {
                Seed = seed,
                Precision = precision,
                LossScaler = new GradScaler { Scale = options.InitialLossScale },
            };
        }

        _precision = PrecisionPolicies.For(State.Precision, State.LossScaler);

        // Same seed, same weights on every replica; rank 0's are copied over anyway, so nothing can make them drift apart.
        _replicas.BroadcastFromMain(_optimizer.ParameterBuffer, "broadcast of rank 0's initial weights");

        var train = inputs.Train;
        long rowsPerStep = (long)_microBatch * _replicas.WorldSize * options.GradientAccumulationSteps;
        _tokensPerStep = rowsPerStep * train.ContextLength;
        _horizon = options.MaxSteps;
        if (options.MaxTokens is { } mt)
            _horizon = Min(_horizon, (mt + _tokensPerStep - 1) / _tokensPerStep);
        if (options.MaxEpochs is { } me)
            _horizon = Min(_horizon, (long)Math.Ceiling(me * train.Count / rowsPerStep));
        _oneEpochDefault = _horizon is null && options.TimeBudget is null;
        if (_oneEpochDefault)
            _horizon = (train.Count + rowsPerStep - 1) / rowsPerStep;
        _decaySteps = options.DecaySteps ?? _horizon;
        if (_decaySteps is null && options.Schedule != LearningRateScheduleKind.Constant)
            HostAccess.Warning(ch, $"Schedule {options.Schedule} with only a time budget: the decay horizon is unknown, so the learning rate stays at its peak. Set DecaySteps.");

        string trainable = options.Lora is null ? "" : string.Create(CultureInfo.InvariantCulture, $" (LoRA: {_trainable.All.Sum(p => p.numel()) / 1e6:F3}M trainable)");
        string replicas = _replicas.WorldSize == 1 ? "" : $" on each of {_replicas.WorldSize} ranks (MPI)";
        HostAccess.Info(ch, string.Create(CultureInfo.InvariantCulture,
            $"Training {_config.Style} GPT: {_model.ParameterCount / 1e6:F2}M parameters{trainable}, {_model.FlopsPerToken / 1e6:F2} MFLOP/token, " +
            $"{train.Count} blocks of {train.ContextLength} tokens, batch {_microBatch}×{options.GradientAccumulationSteps}{replicas}, device {device.type}, precision {State.Precision}, seed {State.Seed}."));

        if (options.LogDirectory is { } logs && _replicas.IsMain)
            CheckWritable(logs, nameof(CausalLmTrainerOptions.LogDirectory));

        _tensorBoard = options.LogDirectory is null || !_replicas.IsMain ? null : torch.utils.tensorboard.SummaryWriter(options.LogDirectory);
        _data = new InMemoryTokenBlocks(train, State.Seed, _documentMasking, _replicas.Rank, _replicas.WorldSize);
        _validationRows = _validation is null ? null : LanguageModelEvaluator.SampleRows(_validation.Count, options.BatchSize, options.EvaluationBatches, State.Seed);
        if (_validation is not null && _replicas.WorldSize > 1)
        {
            var all = _validationRows ?? Enumerable.Range(0, _validation.Count).ToArray();
            _validationShare = all.Where((_, i) => i % _replicas.WorldSize == _replicas.Rank).ToArray();
        }
        _clock = Stopwatch.StartNew();
        _elapsedBefore = State.ElapsedSeconds;
        _firstStep = State.Step;
        _lastReportTokens = State.TokensSeen;

        // Last, so the model, the optimizer's buffers and the data are allocated as usual (NativeHeap's remarks).
        if (device.type == DeviceType.CPU && (options.RetainNativeMemory ?? State.Precision != TrainingPrecision.Fp32))
            _heap = NativeHeap.Retain();
    }

    /// <summary>The run's state: what a checkpoint saves besides weights, optimizer and RNG.</summary>
    public TrainingState State { get; }

    /// <summary>The device the model trains on.</summary>
    public Device Device => _model.Device;

    /// <summary>
    /// The stopping rule, checked at every step boundary: the first limit reached ends the run; with none of MaxSteps,
    /// MaxTokens, MaxEpochs and TimeBudget set, one epoch. Null: keep training.
    /// </summary>
    public TrainingStopReason? StopReason()
    {
        var s = State;
        if (_o.EarlyStoppingPatience is { } patience && s.EvaluationsWithoutImprovement >= patience)
            return TrainingStopReason.EarlyStopping;
        if (_o.MaxSteps is { } maxSteps && s.Step >= maxSteps)
            return TrainingStopReason.MaxSteps;
        if (_o.MaxTokens is { } maxTokens && s.TokensSeen >= maxTokens)
            return TrainingStopReason.MaxTokens;
        if (_o.MaxEpochs is { } maxEpochs && s.RowsConsumed >= maxEpochs * _data.Count)
            return TrainingStopReason.MaxEpochs;
        // The time of the last finished step as its history row records it, not the live clock: the run stops at the
        // first step whose recorded time reaches the budget, and the history shows that it did.
        if (_o.TimeBudget is { } budget && TimeSpan.FromSeconds(s.ElapsedSeconds) >= budget)
            return TrainingStopReason.TimeBudget;
        if (_oneEpochDefault && s.Step >= _horizon)
            return TrainingStopReason.OneEpoch;
        return null;
    }

    /// <summary>At a step boundary: when cancellation was requested, writes a checkpoint and throws.</summary>
    public void ThrowIfCancelled()
    {
        if (!_o.CancellationToken.IsCancellationRequested && !HostAccess.IsCanceled(_host))
            return;
        SaveCheckpoint();
        HostAccess.Info(_ch, $"Training cancelled at step {State.Step}.");
        throw new OperationCanceledException($"Training was cancelled at step {State.Step}" +
            (_o.CheckpointDirectory is null ? "." : $"; resume with ResumeFrom = \"{_o.CheckpointDirectory}\"."), _o.CancellationToken);
    }

    /// <summary>One optimizer step (nanoGPT's inner loop): set the learning rate, accumulate gradients over the
    /// micro-batches, clip, update. Nothing here waits for the device: the loss and the gradient norm stay device
    /// tensors until <see cref="EndStep"/> reads them back at a log interval (<see cref="PendingSteps"/>).</summary>
    public void Step()
    {
        var s = State;
        int microSteps = _o.GradientAccumulationSteps;
        double lr = LearningRateSchedule.At(_o.Schedule, s.Step, _o.LearningRate, _o.ResolvedMinLearningRate, _o.WarmupSteps, _decaySteps, _o.DecayFraction);
        _optimizer.LearningRate = lr;

        // TorchSharp 0.107 cannot read the CUDA generator's state (there is no torch.cuda.get_rng_state), so a
        // checkpoint cannot carry it. Re-seeding it from (seed, step) at every step makes it a pure function of what
        // the checkpoint does carry: a resumed CUDA run draws the same dropout masks as the uninterrupted one.
        if (Device.type == DeviceType.CUDA)
            torch.cuda.manual_seed_all(State.Seed * 1_000_003L + s.Step);

        Tensor loss;
        Tensor gradNorm;
        using (var scope = NewDisposeScope())   // every tensor of the step is released at its end
        {
            _optimizer.ZeroGrad();

            // The step's loss is summed on the device in float64 (the mean over micro-batches, as the host sum of
            // item() values was): reading it back every micro-batch would make the host wait for the device each time.
            loss = zeros(1, dtype: ScalarType.Float64, device: Device);
            for (int micro = 0; micro < microSteps; micro++)
            {
                var (x, y, d) = _data.Batch(s.RowsConsumed, _microBatch, Device);
                s.RowsConsumed += (long)_microBatch * _replicas.WorldSize;
                Tensor microLoss;
                using (_precision.Autocast())
                {
                    // Under autocast the model's matmuls run in bf16/fp16 and the cross-entropy (log-softmax and
                    // the mean) in fp32, as PyTorch's autocast runs it.
                    microLoss = MeanLoss(_model.TrainingLoss(x, d, y), y);
                }

                // Scale so the accumulated gradient is the mean over all micro-batches (nanoGPT train.py).
                using var steps = microSteps.ToScalar();                  // held: see HeldScalar
                _precision.Backward(microLoss.div(steps));
                loss.add_(microLoss.detach().to(ScalarType.Float64).div(steps), HeldScalar.One);
            }

            _gradients.Synchronize(_optimizer.Gradients, loss, s.Step);

            // fp16: divide the gradients by the loss scale before clipping, so the clip sees true gradients; an
            // overflowed step is skipped (its scale halved), as torch.amp.GradScaler's step() skips it.
            double scale = s.LossScaler.Scale;
            bool finite = _precision.UnscaleGradients(_trainable.All);
            gradNorm = _o.GradientClipNorm > 0
                ? _optimizer.ClipGradientNorm(_o.GradientClipNorm)
                : _optimizer.GradientNorm();
            if (finite)
                _optimizer.Step();
            else
                HostAccess.Info(_ch, FormattableString.Invariant($"Step {s.Step + 1}: fp16 gradients overflowed at loss scale {scale}; step skipped, loss scale now {s.LossScaler.Scale}."));
            loss.MoveToOuterDisposeScope();
            gradNorm.MoveToOuterDisposeScope();
        }

        s.Step++;
        s.TokensSeen += _tokensPerStep;
        _pending.Add(s.Step, loss, gradNorm, lr);
    }

    /// <summary>
    /// The mean cross-entropy over the micro-batch's targets (−1 = not a target), from their summed loss. With a loss mask
    /// or document masking a micro-batch can hold no target at all (a prompt longer than the block): a plain mean would
    /// then be 0/0 = NaN and its gradient would poison the weights, so the sum is divided by at least one target and such
    /// a micro-batch adds nothing. Without masks every position is a target, and the count is known on the host.
    /// </summary>
    private Tensor MeanLoss(Tensor sum, Tensor targets) => _maskedTargets
        ? sum / targets.ne(-1).sum().clamp_min(1).to(sum.dtype)
        : sum / targets.numel();

    /// <summary>After a step: evaluate (every EvaluationInterval steps and at the step limit), record the history row,
    /// report progress, write a checkpoint every CheckpointInterval steps.</summary>
    /// <remarks>
    /// The history gets a row for every step at once; its loss and gradient norm are filled in when the host reads
    /// them back, which happens only at a log interval, an evaluation, a checkpoint or the end (one synchronisation
    /// for all the steps since the last one). So every row ends up with its own step's exact loss; what waits is only
    /// the moment it is known, and a loss that turned NaN is reported at the next read-back, naming its step.
    /// </remarks>
    public void EndStep()
    {
        var s = State;
        bool last = StopReason() is { } reason && reason != TrainingStopReason.TimeBudget;
        bool evaluate = s.Step % _o.EvaluationInterval == 0 || last || CrossedEvaluationTokens() || CrossedEvaluationTime();
        bool report = s.Step % _o.LogInterval == 0 || evaluate;
        bool checkpoint = s.Step % _o.CheckpointInterval == 0;
        LanguageModelMetrics? validation = evaluate ? Evaluate() : null;
        var elapsed = Elapsed();
        if (_replicas.WorldSize > 1 && (_o.TimeBudget is not null || _o.EvaluateAtTimes is { Count: > 0 }))   // every rank must stop (and evaluate) at the same step
            elapsed = TimeSpan.FromSeconds(_replicas.Max(elapsed.TotalSeconds, $"time-budget agreement after step {s.Step}"));
        s.ElapsedSeconds = elapsed.TotalSeconds;
        double now = _clock.Elapsed.TotalSeconds;
        double tokPerSec = (s.TokensSeen - _lastReportTokens) / Math.Max(1e-9, now - _lastReportSeconds);
        double epoch = (double)s.RowsConsumed / _data.Count;
        var (_, lr) = _pending.Last;
        var throughput = _throughput.Measure(tokPerSec);
        s.History.Add(new TrainingMetrics(s.Step, epoch, s.TokensSeen, double.NaN, lr, double.NaN, tokPerSec, elapsed.TotalSeconds,
            validation?.Loss, validation?.Perplexity, validation?.BitsPerByte)
        {
            Mfu = throughput.Mfu,
            PeakMemoryBytes = throughput.PeakMemoryBytes,
        });
        if (report || checkpoint)
            FlushPendingSteps();
        if (validation is not null)
            WriteLossPlot();
        if (report)
        {
            var row = s.History[^1];
            TimeSpan? eta = EstimateRemaining(_clock.Elapsed, s.Step - _firstStep, _horizon - s.Step, _o.TimeBudget - elapsed);
            Report(new TrainingProgress(s.Step, epoch, row.Loss, lr, row.GradientNorm, tokPerSec, elapsed, eta, validation)
            {
                Mfu = throughput.Mfu,
                PeakMemoryBytes = throughput.PeakMemoryBytes,
                Tokens = s.TokensSeen,
            });
            _lastReportSeconds = now;
            _lastReportTokens = s.TokensSeen;
        }

        if (checkpoint)
            SaveCheckpoint();
    }

    /// <summary>Whether the step just taken is the first whose tokens reach one of <see cref="CausalLmTrainerOptions.EvaluateAtTokens"/>.</summary>
    private bool CrossedEvaluationTokens()
    {
        if (_o.EvaluateAtTokens is not { Count: > 0 } at)
            return false;
        long before = State.TokensSeen - _tokensPerStep;
        foreach (long t in at)
        {
            if (before < t && t <= State.TokensSeen)
                return true;
        }

        return false;
    }

    /// <summary>Whether the step just taken is the first whose wall time reaches one of <see cref="CausalLmTrainerOptions.EvaluateAtTimes"/>
    /// (the time recorded after the previous step against the clock now, before this step's evaluation).</summary>
    private bool CrossedEvaluationTime()
    {
        if (_o.EvaluateAtTimes is not { Count: > 0 } at)
            return false;
        // With several ranks both times are agreed (the slowest rank's), so every rank evaluates at the same step:
        // an evaluation reduces across ranks.
        var before = TimeSpan.FromSeconds(State.ElapsedSeconds);
        var now = Elapsed();
        if (_replicas.WorldSize > 1)
            now = TimeSpan.FromSeconds(_replicas.Max(now.TotalSeconds, $"evaluation-time agreement after step {State.Step}"));
        foreach (var t in at)
        {
            if (before < t && t <= now)
                return true;
        }

        return false;
    }

    /// <summary>Steps whose loss and gradient norm are still on the device (see <see cref="EndStep"/>).</summary>
    internal int PendingSteps => _pending.Count;

    /// <summary>
    /// Reads the pending steps' losses and gradient norms back to the host in one transfer, writes them into their
    /// history rows, and fails on the first step whose loss is not finite.
    /// </summary>
    private void FlushPendingSteps()
    {
        var s = State;
        foreach (var (step, loss, gradNorm, lr) in _pending.ReadBack())
        {
            int row = s.History.FindLastIndex(h => h.Step == step);
            if (row >= 0)
                s.History[row] = s.History[row] with { Loss = loss, GradientNorm = gradNorm };
            if (!double.IsFinite(loss))
                throw new InvalidOperationException($"The training loss became {loss} at step {step} (learning rate {lr:G4}). Lower LearningRate or enable GradientClipNorm.");
        }
    }

    /// <summary>
    /// Ends the run: a final evaluation if the last step had none, a last checkpoint, the best weights restored, the CSV
    /// log written. The model passes to the returned transformer.
    /// </summary>
    public CausalLmTransformer Finish(IHostEnvironment env)
    {
        var s = State;
        FlushPendingSteps();
        if (_validation is not null && (s.History.Count == 0 || s.History[^1].ValidationLoss is null))
        {
            var m = Evaluate();
            if (s.History.Count > 0 && m is not null)
                s.History[^1] = s.History[^1] with { ValidationLoss = m.Loss, ValidationPerplexity = m.Perplexity, ValidationBitsPerByte = m.BitsPerByte };
        }

        bool stoppedEarly = StopReason() == TrainingStopReason.EarlyStopping;
        if (stoppedEarly)
            HostAccess.Info(_ch, $"Early stopping at step {s.Step}: no improvement of the validation loss for {s.EvaluationsWithoutImprovement} evaluations (best {s.BestValidationLoss:F4} at step {s.BestStep}).");
        if (s.Step % _o.CheckpointInterval != 0 || stoppedEarly)
            SaveCheckpoint();
        if (_o.KeepBestWeights && s.BestWeights is { } best)
        {
            using (torch.no_grad())
            {
                foreach (var (name, tensorValue) in _model.state_dict())
                    tensorValue.copy_(best[name]);
            }

            HostAccess.Info(_ch, $"Restored the best weights (validation loss {s.BestValidationLoss:F4} at step {s.BestStep}).");
        }

        if (_o.LogDirectory is not null && _replicas.IsMain)
        {
            Directory.CreateDirectory(_o.LogDirectory);
            TrainingHistory.WriteCsv(Path.Combine(_o.LogDirectory, "metrics.csv"), s.History);
            WriteLossPlot();
        }

        _model.PreallocatedGradients = false;
        _optimizer.ReleaseGradients();   // the returned model keeps no gradient memory
        _model.ActivationCheckpointing = false;
        _model.eval();
        _finished = true;
        return new CausalLmTransformer(env, _model, _tokenizer, _o.TokensColumnName, s.History) { LoraSaveMode = _o.Lora?.SaveMode ?? LoraSaveMode.Merged };
    }

    /// <summary>The precision the checkpoint to resume from was written in, or null (no resume, or a checkpoint that
    /// cannot be read: <see cref="Checkpoint.Read"/> then reports it with its full message).</summary>
    private static TrainingPrecision? CheckpointPrecision(string? resumeFrom)
    {
        if (resumeFrom is null)
            return null;
        try
        {
            return Checkpoint.ReadPrecision(Checkpoint.Resolve(resumeFrom)).Precision;
        }
        catch (Exception e) when (e is IOException or FormatException or ArgumentException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Releases the optimizer and the best-weight copies, and the model unless <see cref="Finish"/> handed it on.</summary>
    public void Dispose()
    {
        _heap?.Dispose();
        _optimizer.Dispose();
        _pending.Dispose();
        State.Dispose();
        if (!_finished)
            _model.Dispose();
    }

    /// <summary>Redraws <c>loss.png</c> in the log directory (at each evaluation and at the end): a picture to look at
    /// while the run goes on, from rows whose losses have been read back.</summary>
    private void WriteLossPlot()
    {
        if (_o.LogDirectory is null || !_replicas.IsMain || !State.History.Any(m => double.IsFinite(m.Loss) || m.ValidationLoss is not null))
            return;
        TrainingPlots.SaveLossPlot(State.History, Path.Combine(_o.LogDirectory, "loss.png"));
    }

    /// <summary>Creates <paramref name="directory"/> and writes and deletes a probe file in it, so that an unwritable log
    /// directory fails before training starts instead of at the first evaluation.</summary>
    private static void CheckWritable(string directory, string option)
    {
        try
        {
            Directory.CreateDirectory(directory);
            string probe = Path.Combine(directory, $".write-test-{Environment.ProcessId}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new ArgumentException($"Option '{option}' is '{directory}', which cannot be written: {e.Message} Give a directory this process can create and write.", option, e);
        }
    }

    private TimeSpan Elapsed() => TimeSpan.FromSeconds(_elapsedBefore + _clock.Elapsed.TotalSeconds);

    /// <summary>Evaluates the validation set and updates the best loss, best weights and the patience counter.</summary>
    private LanguageModelMetrics? Evaluate()
    {
        if (_validation is null)
            return null;
        var s = State;
        LanguageModelMetrics m;
        if (_replicas.WorldSize == 1)
        {
            m = LanguageModelEvaluator.Evaluate(_model, _validation, _o.BatchSize, _validationRows, _tokenizer, _documentMasking);
        }
        else
        {
            // Each rank evaluates its share of the rows; the sums of nats, targets and bytes are reduced.
            var sums = LanguageModelEvaluator.Sums(_model, _validation, _o.BatchSize, _validationShare, _tokenizer, _documentMasking);
            Span<double> values = [sums.Nats, sums.Tokens, sums.Bytes];
            _replicas.Sum(values, $"validation reduce at step {s.Step}");
            m = LanguageModelEvaluator.Metrics(new EvaluationSums(values[0], values[1], values[2]), _tokenizer is not null);
        }

        if (m.Loss < s.BestValidationLoss - _o.EarlyStoppingMinDelta)
        {
            s.BestValidationLoss = m.Loss;
            s.BestStep = s.Step;
            s.EvaluationsWithoutImprovement = 0;
            if (_o.KeepBestWeights)
                s.KeepBestWeights(_model);
        }
        else
        {
            s.EvaluationsWithoutImprovement++;
        }

        return m;
    }

    private void SaveCheckpoint()
    {
        if (_o.CheckpointDirectory is null)
            return;
        FlushPendingSteps();
        if (!_replicas.IsMain)   // rank 0 alone writes; every rank resumes from its files
            return;
        State.ElapsedSeconds = Elapsed().TotalSeconds;
        string written = Checkpoint.Write(_o.CheckpointDirectory, _config, State, _model, _optimizer, _o.KeepCheckpoints);
        HostAccess.Info(_ch, $"Checkpoint written: {written}");
    }

    private void Report(TrainingProgress report)
    {
        // Every rank's Progress sees the same report (the global loss); only rank 0 logs (and has the TensorBoard writer).
        if (_replicas.IsMain)
            HostAccess.Info(_ch, Describe(report));
        _o.Progress?.Report(report);
        if (_tensorBoard is not { } tb)
            return;
        int step = (int)report.Step;
        tb.add_scalar("train/loss", (float)report.Loss, step);
        tb.add_scalar("train/lr", (float)report.LearningRate, step);
        tb.add_scalar("train/grad_norm", (float)report.GradientNorm, step);
        tb.add_scalar("train/tokens_per_second", (float)report.TokensPerSecond, step);
        if (!double.IsNaN(report.Mfu))
            tb.add_scalar("train/mfu", (float)report.Mfu, step);
        tb.add_scalar("train/peak_memory_mb", (float)(report.PeakMemoryBytes / (1024.0 * 1024.0)), step);
        if (report.Validation is { } v)
        {
            tb.add_scalar("val/loss", (float)v.Loss, step);
            tb.add_scalar("val/perplexity", (float)v.Perplexity, step);
            if (!double.IsNaN(v.BitsPerByte))
                tb.add_scalar("val/bits_per_byte", (float)v.BitsPerByte, step);
        }
    }

    private static string Describe(TrainingProgress p) =>
        FormattableString.Invariant($"step {p.Step}: loss {p.Loss:F4}, lr {p.LearningRate:G3}, grad norm {p.GradientNorm:F3}, {p.TokensPerSecond:F0} tokens/s, MFU {100 * p.Mfu:F1}%, peak memory {p.PeakMemoryBytes / (1024.0 * 1024.0):F0} MiB, elapsed {p.Elapsed:hh\\:mm\\:ss}") +
        (p.EstimatedRemaining is { } eta ? FormattableString.Invariant($", ETA {eta:hh\\:mm\\:ss}") : "") +
        (p.Validation is { } v
            ? FormattableString.Invariant($" | val loss {v.Loss:F4}, ppl {v.Perplexity:F2}") + (double.IsNaN(v.BitsPerByte) ? "" : FormattableString.Invariant($", {v.BitsPerByte:F4} bits/byte"))
            : "");

    private static long? Min(long? a, long b) => a is { } x ? Math.Min(x, b) : b;

    /// <summary>Time to the step limit at this run's mean step time, capped by what is left of the time budget.</summary>
    private static TimeSpan? EstimateRemaining(TimeSpan elapsedThisRun, long stepsThisRun, long? stepsLeft, TimeSpan? budgetLeft)
    {
        TimeSpan? bySteps = stepsLeft is { } left && stepsThisRun > 0 ? elapsedThisRun / stepsThisRun * left : null;
        if (budgetLeft is { } b && b < TimeSpan.Zero)
            budgetLeft = TimeSpan.Zero;
        return bySteps is { } st && budgetLeft is { } bl ? (st < bl ? st : bl) : bySteps ?? budgetLeft;
    }
}
