using System.IO.Compression;
using System.Text;
using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class CurationRobustnessTests
{
    private sealed class NullableRow
    {
        public string? Text { get; set; }
        public int Id { get; set; }
    }

    [Fact]
    public void NullAndEmptyStringsFollowTheDocumentedRules()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new NullableRow { Text = null, Id = 0 },
            new NullableRow { Text = "", Id = 1 },
            new NullableRow { Text = GoodDocument, Id = 2 },
            new NullableRow { Text = null, Id = 3 },
        });
        // normalizer: null and empty become empty text
        var normalized = ml.Transforms.Text.NormalizeForLm("Clean", "Text").Fit(data).Transform(data);
        Assert.Equal(["", "", GoodDocument, ""], Column(normalized, "Clean"));
        // quality filter: empty text has no words and is dropped (gopher_short_doc)
        var quality = ml.Transforms.Text.FilterByQuality("Text").Fit(data);
        Assert.Equal([2], Ids(quality.Transform(data)));
        Assert.Equal(3, quality.LastReport!.RejectedByRule["gopher_short_doc"]);
        // dedup: rows without words are kept and never clustered, in both modes
        foreach (var mode in new[] { DeduplicationMode.Exact, DeduplicationMode.MinHash })
        {
            var dedup = ml.Transforms.Text.RemoveNearDuplicates("Text", mode).Fit(data);
            Assert.Equal([0, 1, 2, 3], Ids(dedup.Transform(data)));
            Assert.Equal(3, dedup.LastReport!.EmptyRows);
        }
        // language filter: no letters, no language
        Assert.Equal([2], Ids(ml.Transforms.Text.FilterByLanguage("Text", ["en"]).Fit(data).Transform(data)));
    }

    [Fact]
    public void AZipFromANewerIncompatibleVersionGetsAClearError()
    {
        var ml = new MLContext(seed: 1);
        var data = Load(ml, GoodDocument);
        var model = ml.Transforms.Text.FilterByQuality("Text").Fit(data);
        string path = TempPath("future.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            // Rewrite the header of the component as a future format: written and readable from version 2.1.
            using (var zip = ZipFile.Open(path, ZipArchiveMode.Update))
            {
                var entry = zip.Entries.Single(e => e.FullName.EndsWith("Model.key", StringComparison.Ordinal) && Contains(e, "LMQUALFL"));
                byte[] bytes;
                using (var s = entry.Open())
                { using var ms = new MemoryStream(); s.CopyTo(ms); bytes = ms.ToArray(); }
                int at = bytes.AsSpan().IndexOf(Encoding.ASCII.GetBytes("LMQUALFL"));
                BitConverter.TryWriteBytes(bytes.AsSpan(at + 8), 0x00020001u);
                BitConverter.TryWriteBytes(bytes.AsSpan(at + 12), 0x00020001u);
                string name = entry.FullName;
                entry.Delete();
                using var w = zip.CreateEntry(name).Open();
                w.Write(bytes);
            }
            var error = Assert.ThrowsAny<Exception>(() => ml.Model.Load(path, out _));
            var messages = string.Join(" | ", Chain(error).Select(e => e.Message));
            Assert.Contains("The model zip holds 'LlmTextQualityFilter' format version 0x00020001, readable from 0x00020001; " +
                "this build of Microsoft.ML.Llm.Data reads versions 0x00010001 to 0x00010002. Update the package to load it.", messages);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static bool Contains(ZipArchiveEntry entry, string ascii)
    {
        using var s = entry.Open();
        using var ms = new MemoryStream();
        s.CopyTo(ms);
        return ms.ToArray().AsSpan().IndexOf(Encoding.ASCII.GetBytes(ascii)) >= 0;
    }

    private static IEnumerable<Exception> Chain(Exception? e)
    {
        for (; e != null; e = e.InnerException)
            yield return e;
    }
}
