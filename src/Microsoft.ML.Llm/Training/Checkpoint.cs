using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Everything needed to continue a run exactly: the model configuration, the <see cref="TrainingState"/> (step, data
/// position, early-stopping state, best weights, history), torch's RNG state, the weights and the optimizer moments.
/// One file per checkpoint, written to a temporary name, flushed to disk, then renamed, so a crash mid-write leaves the
/// previous checkpoint as the newest loadable one.
/// </summary>
internal static class Checkpoint
{
    private const string Magic = "MLLLMCKP";
    private const int FormatVersion = 3;
    private const int FirstChecksummedVersion = 2;
    private const int FirstPrecisionVersion = 3;
    private const int FirstFusedOptimizerVersion = 3;
    private const string Extension = ".ckpt";
    private const string Prefix = "checkpoint-";

    // Binary format, version 3 (little-endian, BinaryWriter; strings length-prefixed), fields in order:
    //   string "MLLLMCKP"; int32 FormatVersion (3); GptConfig (its own versioned layout, GptConfig.Save);
    //   since version 3: int32 Precision (TrainingPrecision); float64 loss scale; int32 loss-scale good steps;
    //   int64 Step; int64 RowsConsumed; int64 TokensSeen; float64 ElapsedSeconds; float64 BestValidationLoss;
    //   int64 BestStep; int32 EvaluationsWithoutImprovement; int32 Seed; history (TrainingHistory.Write);
    //   version 3 on: the history's throughput columns (TrainingHistory.WriteThroughput);
    //   torch RNG state (a uint8 tensor, Tensor.Save); model weights (Module.save);
    //   optimizer state: version 3 on FusedAdamW.Save (flat moments), versions 1-2 TorchSharp AdamW's save_state_dict
    //   (per-parameter moments, converted on load by FusedAdamW.LoadTorchSharpState);
    //   bool has best weights; if so int32 count, then per tensor: string name, tensor (Tensor.Save);
    //   footer (version 2 on): int64 content length (every byte before the footer), uint64 XxHash64 of that content
    //   (EntryChecksum, as the model zip's side entries). Version 2 is the same without the precision fields (an Fp32
    //   run, TorchSharp AdamW's optimizer state, no throughput columns); version 1 also lacks the footer. Both still resume.

    /// <summary>Writes <paramref name="state"/>, the weights, the optimizer and torch's RNG to a new checkpoint file
    /// in <paramref name="directory"/>, keeps the newest <paramref name="keep"/> files and returns the path.</summary>
    public static string Write(string directory, GptConfig config, TrainingState state, nn.Module model, FusedAdamW optimizer, int keep)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, $"{Prefix}{state.Step:D9}{Extension}");
        string tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
        using (var w = new BinaryWriter(stream))
        {
            w.Write(Magic);
            w.Write(FormatVersion);
            config.Save(w);
            w.Write((int)state.Precision);
            w.Write(state.LossScaler.Scale);
            w.Write(state.LossScaler.GoodSteps);
            w.Write(state.Step);
            w.Write(state.RowsConsumed);
            w.Write(state.TokensSeen);
            w.Write(state.ElapsedSeconds);
            w.Write(state.BestValidationLoss);
            w.Write(state.BestStep);
            w.Write(state.EvaluationsWithoutImprovement);
            w.Write(state.Seed);
            TrainingHistory.Write(w, state.History);
            TrainingHistory.WriteThroughput(w, state.History);
            using (var rng = torch.random.get_rng_state())
                rng.Save(w);
            model.save(w);
            optimizer.Save(w);
            w.Write(state.BestWeights is not null);
            if (state.BestWeights is not null)
            {
                w.Write(state.BestWeights.Count);
                foreach (var (name, t) in state.BestWeights)
                {
                    w.Write(name);
                    t.Save(w);
                }
            }

            w.Flush();
            long length = stream.Position;
            ulong hash = EntryChecksum.Hash(stream, 0, length, null);
            stream.Position = length;
            w.Write(length);
            w.Write(hash);
            w.Flush();
            stream.Flush(flushToDisk: true);
        }

        File.Move(tmp, path, overwrite: true);
        foreach (var old in List(directory).SkipLast(Math.Max(1, keep)))
            File.Delete(old);
        return path;
    }

    /// <summary>
    /// Reads a checkpoint written by <see cref="Write"/>: loads <paramref name="model"/>, <paramref name="optimizer"/> and
    /// torch's RNG, and returns the training state. The checkpoint must hold a model built from <paramref name="config"/>
    /// and trained in <paramref name="precision"/> (both checked before any weight loads).
    /// </summary>
    public static TrainingState Read(string path, GptConfig config, TrainingPrecision precision, nn.Module model, FusedAdamW optimizer)
    {
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream);
        string magic;
        try
        {
            magic = r.ReadString();
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException)
        {
            throw new FormatException($"'{path}' is not a Microsoft.ML.Llm checkpoint.", e);
        }

        if (magic != Magic)
            throw new FormatException($"'{path}' is not a Microsoft.ML.Llm checkpoint.");
        int version = r.ReadInt32();
        if (version < 1 || version > FormatVersion)
            throw new FormatException($"Checkpoint '{path}' has format version {version}; this build reads versions 1 to {FormatVersion}.");

        // The checksum is checked before any field is parsed: a flipped bit in the weights would otherwise load silently.
        long contentLength = stream.Length;
        if (version >= FirstChecksummedVersion)
        {
            long afterVersion = stream.Position;
            contentLength = EntryChecksum.VerifyFooter(stream, 0, detail => Corrupt(path, detail));
            stream.Position = afterVersion;
        }

        var saved = GptConfig.Load(r);
        if (saved != config)
        {
            throw new ArgumentException(
                $"Option 'ResumeFrom': checkpoint '{path}' holds a model with {saved}, but this run builds {config}. Resume with the same model options.",
                nameof(CausalLmTrainerOptions.ResumeFrom));
        }

        var (savedPrecision, scaler) = version >= FirstPrecisionVersion ? ReadPrecision(r, path) : (TrainingPrecision.Fp32, new GradScaler());
        if (savedPrecision != precision)
        {
            throw new ArgumentException(
                $"Option 'Precision' is {precision}, but checkpoint '{path}' was written by a run with Precision = {savedPrecision}. " +
                $"Resume with Precision = {savedPrecision} (the precision of a run cannot change mid-run), or start a new run without ResumeFrom.",
                nameof(CausalLmTrainerOptions.Precision));
        }

        var state = ReadState(r, version, savedPrecision, scaler);
        using (var rng = torch.random.get_rng_state())
        {
            rng.Load(r);
            torch.random.set_rng_state(rng);
        }

        model.load(r);
        if (version >= FirstFusedOptimizerVersion)
            optimizer.Load(r);
        else
            optimizer.LoadTorchSharpState(r);   // formats 1-2: TorchSharp's per-parameter AdamW state, converted
        if (r.ReadBoolean())
        {
            int n = r.ReadInt32();
            var bestWeights = new Dictionary<string, Tensor>(n);
            var parameters = model.state_dict();
            using var scope = NewDisposeScope();
            for (int i = 0; i < n; i++)
            {
                string name = r.ReadString();
                var t = parameters[name].detach().clone().MoveToOuterDisposeScope();
                t.Load(r);
                bestWeights[name] = t;
            }

            state.RestoreBestWeights(bestWeights);
        }

        if (stream.Position != contentLength)
            throw Corrupt(path, $"its content is {contentLength} bytes but reading it took {stream.Position}");
        return state;
    }

    /// <summary>The precision and fp16 loss-scale state a checkpoint records (Fp32 and the initial scale before format 3),
    /// without loading weights.</summary>
    public static (TrainingPrecision Precision, GradScaler Scaler) ReadPrecision(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        var (_, precision, scaler) = ReadHeader(r, path);
        return (precision, scaler);
    }

    /// <summary>Where a checkpoint's run stood (step, training tokens, training seconds, the metrics history), without
    /// loading weights: a sweep's final phase sizes the continuation of a trial from it.</summary>
    public static (long Step, long Tokens, double ElapsedSeconds, List<TrainingMetrics> History) ReadProgress(string path)
    {
        using var r = new BinaryReader(File.OpenRead(path));
        var (version, precision, scaler) = ReadHeader(r, path);
        using var state = ReadState(r, version, precision, scaler);
        return (state.Step, state.TokensSeen, state.ElapsedSeconds, state.History);
    }

    /// <summary>The fields before the run's state, for the readers that load no weights (no checksum check): the format
    /// version, and the precision and loss-scale state (Fp32 and the initial scale before format 3).</summary>
    private static (int Version, TrainingPrecision Precision, GradScaler Scaler) ReadHeader(BinaryReader r, string path)
    {
        if (r.ReadString() != Magic)
            throw new FormatException($"'{path}' is not a Microsoft.ML.Llm checkpoint.");
        int version = r.ReadInt32();
        _ = GptConfig.Load(r);
        var (precision, scaler) = version >= FirstPrecisionVersion ? ReadPrecision(r, path) : (TrainingPrecision.Fp32, new GradScaler());
        return (version, precision, scaler);
    }

    /// <summary>The run's state after the header: counters, best-loss bookkeeping, seed and the metrics history.</summary>
    private static TrainingState ReadState(BinaryReader r, int version, TrainingPrecision precision, GradScaler scaler)
    {
        var state = new TrainingState
        {
            Precision = precision,
            LossScaler = scaler,
            Step = r.ReadInt64(),
            RowsConsumed = r.ReadInt64(),
            TokensSeen = r.ReadInt64(),
            ElapsedSeconds = r.ReadDouble(),
            BestValidationLoss = r.ReadDouble(),
            BestStep = r.ReadInt64(),
            EvaluationsWithoutImprovement = r.ReadInt32(),
            Seed = r.ReadInt32(),
            History = TrainingHistory.Read(r),
        };
        if (version >= FirstFusedOptimizerVersion)
            TrainingHistory.ReadThroughput(r, state.History);
        return state;
    }

    private static (TrainingPrecision Precision, GradScaler Scaler) ReadPrecision(BinaryReader r, string path)
    {
        int precision = r.ReadInt32();
        double scale = r.ReadDouble();
        int goodSteps = r.ReadInt32();
        if (!Enum.IsDefined((TrainingPrecision)precision) || !(scale > 0) || double.IsInfinity(scale) || goodSteps < 0)
            throw Corrupt(path, $"its precision fields (precision {precision}, loss scale {scale}, good steps {goodSteps}) are out of range");
        return ((TrainingPrecision)precision, new GradScaler { Scale = scale, GoodSteps = goodSteps });
    }

    private static FormatException Corrupt(string path, string detail) =>
        new($"Checkpoint '{path}' is corrupt: {detail}. The file was damaged after it was written; resume from an earlier checkpoint.");

    /// <summary>The checkpoint file to resume from: <paramref name="path"/> itself, or the newest one in that directory.</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(path))
            return path;
        if (Directory.Exists(path))
        {
            return List(path).LastOrDefault()
                ?? throw new FileNotFoundException($"Option 'ResumeFrom': directory '{path}' holds no checkpoint ({Prefix}*{Extension}).", path);
        }

        throw new FileNotFoundException($"Option 'ResumeFrom': '{path}' is neither a checkpoint file nor a directory.", path);
    }

    /// <summary>Complete checkpoints in <paramref name="directory"/>, oldest first.</summary>
    public static IEnumerable<string> List(string directory) =>
        Directory.EnumerateFiles(directory, $"{Prefix}*{Extension}").Order(StringComparer.Ordinal);
}
