using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Tests.Compatibility;

/// <summary>
/// The saved form of <see cref="GenerationOptions"/> across <see cref="TextGenerationTransformer"/> versions: 0x00010002
/// wrote EarlyStopping as a bool, 0x00010003 writes a <see cref="BeamEarlyStopping"/>.
/// </summary>
[Collection("Torch")]
public class TextGenerationFormatTests
{
    [Fact]
    public void AGenerateTextZipOfTheBoolEarlyStoppingFormatLoadsAndGeneratesWhatItDidThen()
    {
        string folder = TextGenerationFixtureMaker.Folder(source: false);
        var expected = File.ReadAllLines(Path.Combine(folder, TextGenerationFixtureMaker.ExpectedName));
        var ml = new MLContext(seed: 3);
        var loaded = Assert.IsType<TextGenerationTransformer>(Single(ml.Model.Load(Path.Combine(folder, TextGenerationFixtureMaker.ZipName), out _)));
        var options = loaded.GenerationOptions;
        Assert.Equal(BeamEarlyStopping.WhenBeamsFinished, options.EarlyStopping);   // the old true
        Assert.Equal((false, 3, 2, 0.5f, 12, 5, 3), (options.DoSample, options.NumBeams, options.NumReturnSequences, options.LengthPenalty, options.MaxNewTokens, options.Seed, options.NoRepeatNgramSize));
        Assert.Equal(["zz"], options.StopStrings);
        Assert.Equal(2, loaded.BatchSize);
        Assert.Equal(expected, TextGenerationFixtureMaker.CompletionLines(loaded.Transform(TextGenerationFixtureMaker.PromptData(ml))));

        // Saved again, it is written in the current format and reads back the same.
        string path = Path.Combine(Path.GetTempPath(), "llm-gen-v1-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            ml.Model.Save(loaded, TextGenerationFixtureMaker.PromptData(ml).Schema, path);
            var again = Assert.IsType<TextGenerationTransformer>(Single(new MLContext(seed: 4).Model.Load(path, out _)));
            Assert.Equal(BeamEarlyStopping.WhenBeamsFinished, again.GenerationOptions.EarlyStopping);
            Assert.Equal(expected, TextGenerationFixtureMaker.CompletionLines(again.Transform(TextGenerationFixtureMaker.PromptData(ml))));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void EveryEarlyStoppingModeRoundTripsAndTheOldBoolReadsAsHuggingFacesMeaning()
    {
        foreach (var mode in Enum.GetValues<BeamEarlyStopping>())
        {
            var options = new GenerationOptions { NumBeams = 4, DoSample = true, EarlyStopping = mode, StopStrings = ["\n"], Seed = 9 };
            var read = ReadBack(w => GenerationOptionsFormat.Write(w, options), TextGenerationTransformer.EarlyStoppingModeVersion);
            Assert.Equal((mode, 4, true, 9), (read.EarlyStopping, read.NumBeams, read.DoSample, read.Seed));
            Assert.Equal(["\n"], read.StopStrings);
        }

        // The 0x00010002 layout, written field by field: EarlyStopping is one byte (false → Heuristic, true → WhenBeamsFinished).
        foreach (bool early in new[] { false, true })
        {
            var read = ReadBack(w => WriteFirstFormat(w, early), TextGenerationTransformer.FirstVersion);
            Assert.Equal(early ? BeamEarlyStopping.WhenBeamsFinished : BeamEarlyStopping.Heuristic, read.EarlyStopping);
            Assert.Equal((40, false, 3, 0.75f, PromptOverflow.Throw, ContextOverflow.Stop), (read.MaxNewTokens, read.DoSample, read.NumBeams, read.LengthPenalty, read.PromptOverflow, read.ContextOverflow));
            Assert.Equal(["END"], read.StopStrings);
            Assert.Equal([7], read.EosTokenIds);
        }
    }

    private static ITransformer Single(ITransformer loaded) => loaded is TransformerChain<ITransformer> chain ? chain.Single() : loaded;

    private static GenerationOptions ReadBack(Action<BinaryWriter> write, uint version)
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            write(writer);
        }

        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        var options = GenerationOptionsFormat.Read(reader, version);
        Assert.Equal(stream.Length, stream.Position);   // every byte read, none beyond
        return options;
    }

    private static void WriteFirstFormat(BinaryWriter w, bool earlyStopping)
    {
        w.Write(40);            // MaxNewTokens
        w.Write(false);         // DoSample
        w.Write(1f);            // Temperature
        w.Write(0);             // TopK
        w.Write(1f);            // TopP
        w.Write(0f);            // MinP
        w.Write(1f);            // RepetitionPenalty
        w.Write(false);         // has seed
        w.Write(0);             // Seed
        w.Write(1);             // StopStrings
        w.Write("END");
        w.Write(1);             // EosTokenIds
        w.Write(7);
        w.Write(0);             // NoRepeatNgramSize
        w.Write(0f);            // PresencePenalty
        w.Write(0f);            // FrequencyPenalty
        w.Write(0);             // MinNewTokens
        w.Write(0);             // BadWordsIds
        w.Write(1);             // NumReturnSequences
        w.Write(3);             // NumBeams
        w.Write(0.75f);         // LengthPenalty
        w.Write(earlyStopping); // EarlyStopping: a bool in this format
        w.Write((int)PromptOverflow.Throw);
        w.Write((int)ContextOverflow.Stop);
    }
}
