namespace Microsoft.ML.Llm;

/// <summary>Options of <see cref="CausalLmTrainer"/>. Defaults follow nanoGPT's <c>train.py</c> (docs/ARCHITECTURE.md §5).</summary>
public sealed class CausalLmTrainerOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        public const string TokensColumnName = "Tokens";
        public const int BatchSize = 12;
        public const int GradientAccumulationSteps = 1;
        public const double LearningRate = 6e-4;
        /// <summary>
        /// With <see cref="CausalLmTrainerOptions.MinLearningRate"/> unset, the floor is
        /// <see cref="CausalLmTrainerOptions.LearningRate"/> / this (nanoGPT: "min_lr should be ~= learning_rate/10 per
        /// Chinchilla"), so any learning rate works without also choosing a floor.
        /// </summary>
        public const double MinLearningRateDivisor = 10;
        public const LearningRateScheduleKind Schedule = LearningRateScheduleKind.Cosine;
        public const int WarmupSteps = 100;
        public const double DecayFraction = 0.2;
        public const double Beta1 = 0.9;
        public const double Beta2 = 0.95;
        public const double Epsilon = 1e-8;
        public const double WeightDecay = 0.1;
        public const double GradientClipNorm = 1.0;
        public const int EvaluationInterval = 250;
        public const int CheckpointInterval = 500;
        public const int KeepCheckpoints = 2;
        public const int LogInterval = 10;
        public const double InitialLossScale = GradScaler.InitialScale;
    }

    // ---- data ----

    /// <summary>Column of token blocks: a vector of Int32 (or Int64/UInt32/UInt16) token ids, each row one block of
    /// context + 1 tokens (inputs are tokens 0..T-1, targets 1..T). <c>PackTokens</c> produces it.</summary>
    public string TokensColumnName { get; set; } = Defaults.TokensColumnName;

    /// <summary>Optional Boolean vector column, same length as the tokens: false marks tokens that never contribute to
    /// the loss (padding; prompts in instruction tuning). Null (the default): the column named by the tokens column's
    /// <see cref="LmAnnotations.LossMaskColumnKind"/> annotation (<c>PackTokens</c> adds it), unless
    /// <see cref="UseAnnotatedColumns"/> is false.</summary>
    public string? LossMaskColumnName { get; set; }

    /// <summary>Optional Int32 vector column of per-token document ids (same length as the tokens). Null (the default):
    /// the column named by the tokens column's <see cref="LmAnnotations.DocumentIdsColumnKind"/> annotation
    /// (<c>PackTokens</c> in BestFit mode adds it), unless <see cref="UseAnnotatedColumns"/> is false.</summary>
    public string? DocumentIdsColumnName { get; set; }

    /// <summary>With a document-id column: attend only within each document, restart positions at each document start
    /// (Llama 3 document masking) and never predict a token of one document from another. Null (the default): on
    /// whenever a document-id column is used (named or annotated); false: off; true: required.</summary>
    public bool? UseDocumentMasking { get; set; }

    /// <summary>
    /// Whether a null <see cref="LossMaskColumnName"/> / <see cref="DocumentIdsColumnName"/> is taken from the tokens
    /// column's annotations (true, the default), so padding and prompts are never trained on or scored. False trains on
    /// every token unless the columns are named explicitly (explicit names always win).
    /// </summary>
    public bool UseAnnotatedColumns { get; set; } = true;

    /// <summary>Held-out data with the same columns, evaluated every <see cref="EvaluationInterval"/> steps.</summary>
    public IDataView? ValidationSet { get; set; }

    /// <summary>The tokenizer. When null, the tokenizer annotated on the tokens column by <c>TokenizeForLm</c> is used.
    /// It travels with the trained model (for generation) and gives byte counts for bits per byte.</summary>
    public LmTokenizer? Tokenizer { get; set; }

    // ---- model ----

    /// <summary>The architecture. A null <see cref="GptConfig.VocabularySize"/> (the presets' default) takes the
    /// tokenizer's vocabulary size, else the largest token id in the training data + 1.
    /// When null: <see cref="GptConfig.ShakespeareChar"/> sized to the tokenizer, with a context of at least the data's.</summary>
    public GptConfig? Model { get; set; }

    /// <summary>
    /// Fine-tuning: the weights training starts from — a loaded <see cref="CausalLmTransformer"/>, a model zip path, or a
    /// Hugging Face checkpoint folder (see <see cref="Llm.InitialModel"/>) — instead of a random initialisation. The
    /// architecture is the initial model's (leave <see cref="Model"/> null); its tokenizer is used when the data carries
    /// none. The data's token ids must fit its vocabulary and its blocks its context length.
    /// </summary>
    public InitialModel? InitialModel { get; set; }

    /// <summary>
    /// LoRA fine-tuning (see <see cref="LoraOptions"/>): when set, the base weights are frozen and only low-rank adapters on
    /// the targeted layers train, so the optimizer keeps moments for the adapters alone. Null (the default): every weight
    /// trains. Usually combined with <see cref="InitialModel"/>.
    /// </summary>
    public LoraOptions? Lora { get; set; }

    // ---- optimization ----

    /// <summary>Blocks per micro-batch.</summary>
    public int BatchSize { get; set; } = Defaults.BatchSize;

    /// <summary>Micro-batches whose gradients are summed before each optimizer step.</summary>
    public int GradientAccumulationSteps { get; set; } = Defaults.GradientAccumulationSteps;

    /// <summary>Peak learning rate.</summary>
    public double LearningRate { get; set; } = Defaults.LearningRate;

    /// <summary>
    /// Learning rate at the end of the decay, at most <see cref="LearningRate"/>. Null (the default):
    /// <see cref="LearningRate"/> / <see cref="Defaults.MinLearningRateDivisor"/> (10), nanoGPT's rule, so setting only
    /// <see cref="LearningRate"/> (2e-5 for fine-tuning, say) gives a consistent schedule.
    /// </summary>
    public double? MinLearningRate { get; set; }

    /// <summary>The floor the schedule uses: <see cref="MinLearningRate"/>, or <see cref="LearningRate"/> / 10 when unset.</summary>
    internal double ResolvedMinLearningRate => MinLearningRate ?? LearningRate / Defaults.MinLearningRateDivisor;

    /// <summary>Schedule shape.</summary>
    public LearningRateScheduleKind Schedule { get; set; } = Defaults.Schedule;

    /// <summary>Steps of linear warmup.</summary>
    public int WarmupSteps { get; set; } = Defaults.WarmupSteps;

    /// <summary>Step where the decay ends; null = the step limit implied by MaxSteps/MaxTokens/MaxEpochs.</summary>
    public long? DecaySteps { get; set; }

    /// <summary>For <see cref="LearningRateScheduleKind.WarmupStableDecay"/>: fraction of training spent decaying.</summary>
    public double DecayFraction { get; set; } = Defaults.DecayFraction;

    /// <summary>AdamW β1.</summary>
    public double Beta1 { get; set; } = Defaults.Beta1;

    /// <summary>AdamW β2 (nanoGPT: 0.95; 0.99 for its tiny character model).</summary>
    public double Beta2 { get; set; } = Defaults.Beta2;

    /// <summary>AdamW ε.</summary>
    public double Epsilon { get; set; } = Defaults.Epsilon;

    /// <summary>Decoupled weight decay, applied to ≥2-D weights only (no decay on biases and norms).</summary>
    public double WeightDecay { get; set; } = Defaults.WeightDecay;

    /// <summary>Clip gradients to this global L2 norm; 0 disables clipping.</summary>
    public double GradientClipNorm { get; set; } = Defaults.GradientClipNorm;

    /// <summary>Random seed for initialisation, data order and dropout. Null: the MLContext's seed (else 0).</summary>
    public int? Seed { get; set; }

    /// <summary>
    /// The numeric precision of training and of the trained model's scoring, evaluation and generation
    /// (<see cref="GptModel.Precision"/>): <see cref="TrainingPrecision.Fp32"/>, <see cref="TrainingPrecision.Bf16Mixed"/>
    /// or <see cref="TrainingPrecision.Fp16Mixed"/> (autocast as PyTorch's: matmuls and attention in the low precision,
    /// norms, softmax, the loss and the fp32 master weights and AdamW moments in fp32).
    /// Null (the default): the fastest precision that trains to fp32's quality on the training device —
    /// <see cref="TrainingPrecision.Bf16Mixed"/> on a CPU with AVX-512 BF16 or AMX-BF16 and on a CUDA GPU of compute
    /// capability 8.0 or more (Ampere on), <see cref="TrainingPrecision.Fp16Mixed"/> on CUDA 7.x (Volta, Turing: tensor
    /// cores without bf16), <see cref="TrainingPrecision.Fp32"/> elsewhere; the log names the choice, and a resumed run
    /// keeps its checkpoint's precision. On the CPU validation and the returned model's generation and scoring then run
    /// in fp32 (its <see cref="GptModel.Precision"/>): small models decode faster in fp32 on the CPU (Tiny Shakespeare's
    /// bf16 decoding runs at 0.7× fp32's speed, GPT-2 124M's at 1.4× since generation casts the weights once per call; set
    /// <see cref="GptModel.Precision"/> to decode in bf16). (Bf16Mixed's quality bar: Tiny Shakespeare's validation loss 1.8881 against
    /// fp32's 1.8872.) A precision the device cannot run is rejected before the first step; a resumed run must use
    /// the precision of its checkpoint.
    /// </summary>
    public TrainingPrecision? Precision { get; set; }

    /// <summary>With <see cref="TrainingPrecision.Fp16Mixed"/>: the starting loss scale (PyTorch's GradScaler
    /// <c>init_scale</c>, 2^16); it halves on every step whose gradients overflow and doubles after 2000 good steps.</summary>
    public double InitialLossScale { get; set; } = Defaults.InitialLossScale;

    /// <summary>
    /// Whether the memory libtorch frees stays in the process while training runs on the CPU, instead of glibc returning
    /// it to the operating system after every step and faulting it back in the next (Linux with glibc; elsewhere it has
    /// no effect). Null (the default): on with <see cref="TrainingPrecision.Bf16Mixed"/> and
    /// <see cref="TrainingPrecision.Fp16Mixed"/>, whose casts make the most large short-lived blocks (GPT-2 124M, one
    /// thread: 1.1-1.3× faster steps at context 64, 1.1-1.6× at 256), off with <see cref="TrainingPrecision.Fp32"/>. While
    /// it is on the process keeps its heap's high-water mark (a little above the peak memory without it); the setting is
    /// process-wide (glibc's <c>mallopt</c>) and is restored when the last run that set it ends.
    /// </summary>
    public bool? RetainNativeMemory { get; set; }

    /// <summary>Intra-op threads for torch; null = all cores.</summary>
    /// <remarks>
    /// On a machine where other processes keep cores busy, use fewer threads than free cores: libtorch's OpenMP threads
    /// spin while they wait for each other, and one thread that loses its core stalls the rest. With one of two cores
    /// taken by another process, a 2-thread step of the Tiny Shakespeare model ran 6-8× slower than a 1-thread step
    /// (benchmarks/README.md, "Threads on a busy machine").
    /// </remarks>
    public int? NumberOfThreads { get; set; }

    /// <summary>
    /// Recompute each transformer block's forward pass during backward instead of keeping its activations
    /// (<c>torch.utils.checkpoint</c> per block): activation memory drops from one set per layer to the block inputs
    /// plus one block's working set, for about one extra forward pass of compute. Gradients are unchanged (dropout
    /// masks replay exactly on the CPU).
    /// </summary>
    public bool ActivationCheckpointing { get; set; }

    /// <summary>
    /// The device's peak matmul throughput in FLOP/s for the training precision, the denominator of MFU in progress
    /// reports, metrics.csv and TensorBoard. Null (the default): measured once per process with a 2048³ matmul.
    /// </summary>
    public double? PeakFlops { get; set; }

    /// <summary>
    /// Data-parallel training over MPI: launched as <c>mpirun -np N dotnet app.dll</c>, N processes each train a replica
    /// on their own rows of every batch and average gradients (see <see cref="DistributedOptions"/>). Null (the default):
    /// <see cref="DistributedMode.Auto"/> with default settings (data-parallel exactly when launched with more than one rank).
    /// </summary>
    public DistributedOptions? Distributed { get; set; }

    // ---- stopping: whichever limit comes first; with none set, one epoch ----

    /// <summary>Optimizer steps.</summary>
    public long? MaxSteps { get; set; }

    /// <summary>Training tokens (inputs) processed.</summary>
    public long? MaxTokens { get; set; }

    /// <summary>Passes over the training data.</summary>
    public double? MaxEpochs { get; set; }

    /// <summary>Wall-clock budget; training ends at the first step boundary past it.</summary>
    public TimeSpan? TimeBudget { get; set; }

    // ---- validation ----

    /// <summary>Evaluate the validation set every this many steps (and after the last step).</summary>
    public int EvaluationInterval { get; set; } = Defaults.EvaluationInterval;

    /// <summary>
    /// Also evaluate after the first step whose training tokens reach each of these counts (each count once, a run's
    /// total tokens including those before a resume), whatever <see cref="EvaluationInterval"/> says; null = none. A
    /// sweep's early-stopping tuner uses it to judge a trial exactly at its rung budgets (ASHA), not at the next
    /// regular evaluation. Every count must be positive.
    /// </summary>
    public IReadOnlyList<long>? EvaluateAtTokens { get; set; }

    /// <summary>
    /// Also evaluate after the first step whose training wall time (<see cref="TrainingProgress.Elapsed"/>, a run's
    /// total including the time before a resume) reaches each of these times, whatever <see cref="EvaluationInterval"/>
    /// says; null = none. The wall-clock counterpart of <see cref="EvaluateAtTokens"/>: a sweep whose ASHA rungs are
    /// measured in training time (<see cref="AshaTuner(Sweeping.SearchSpace, TimeSpan, int, int, ITuner?)"/>) judges
    /// each trial there. Every time must be positive.
    /// </summary>
    public IReadOnlyList<TimeSpan>? EvaluateAtTimes { get; set; }

    /// <summary>Batches of the validation set evaluated each time: a fixed random sample of rows (seeded, the same at
    /// every evaluation), as nanoGPT's <c>eval_iters</c>; null = the whole set.</summary>
    public int? EvaluationBatches { get; set; }

    /// <summary>Stop after this many evaluations without improvement; null = never stop early.</summary>
    public int? EarlyStoppingPatience { get; set; }

    /// <summary>Smallest decrease of the validation loss that counts as an improvement.</summary>
    public double EarlyStoppingMinDelta { get; set; }

    /// <summary>With a validation set: return the weights of the best evaluation, not the last step.</summary>
    public bool KeepBestWeights { get; set; } = true;

    // ---- checkpoints ----

    /// <summary>Directory for checkpoints (model, optimizer, schedule, step, RNG and data position), written atomically.</summary>
    public string? CheckpointDirectory { get; set; }

    /// <summary>Write a checkpoint every this many steps (and when training ends or is cancelled).</summary>
    public int CheckpointInterval { get; set; } = Defaults.CheckpointInterval;

    /// <summary>Checkpoints kept in <see cref="CheckpointDirectory"/>; older ones are deleted.</summary>
    public int KeepCheckpoints { get; set; } = Defaults.KeepCheckpoints;

    /// <summary>A checkpoint file, or a directory whose newest checkpoint is used, to continue training from.</summary>
    public string? ResumeFrom { get; set; }

    // ---- progress and logs ----

    /// <summary>Called every <see cref="LogInterval"/> steps and after each evaluation, on the training thread.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    /// <summary>Steps between progress reports and channel messages.</summary>
    public int LogInterval { get; set; } = Defaults.LogInterval;

    /// <summary>Directory for <c>metrics.csv</c> and TensorBoard event files; null = none.</summary>
    public string? LogDirectory { get; set; }

    /// <summary>Ends training at the next step boundary (after writing a checkpoint) with <see cref="OperationCanceledException"/>.
    /// <c>mlContext.Llm().CancelExecution()</c> does the same.</summary>
    public CancellationToken CancellationToken { get; set; }

    /// <summary>A shallow copy (the sweep gives each trial its own budget, seed, directories and progress sink).</summary>
    internal CausalLmTrainerOptions Clone() => (CausalLmTrainerOptions)MemberwiseClone();
}
