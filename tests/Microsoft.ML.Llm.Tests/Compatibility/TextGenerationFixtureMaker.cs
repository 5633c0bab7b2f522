using System.Text.Json;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Tests.Compatibility;

/// <summary>
/// Writes Fixtures/text-generation-v1: a <c>GenerateText</c> transformer saved by the code of component version
/// 0x00010002 (GenerationOptions.EarlyStopping a bool, written as one byte), and the completions it produced. Run by hand,
/// once, with that code (commit 4b7803e): remove the Skip, run <c>dotnet test tests/Microsoft.ML.Llm.Tests -c Release
/// --filter FullyQualifiedName~TextGenerationFixtureMaker</c>, put the Skip back, commit the files it wrote. Never run in
/// the suite: the fixture must keep what the OLD code wrote (where EarlyStopping was a bool: this maker ran with
/// <c>EarlyStopping = true</c>). expected.txt was recorded again from the same zip when beam search took Hugging Face's
/// order of the logits processors (after the log-softmax); the folder's README says why the completions changed.
/// </summary>
[Collection("Torch")]
public class TextGenerationFixtureMaker
{
    public const string FolderName = "text-generation-v1";

    public const string ZipName = "generation.zip";

    public const string ExpectedName = "expected.txt";

    public static readonly string[] Prompts = ["TO BE", "whether", "The slings and", "o"];

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }

    /// <summary>The fixture's folder in the source tree (the maker writes there) or next to the test binaries (tests read there).</summary>
    public static string Folder(bool source)
    {
        if (!source)
        {
            return Path.Combine(AppContext.BaseDirectory, "Fixtures", FolderName);
        }

        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Microsoft.ML.Llm.Tests.csproj")))
        {
            directory = directory.Parent;
        }

        return Path.Combine(directory!.FullName, "Fixtures", FolderName);
    }

    public static IDataView PromptData(MLContext ml) => ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));

    /// <summary>Each prompt's completions, one JSON array per line.</summary>
    public static string[] CompletionLines(IDataView output) =>
        output.GetColumn<VBuffer<ReadOnlyMemory<char>>>("Completion")
            .Select(v => JsonSerializer.Serialize(v.DenseValues().Select(c => c.ToString()).ToArray()))
            .ToArray();

    [Fact(Skip = "fixture maker: run by hand")]
    public void MakeTextGenerationFixture()
    {
        string folder = Folder(source: true);
        Directory.CreateDirectory(folder);
        var ml = new MLContext(seed: 1);
        var pipeline = Generation.TextGenerationTransformerTests.TrainedPipeline.Train(ml, steps: 10);
        var lm = pipeline.LastTransformer;
        var options = new TextGenerationOptions
        {
            BatchSize = 2,
            Generation = new GenerationOptions
            {
                DoSample = false,
                NumBeams = 3,
                NumReturnSequences = 2,
                EarlyStopping = BeamEarlyStopping.WhenBeamsFinished,
                LengthPenalty = 0.5f,
                MaxNewTokens = 12,
                EosTokenIds = [lm.Tokenizer!.Encode(".")[0]],
                StopStrings = ["zz"],
                Seed = 5,
                NoRepeatNgramSize = 3,
            },
        };
        var generate = ml.Llm().GenerateText(pipeline, options).Fit(PromptData(ml));
        ml.Model.Save(generate, PromptData(ml).Schema, Path.Combine(folder, ZipName));
        File.WriteAllLines(Path.Combine(folder, ExpectedName), CompletionLines(generate.Transform(PromptData(ml))));
    }
}
