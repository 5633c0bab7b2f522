using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Small corpora and token-block data views shared by the tests.</summary>
internal static class TestData
{
    /// <summary>A short repetitive text a tiny model can memorise.</summary>
    public const string Corpus =
        "to be or not to be that is the question. whether tis nobler in the mind to suffer the slings and arrows of outrageous fortune. ";

    /// <summary>Different sentences over the same characters as <see cref="Corpus"/>.</summary>
    public const string HeldOut =
        "whether the question is nobler than fortune to suffer the mind of arrows and slings is not to be. the outrageous mind is in question. ";

    public sealed class Block
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];
    }

    public sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    /// <summary>Character tokenizer over <see cref="Corpus"/>.</summary>
    public static LmTokenizer CharTokenizer() => LmTokenizer.Character([Corpus]);

    /// <summary>Cuts the encoded corpus (repeated) into blocks of <paramref name="blockLength"/> tokens.</summary>
    public static IDataView Blocks(MLContext ml, LmTokenizer tokenizer, int blockLength, int repeats = 4, int stride = 0)
    {
        var ids = tokenizer.Encode(string.Concat(Enumerable.Repeat(Corpus, repeats)));
        if (stride <= 0)
            stride = blockLength;
        var rows = new List<Block>();
        for (int s = 0; s + blockLength <= ids.Length; s += stride)
            rows.Add(new Block { Tokens = ids[s..(s + blockLength)] });
        return ml.Data.LoadFromEnumerable(rows, SchemaFor(blockLength));
    }

    /// <summary>Non-overlapping blocks of <paramref name="text"/>.</summary>
    public static IDataView BlocksOf(MLContext ml, LmTokenizer tokenizer, string text, int blockLength)
    {
        var ids = tokenizer.Encode(text);
        var rows = new List<Block>();
        for (int s = 0; s + blockLength <= ids.Length; s += blockLength)
            rows.Add(new Block { Tokens = ids[s..(s + blockLength)] });
        return ml.Data.LoadFromEnumerable(rows, SchemaFor(blockLength));
    }

    /// <summary>Rows of explicit token ids as a fixed-size Int32 vector column "Tokens".</summary>
    public static IDataView FromTokens(MLContext ml, params int[][] rows) =>
        ml.Data.LoadFromEnumerable(rows.Select(r => new Block { Tokens = r }), SchemaFor(rows.Length == 0 ? 0 : rows[0].Length));

    private static SchemaDefinition SchemaFor(int length)
    {
        var schema = SchemaDefinition.Create(typeof(Block));
        schema[nameof(Block.Tokens)].ColumnType = new VectorDataViewType(NumberDataViewType.Int32, length);
        return schema;
    }

    /// <summary>Options for a fast tiny run.</summary>
    public static CausalLmTrainerOptions TinyOptions(int contextLength, long maxSteps) => new()
    {
        Model = GptConfig.Tiny(contextLength: contextLength),
        BatchSize = 4,
        MaxSteps = maxSteps,
        LearningRate = 3e-3,
        MinLearningRate = 3e-4,
        WarmupSteps = 5,
        Beta2 = 0.99,
        WeightDecay = 0.0,
        EvaluationInterval = 10,
        LogInterval = 1,
        Seed = 7,
        NumberOfThreads = 1,
    };
}
