using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Tests;

/// <summary>Every bad input is reported with the option/column, the value and what is accepted, before any step.</summary>
[Collection("Torch")]
public class BadInputTests
{
    private static readonly MLContext Ml = new(seed: 1);

    private static T Fails<T>(CausalLmTrainerOptions options, IDataView data) where T : Exception
    {
        bool stepped = false;
        options.Progress = new CausalLmTrainerTests.SyncProgress(_ => stepped = true);
        var ex = Assert.Throws<T>(() => Ml.Llm().Trainers.CausalLm(options).Fit(data));
        Assert.False(stepped, "no training step may run before bad input is reported");
        return ex;
    }

    private static IDataView Good() => TestData.FromTokens(Ml, [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]);

    private static CausalLmTrainerOptions Options() => new() { Model = GptConfig.Tiny(16, 8), MaxSteps = 2, Seed = 1 };

    [Fact]
    public void WrongColumnType()
    {
        var data = Ml.Data.LoadFromEnumerable(new[] { new TestData.TextRow { Text = "abc" } });
        var ex = Fails<ArgumentOutOfRangeException>(new CausalLmTrainerOptions { TokensColumnName = "Text", Model = GptConfig.Tiny(16, 8) }, data);
        Assert.StartsWith("Schema mismatch for input column 'Text': expected a vector of Int32, Int64, UInt32 or UInt16 token ids, got String.", ex.Message);
    }

    [Fact]
    public void MissingColumn()
    {
        var ex = Fails<ArgumentOutOfRangeException>(new CausalLmTrainerOptions { TokensColumnName = "Ids", Model = GptConfig.Tiny(16, 8) }, Good());
        Assert.StartsWith("Input column 'Ids' (TokensColumnName) not found in the data. Available columns: Tokens.", ex.Message);
    }

    [Fact]
    public void EmptyData()
    {
        var ex = Fails<ArgumentException>(Options(), TestData.FromTokens(Ml));
        Assert.StartsWith("The training data has no rows in column 'Tokens'; at least one block of tokens is needed.", ex.Message);
    }

    [Fact]
    public void BlockShorterThanTwoTokens()
    {
        var ex = Fails<ArgumentException>(Options(), TestData.FromTokens(Ml, [3]));
        Assert.StartsWith("Row 0 of the training data has 1 token(s) in column 'Tokens'; a block needs at least 2 tokens", ex.Message);
    }

    [Fact]
    public void TokenIdOutsideTheVocabulary()
    {
        var ex = Fails<ArgumentOutOfRangeException>(Options(), TestData.FromTokens(Ml, [1, 2, 3, 4, 5], [1, 2, 16, 4, 5]));
        Assert.StartsWith("Row 1 of the training data has token id 16 in column 'Tokens', but the model's vocabulary has 16 tokens (ids 0..15).", ex.Message);
    }

    [Fact]
    public void ContextLongerThanTheModelsMaximum()
    {
        var options = Options();
        options.Model = GptConfig.Tiny(16, 3);
        var ex = Fails<ArgumentOutOfRangeException>(options, Good());
        Assert.StartsWith("The data's blocks have 5 tokens (context 4), longer than the model's maximum context GptConfig.ContextLength = 3.", ex.Message);
    }

    [Theory]
    [InlineData(0.0, "Option 'LearningRate' must be a positive finite number; got 0.")]
    [InlineData(-1e-3, "Option 'LearningRate' must be a positive finite number; got -0.001.")]
    [InlineData(double.NaN, "Option 'LearningRate' must be a positive finite number; got NaN.")]
    public void BadLearningRate(double lr, string message)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { LearningRate = lr }));
        Assert.StartsWith(message, ex.Message);
        Assert.Equal("LearningRate", ex.ParamName);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-4)]
    public void BadBatchSize(int batch)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => Ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { BatchSize = batch }));
        Assert.StartsWith($"Option 'BatchSize' must be a positive integer; got {batch}.", ex.Message);
    }

    [Fact]
    public void BadValidationBlockLength()
    {
        var options = Options();
        options.ValidationSet = TestData.FromTokens(Ml, [1, 2, 3]);
        var ex = Fails<ArgumentException>(options, Good());
        Assert.StartsWith("Row 0 of the validation data has 3 tokens in column 'Tokens', expected 5 like the training data.", ex.Message);
    }

    [Fact]
    public void EarlyStoppingWithoutValidation()
    {
        var ex = Assert.Throws<ArgumentException>(() => Ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions { EarlyStoppingPatience = 2 }));
        Assert.StartsWith("Option 'EarlyStoppingPatience' is set but 'ValidationSet' is null; early stopping needs validation data.", ex.Message);
    }

    [Fact]
    public void ResumeFromMissingPath()
    {
        var options = Options();
        options.ResumeFrom = "/nonexistent/ckpt";
        var ex = Fails<FileNotFoundException>(options, Good());
        Assert.Equal("Option 'ResumeFrom': '/nonexistent/ckpt' is neither a checkpoint file nor a directory.", ex.Message);
    }
}
