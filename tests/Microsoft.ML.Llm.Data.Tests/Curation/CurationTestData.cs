using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public sealed class TextRow
{
    public string Text { get; set; } = "";
}

public sealed class TextIdRow
{
    public string Text { get; set; } = "";
    public int Id { get; set; }
}

internal static class CurationTestData
{
    /// <summary>English prose that passes every quality rule with the default thresholds.</summary>
    public const string GoodDocument =
        "The history of the city goes back more than two thousand years, and the old town still shows it.\n" +
        "Most of the buildings that stand along the river were built with stone from the hills to the north.\n" +
        "In the summer the streets fill with visitors who come to see the cathedral and the market square.\n" +
        "The local museum has a large collection of paintings that were made by artists of the region.\n" +
        "Many families have lived here for generations, and they are proud of the traditions of their town.\n" +
        "A short walk from the centre takes you to the gardens, where concerts are held on warm evenings.";

    public static IDataView Load(MLContext ml, params string[] texts) => ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t }));

    public static IDataView LoadWithIds(MLContext ml, IEnumerable<string> texts) =>
        ml.Data.LoadFromEnumerable(texts.Select((t, i) => new TextIdRow { Text = t, Id = i }).ToArray());

    public static List<string> Column(IDataView data, string column = "Text")
    {
        var result = new List<string>();
        var col = data.Schema[column];
        using var cursor = data.GetRowCursor([col]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(col);
        ReadOnlyMemory<char> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.ToString());
        }
        return result;
    }

    public static List<int> Ids(IDataView data)
    {
        var result = new List<int>();
        var col = data.Schema["Id"];
        using var cursor = data.GetRowCursor([col]);
        var getter = cursor.GetGetter<int>(col);
        int value = 0;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value);
        }
        return result;
    }

    /// <summary>A seeded pseudo-document of <paramref name="words"/> words from a 2,000-word vocabulary.</summary>
    public static string RandomDocument(Random rng, int words)
    {
        var parts = new string[words];
        for (int i = 0; i < words; i++)
            parts[i] = "w" + rng.Next(2000).ToString("x");
        return string.Join(' ', parts);
    }

    public static string TempPath(string name) => Path.Combine(Path.GetTempPath(), $"llm-curation-{Environment.ProcessId}-{Guid.NewGuid():N}-{name}");
}
