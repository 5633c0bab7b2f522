using Microsoft.ML.Llm.Data;
using static Microsoft.ML.Llm.Tests.CausalLmTrainerTests;

namespace Microsoft.ML.Llm.Tests.Training;

/// <summary>
/// Training and evaluation straight from memory-mapped token shards (issue 12): the same blocks give the same losses
/// as the in-memory path, bit for bit, resume stays exact, and shards of another vocabulary are refused.
/// </summary>
[Collection("Torch")]
public sealed class ShardTrainingTests : IDisposable
{
    private const int Block = 17;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "llm-shard-train-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root))
            Directory.Delete(_root, recursive: true);
    }

    private TokenShardDataView SaveAndLoad(MLContext ml, IDataView data, string name, TokenShardOptions options)
    {
        string dir = Path.Combine(_root, name);
        ml.Data.SaveAsTokenShards(data, dir, options);
        return ml.Data.LoadTokenShards(dir);
    }

    [Fact]
    public void TrainingFromShardsEqualsTrainingFromMemory()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var train = TestData.Blocks(ml, tok, Block, repeats: 10);
        var validation = TestData.BlocksOf(ml, tok, TestData.HeldOut, Block);
        // Small shards, so blocks are served from several files.
        var shardOptions = new TokenShardOptions { VocabularySize = tok.VocabularySize, TokensPerShard = 1024 };
        using var trainShards = SaveAndLoad(ml, train, "train", shardOptions).Shards;
        using var validationShards = SaveAndLoad(ml, validation, "validation", shardOptions).Shards;
        Assert.True(trainShards.Files.Count > 1);

        CausalLmTrainerOptions Options(IDataView validationSet)
        {
            var o = TestData.TinyOptions(16, maxSteps: 12);
            o.Tokenizer = tok;
            o.ValidationSet = validationSet;
            o.EvaluationInterval = 4;
            return o;
        }

        var inMemory = ml.Llm().Trainers.CausalLm(Options(validation)).Fit(train);
        var fromShards = ml.Llm().Trainers.CausalLm(Options(ml.Data.LoadTokenShards(Path.Combine(_root, "validation"))))
            .Fit(ml.Data.LoadTokenShards(Path.Combine(_root, "train")));

        Assert.Equal(inMemory.History.Select(h => h.Loss), fromShards.History.Select(h => h.Loss));
        Assert.Equal(inMemory.History.Select(h => h.ValidationLoss), fromShards.History.Select(h => h.ValidationLoss));
        Assert.Equal(3, fromShards.History.Count(h => h.ValidationLoss is not null));

        // Evaluate reads shards the same way.
        var a = ml.Llm().Evaluate(inMemory, validation);
        var b = ml.Llm().Evaluate(inMemory, ml.Data.LoadTokenShards(Path.Combine(_root, "validation")));
        Assert.Equal(a.Loss, b.Loss);
        Assert.Equal(a.Tokens, b.Tokens);
    }

    [Fact]
    public void PackedConversationsWithMaskAndDocumentsTrainTheSameFromShards()
    {
        var ml = new MLContext(seed: 1);
        var tok = LmTokenizer.Character([TestData.Corpus, "User: \nAssistant: "], endOfTextToken: "<|endoftext|>");
        var records = (TestData.Corpus + TestData.HeldOut).Split('.', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select((line, i) => new Chat { Instruction = line[..(line.Length / 2)], Response = line[(line.Length / 2)..] })
            .ToArray();
        var data = ml.Data.LoadFromEnumerable(records);
        var packed = ml.Transforms.Text.TokenizeChat("Chat", "Instruction", "Response", tokenizer: tok)
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Chat", new TokenPackerOptions { ContextLength = 48, Mode = PackingMode.BestFit }))
            .Fit(data).Transform(data);
        var shards = SaveAndLoad(ml, packed, "chat", new TokenShardOptions
        {
            DocumentIdsColumnName = "DocumentIds",
            LossMaskColumnName = "LossMask",
        });
        Assert.True(shards.Shards.HasDocumentIds);
        Assert.True(shards.Shards.HasLossMask);

        CausalLmTrainerOptions Options() => new()
        {
            Model = GptConfig.Tiny(contextLength: 48) with { VocabularySize = tok.VocabularySize },
            Tokenizer = tok,
            BatchSize = 2,
            MaxSteps = 6,
            LearningRate = 3e-3,
            WarmupSteps = 0,
            Seed = 3,
            NumberOfThreads = 1,
        };
        var inMemory = ml.Llm().Trainers.CausalLm(Options()).Fit(packed);
        var fromShards = ml.Llm().Trainers.CausalLm(Options()).Fit(shards);

        Assert.Equal(inMemory.History.Select(h => h.Loss), fromShards.History.Select(h => h.Loss));
        var a = ml.Llm().Evaluate(inMemory, packed);
        var b = ml.Llm().Evaluate(inMemory, shards);
        Assert.Equal(a.Tokens, b.Tokens);   // the same response tokens are scored
        Assert.Equal(a.Loss, b.Loss, 12);
        shards.Shards.Dispose();
    }

    [Fact]
    public void ResumeFromShardsReproducesTheUninterruptedRun()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var shards = SaveAndLoad(ml, TestData.Blocks(ml, tok, Block, repeats: 3), "resume", new TokenShardOptions { VocabularySize = tok.VocabularySize });
        string checkpoints = Path.Combine(_root, "checkpoints");
        CausalLmTrainerOptions Options(string? dir)
        {
            var o = TestData.TinyOptions(16, maxSteps: 14);
            o.Tokenizer = tok;
            o.Model = GptConfig.Tiny(contextLength: 16) with { Dropout = 0.1 };
            o.CheckpointDirectory = dir;
            o.CheckpointInterval = 4;
            return o;
        }

        var full = ml.Llm().Trainers.CausalLm(Options(null)).Fit(shards).History.Select(h => h.Loss).ToArray();
        using var cts = new CancellationTokenSource();
        var interrupted = Options(checkpoints);
        interrupted.CancellationToken = cts.Token;
        interrupted.Progress = new SyncProgress(p => { if (p.Step == 9) cts.Cancel(); });
        Assert.Throws<OperationCanceledException>(() => ml.Llm().Trainers.CausalLm(interrupted).Fit(shards));

        var resumed = Options(checkpoints);
        resumed.ResumeFrom = checkpoints;
        Assert.Equal(full, ml.Llm().Trainers.CausalLm(resumed).Fit(shards).History.Select(h => h.Loss).ToArray());
        shards.Shards.Dispose();
    }

    [Fact]
    public void ShardsOfAnotherVocabularyAreRefused()
    {
        var ml = new MLContext(seed: 1);
        var tok = TestData.CharTokenizer();
        var shards = SaveAndLoad(ml, TestData.Blocks(ml, tok, Block), "vocab", new TokenShardOptions { VocabularySize = 300 });
        var options = TestData.TinyOptions(16, maxSteps: 2);
        options.Model = GptConfig.Tiny(contextLength: 16) with { VocabularySize = tok.VocabularySize };
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Llm().Trainers.CausalLm(options).Fit(shards));
        Assert.StartsWith(
            $"The training data (token shards in '{Path.Combine(_root, "vocab")}') was written with a vocabulary of 300 tokens, but the model's vocabulary has {tok.VocabularySize} tokens (ids 0..{tok.VocabularySize - 1}): " +
            "the shards come from another tokenizer.", ex.Message);
        shards.Shards.Dispose();
    }

    public sealed class Chat
    {
        public string Instruction { get; set; } = "";
        public string Response { get; set; } = "";
    }
}
