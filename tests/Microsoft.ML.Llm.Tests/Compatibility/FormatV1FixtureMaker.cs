using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests.Compatibility;

/// <summary>
/// Writes the fixture folder <see cref="FormatV1Fixture.MakerFolderName"/> (see Fixtures/format-v1/README.md). Run by hand, once, with the code whose format the
/// fixture freezes: remove the Skip, run <c>dotnet test tests/Microsoft.ML.Llm.Tests -c Release --filter
/// FullyQualifiedName~FormatV1FixtureMaker</c>, put the Skip back, and commit the files it wrote. Never run in the suite:
/// the fixture must keep what the OLD code wrote.
/// </summary>
[Collection("Torch")]
public class FormatV1FixtureMaker
{
    [Fact(Skip = "fixture maker: run by hand")]
    public void MakeFormatV1Fixture()
    {
        string folder = FormatV1Fixture.SourceFolder(FormatV1Fixture.MakerFolderName);
        Directory.CreateDirectory(folder);
        string work = Path.Combine(Path.GetTempPath(), "llm-fixture-" + Guid.NewGuid().ToString("N"));
        try
        {
            // 30 distinct English documents over the words of TestData.Corpus (seeded), one per line.
            var words = TestData.Corpus.Replace(".", "", StringComparison.Ordinal).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var rng = new Random(42);
            var corpus = new List<string>();
            for (int d = 0; d < 30; d++)
            {
                var sentences = Enumerable.Range(0, 3).Select(_ => string.Join(' ', Enumerable.Range(0, rng.Next(8, 13)).Select(_ => words[rng.Next(words.Length)])) + ".");
                corpus.Add($"document {d}: " + string.Join(' ', sentences));
            }
            File.WriteAllLines(Path.Combine(folder, FormatV1Fixture.CorpusName), corpus);

            var ml = new MLContext(seed: 1);
            var docs = ml.Data.LoadFromEnumerable(corpus.Select(t => new TestData.TextRow { Text = t }));
            var reference = ml.Data.LoadFromEnumerable(new[] { new TestData.TextRow { Text = corpus[5] } });
            var prep = ml.Transforms.Text.NormalizeForLm("Text", "Text")
                .Append(ml.Transforms.Text.DetectLanguage("Text"))
                .Append(ml.Transforms.Text.FilterByLanguage("Text", ["en"], minScore: 0.3))
                .Append(ml.Transforms.Text.FilterByQuality("Text", QualityFilterMode.Annotate))
                .Append(ml.Transforms.Text.RemoveNearDuplicates("Text", new NearDuplicateRemoverOptions { ReferenceData = reference }))
                .Append(ml.Transforms.Text.TokenizeForLm("Ids", "Text", vocabularySize: 300))
                .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: 16))
                .Fit(docs);
            var options = FormatV1Fixture.TrainerOptions(GptConfig.Tiny(null, 16) with { EmbeddingSize = 16, LayerCount = 1, HeadCount = 1 });
            options.CheckpointDirectory = work;
            options.CheckpointInterval = 3;
            var lm = ml.Llm().Trainers.CausalLm(options).Fit(prep.Transform(docs));
            ml.Model.Save(prep.Append(lm), docs.Schema, Path.Combine(folder, FormatV1Fixture.ZipName));
            string checkpoint = Path.Combine(folder, FormatV1Fixture.CheckpointName);
            File.Copy(Path.Combine(work, FormatV1Fixture.CheckpointName), checkpoint, overwrite: true);

            var expected = FormatV1Fixture.RecordOutputs(folder);
            expected.AddRange(FormatV1Fixture.RecordResume(folder, checkpoint));
            expected.Add("original losses: " + string.Join(' ', lm.History.Select(h => h.Step + ":" + h.Loss.ToString("R", System.Globalization.CultureInfo.InvariantCulture))));
            File.WriteAllLines(Path.Combine(folder, FormatV1Fixture.ExpectedName), expected);
        }
        finally
        {
            if (Directory.Exists(work))
                Directory.Delete(work, recursive: true);
        }
    }
}
