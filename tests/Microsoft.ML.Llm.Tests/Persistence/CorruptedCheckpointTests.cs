namespace Microsoft.ML.Llm.Tests.Persistence;

/// <summary>
/// A damaged trainer checkpoint (a flipped byte or a cut tail) must stop <c>ResumeFrom</c> with a clear
/// <see cref="FormatException"/> naming the file, before any weight is loaded; an intact one still resumes.
/// </summary>
[Collection("Torch")]
public class CorruptedCheckpointTests
{
    private const int Block = 17;

    [Theory]
    [InlineData(0.5, "its XxHash64 checksum 0x")]
    [InlineData(0.95, "its XxHash64 checksum 0x")]
    [InlineData(-1.0, "bytes, but its footer records")]
    public void ADamagedCheckpointIsRejectedWithAMessageNamingTheFile(double where, string detail)
    {
        var tok = TestData.CharTokenizer();
        string dir = Path.Combine(Path.GetTempPath(), "llm-ckpt-corrupt-" + Guid.NewGuid().ToString("N"));
        try
        {
            var ml = new MLContext(seed: 1);
            var data = TestData.Blocks(ml, tok, Block, repeats: 3);
            var first = TestData.TinyOptions(16, maxSteps: 4);
            first.Tokenizer = tok;
            first.CheckpointDirectory = dir;
            first.CheckpointInterval = 4;
            ml.Llm().Trainers.CausalLm(first).Fit(data);
            string path = Directory.GetFiles(dir, "*.ckpt").Single();
            byte[] bytes = File.ReadAllBytes(path);

            // The intact file resumes (and runs two more steps).
            var resume = TestData.TinyOptions(16, maxSteps: 6);
            resume.Tokenizer = tok;
            resume.ResumeFrom = path;
            Assert.Equal(6, ml.Llm().Trainers.CausalLm(resume).Fit(data).History.Count);

            if (where < 0)
            {
                File.WriteAllBytes(path, bytes[..^7]);   // truncated: a crash while copying the file
            }
            else
            {
                int at = (int)(bytes.Length * where);
                bytes[at] ^= 0x10;
                File.WriteAllBytes(path, bytes);
            }

            var ex = Assert.Throws<FormatException>(() => ml.Llm().Trainers.CausalLm(resume).Fit(data));
            Assert.StartsWith($"Checkpoint '{path}' is corrupt: ", ex.Message);
            Assert.Contains(detail, ex.Message);
            Assert.EndsWith("The file was damaged after it was written; resume from an earlier checkpoint.", ex.Message);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }
}
