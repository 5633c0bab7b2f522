namespace Microsoft.ML.Llm.Data.Tests.Tokenization;

internal static class TestData
{
    /// <summary>samples/data/tinyshakespeare.txt, found by walking up from the test binaries.</summary>
    public static string TinyShakespearePath { get; } = Find();

    private static string Find()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "samples", "data", "tinyshakespeare.txt");
            if (File.Exists(candidate))
                return candidate;
        }
        throw new FileNotFoundException("samples/data/tinyshakespeare.txt was not found above " + AppContext.BaseDirectory);
    }

    public static string TempPath(string extension) => Path.Combine(Path.GetTempPath(), $"llm-tok-{Guid.NewGuid():N}{extension}");
}
