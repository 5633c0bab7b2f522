using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class NearDuplicateRemoverTests
{
    private static string Edit(string doc, Random rng, int edits)
    {
        var words = doc.Split(' ');
        for (int i = 0; i < edits; i++)
            words[rng.Next(words.Length)] = "edit" + rng.Next(100000);
        return string.Join(' ', words);
    }

    [Fact]
    public void ExactModeRemovesRepeatsOfNormalizedText()
    {
        var ml = new MLContext(seed: 1);
        var data = LoadWithIds(ml, ["Hello, World! 2024", "hello world 1999", "Héllo   world 2024.", "Other text", "", "other TEXT", ""]);
        var model = ml.Transforms.Text.RemoveNearDuplicates("Text", DeduplicationMode.Exact).Fit(data);
        // lowercase, accents stripped, punctuation and spacing ignored, digits -> 0; empty rows kept
        Assert.Equal([0, 3, 4, 6], Ids(model.Transform(data)));
        var r = model.LastReport!;
        Assert.Equal((7L, 4L, 2L, 3L, 2L), (r.RowsIn, r.RowsOut, r.Clusters, r.RemovedAsDuplicate, r.EmptyRows));
    }

    [Fact]
    public void MinHashRemovesNearDuplicatesKeepsTheFirstAndIsDeterministic()
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(7);
        var originals = Enumerable.Range(0, 50).Select(_ => RandomDocument(rng, 300)).ToList();
        var texts = new List<string>(originals);
        // rows 50..59: 3 word edits of originals 0..9 (Jaccard of 5-gram shingles about 0.9)
        for (int i = 0; i < 10; i++)
            texts.Add(Edit(originals[i], rng, 3));
        // rows 60..69: 150 word edits (Jaccard far below 0.5)
        for (int i = 0; i < 10; i++)
            texts.Add(Edit(originals[10 + i], rng, 150));
        texts.Add("");
        var data = LoadWithIds(ml, texts);
        var model = ml.Transforms.Text.RemoveNearDuplicates("Text").Fit(data);
        var output = model.Transform(data);
        var expected = Enumerable.Range(0, 50).Concat(Enumerable.Range(60, 11)).ToList();
        Assert.Equal(expected, Ids(output));
        Assert.Equal(expected, Ids(output));
        var again = ml.Transforms.Text.RemoveNearDuplicates("Text").Fit(data).Transform(data);
        Assert.Equal(expected, Ids(again));
        var r = model.LastReport!;
        Assert.Equal((71L, 61L, 10L, 10L, 1L), (r.RowsIn, r.RowsOut, r.Clusters, r.RemovedAsDuplicate, r.EmptyRows));
        Assert.Single(output.GetRowCursorSet([output.Schema["Id"]], 4));
    }

    [Fact]
    public void VerificationRejectsCandidatesBelowTheJaccardThreshold()
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(3);
        string a = RandomDocument(rng, 400);
        string b = Edit(a, rng, 12);   // still an LSH candidate, Jaccard of shingles about 0.75-0.85
        var data = LoadWithIds(ml, [a, b]);
        var plain = ml.Transforms.Text.RemoveNearDuplicates("Text").Fit(data);
        Assert.Equal([0], Ids(plain.Transform(data)));
        var strict = ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { Verify = true, JaccardThreshold = 0.95 }).Fit(data);
        Assert.Equal([0, 1], Ids(strict.Transform(data)));
        Assert.Equal(1, strict.LastReport!.CandidatePairs);
        Assert.Equal(1, strict.LastReport.RejectedPairs);
        var loose = ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { Verify = true, JaccardThreshold = 0.5 }).Fit(data);
        Assert.Equal([0], Ids(loose.Transform(data)));
        Assert.Equal(0, loose.LastReport!.RejectedPairs);
    }

    [Fact]
    public void JaccardOfSortedSets()
    {
        Assert.Equal(0.5, NearDuplicateRemoverTransformer.Jaccard([1UL, 2, 3], [2UL, 3, 4]));
        Assert.Equal(1.0, NearDuplicateRemoverTransformer.Jaccard([], []));
        Assert.Equal(0.0, NearDuplicateRemoverTransformer.Jaccard([1UL], [2UL]));
    }

    [Theory]
    [InlineData(DeduplicationMode.MinHash)]
    [InlineData(DeduplicationMode.Exact)]
    public void ReferenceDataDecontaminatesAndSurvivesSaveLoad(DeduplicationMode mode)
    {
        var ml = new MLContext(seed: 1);
        var rng = new Random(11);
        var eval = Enumerable.Range(0, 5).Select(_ => RandomDocument(rng, 200)).ToList();
        var corpus = Enumerable.Range(0, 20).Select(_ => RandomDocument(rng, 200)).ToList();
        corpus[4] = mode == DeduplicationMode.Exact ? eval[2].ToUpperInvariant() : Edit(eval[2], rng, 2);
        corpus[9] = eval[0];
        var data = LoadWithIds(ml, corpus);
        var options = new NearDuplicateRemoverOptions { Mode = mode, ReferenceData = Load(ml, eval.ToArray()), Verify = mode == DeduplicationMode.MinHash };
        var estimator = ml.Transforms.Text.RemoveNearDuplicates("Text", options);
        var model = estimator.Fit(data);
        Assert.Equal(5, estimator.Fit(data).ReferenceCount); // fitting again reads the reference data again
        var expected = Enumerable.Range(0, 20).Where(i => i != 4 && i != 9).ToList();
        Assert.Equal(expected, Ids(model.Transform(data)));
        Assert.Equal(2, model.LastReport!.RemovedAsReferenceMatch);
        Assert.Equal(5, model.ReferenceCount);

        string path = TempPath("dedup.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            Assert.Equal(expected, Ids(loaded.Transform(data)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void BadOptionsAndColumnsGetClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var bands = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { Bands = 0 }));
        Assert.StartsWith("Option 'Bands' must be at least 1; got 0.", bands.Message);
        var threshold = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { JaccardThreshold = -0.1 }));
        Assert.StartsWith("Option 'JaccardThreshold' must be between 0 and 1; got -0.1.", threshold.Message);
        var data = Load(ml, "a b c");
        var refColumn = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RemoveNearDuplicates("Text",
            new NearDuplicateRemoverOptions { ReferenceData = data, ReferenceColumnName = "Question" }).Fit(data));
        Assert.StartsWith("Could not find reference column 'Question'", refColumn.Message);
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RemoveNearDuplicates("Body").Fit(data));
        Assert.StartsWith("Could not find input column 'Body'", missing.Message);
    }
}
