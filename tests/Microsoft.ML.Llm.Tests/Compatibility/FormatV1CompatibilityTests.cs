namespace Microsoft.ML.Llm.Tests.Compatibility;

/// <summary>Zips and checkpoints of every earlier format (format-v1: 0x00010001, no checksums; format-v2: 0x00010002,
/// checkpoint format 2) still load and give the same results.</summary>
[Collection("Torch")]
public class FormatV1CompatibilityTests
{
    [Theory]
    [InlineData("format-v1")]
    [InlineData("format-v2")]
    public void OldPipelineZipLoadsAndReproducesTheRecordedOutputs(string fixture)
    {
        string folder = FormatV1Fixture.OutputFolder(fixture);
        var expected = Expected(folder).Where(l => !l.StartsWith("resumed ", StringComparison.Ordinal)).ToList();
        AssertLines(expected, FormatV1Fixture.RecordOutputs(folder));
    }

    [Theory]
    [InlineData("format-v1")]
    [InlineData("format-v2")]
    public void OldCheckpointResumesToTheRecordedLosses(string fixture)
    {
        string folder = FormatV1Fixture.OutputFolder(fixture);
        var expected = Expected(folder).Where(l => l.StartsWith("resumed ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, expected.Count);
        AssertLines(expected, FormatV1Fixture.RecordResume(folder, Path.Combine(folder, FormatV1Fixture.CheckpointName)));
    }

    private static List<string> Expected(string folder) =>
        File.ReadAllLines(Path.Combine(folder, FormatV1Fixture.ExpectedName))
            .Where(l => !l.StartsWith("original ", StringComparison.Ordinal))
            .ToList();

    private static void AssertLines(List<string> expected, List<string> actual)
    {
        for (int i = 0; i < Math.Min(expected.Count, actual.Count); i++)
            Assert.True(expected[i] == actual[i], $"line {i + 1} differs:\nexpected: {expected[i]}\nactual:   {actual[i]}");
        Assert.Equal(expected.Count, actual.Count);
    }
}
