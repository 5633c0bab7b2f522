namespace Microsoft.ML.Llm.Tests.Generation;

public class GenerationOptionsTests
{
    [Fact]
    public void DefaultsMatchHuggingFaceAndTurnEveryFilterOff()
    {
        var options = new GenerationOptions();
        Assert.Equal((256, true, 1.0f, 0, 1.0f, 0f, 1.0f, (int?)null),
            (options.MaxNewTokens, options.DoSample, options.Temperature, options.TopK, options.TopP, options.MinP, options.RepetitionPenalty, options.Seed));
        Assert.Empty(options.StopStrings);
        Assert.Empty(options.EosTokenIds);
        options.Validate();
        Assert.NotSame(options.StopStrings, new GenerationOptions().StopStrings);
    }

    public static TheoryData<GenerationOptions, string> OutOfRange() => new()
    {
        { new() { MaxNewTokens = 0 }, "GenerationOptions.MaxNewTokens is 0; expected an integer of at least 1. (Parameter 'MaxNewTokens')" },
        { new() { Temperature = 0 }, "GenerationOptions.Temperature is 0; expected a positive finite number (1 leaves the logits unchanged). (Parameter 'Temperature')" },
        { new() { Temperature = float.NaN }, "GenerationOptions.Temperature is NaN; expected a positive finite number (1 leaves the logits unchanged). (Parameter 'Temperature')" },
        { new() { TopK = -1 }, "GenerationOptions.TopK is -1; expected a non-negative integer (0 turns top-k off). (Parameter 'TopK')" },
        { new() { TopP = 0 }, "GenerationOptions.TopP is 0; expected a number in (0, 1] (1 turns top-p off). (Parameter 'TopP')" },
        { new() { TopP = 1.5f }, "GenerationOptions.TopP is 1.5; expected a number in (0, 1] (1 turns top-p off). (Parameter 'TopP')" },
        { new() { TopP = float.NaN }, "GenerationOptions.TopP is NaN; expected a number in (0, 1] (1 turns top-p off). (Parameter 'TopP')" },
        { new() { MinP = -0.1f }, "GenerationOptions.MinP is -0.1; expected a number in [0, 1] (0 turns min-p off). (Parameter 'MinP')" },
        { new() { MinP = float.NaN }, "GenerationOptions.MinP is NaN; expected a number in [0, 1] (0 turns min-p off). (Parameter 'MinP')" },
        { new() { RepetitionPenalty = 0 }, "GenerationOptions.RepetitionPenalty is 0; expected a positive finite number (1 turns the penalty off). (Parameter 'RepetitionPenalty')" },
        { new() { RepetitionPenalty = float.PositiveInfinity }, "GenerationOptions.RepetitionPenalty is Infinity; expected a positive finite number (1 turns the penalty off). (Parameter 'RepetitionPenalty')" },
    };

    [Theory]
    [MemberData(nameof(OutOfRange))]
    public void ValidateNamesTheOptionTheValueAndTheRange(GenerationOptions options, string message)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.Equal(message, ex.Message);
    }

    [Fact]
    public void ValidateChecksTheLists()
    {
        var ex = Assert.Throws<ArgumentException>(new GenerationOptions { StopStrings = ["\n\n", ""] }.Validate);
        Assert.Equal("GenerationOptions.StopStrings[1] is empty; expected a non-empty string. (Parameter 'StopStrings')", ex.Message);
        ex = Assert.Throws<ArgumentException>(new GenerationOptions { EosTokenIds = [50256, -1] }.Validate);
        Assert.Equal("GenerationOptions.EosTokenIds[1] is -1; expected a non-negative token id. (Parameter 'EosTokenIds')", ex.Message);
        var nullEx = Assert.Throws<ArgumentNullException>(new GenerationOptions { StopStrings = null! }.Validate);
        Assert.Equal("GenerationOptions.StopStrings is null; expected a list, empty for none. (Parameter 'StopStrings')", nullEx.Message);
        new GenerationOptions { StopStrings = ["\n\n"], EosTokenIds = [0, 50256], MinP = 1, TopP = 1, Seed = -5 }.Validate();
    }
}
