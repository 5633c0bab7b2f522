using System.Buffers.Binary;
using System.IO.Compression;
using System.Reflection;
using Microsoft.ML.Llm.Tests.Compatibility;
using Xunit.Abstractions;

namespace Microsoft.ML.Llm.Tests.Persistence;

/// <summary>
/// A damaged model zip (bytes flipped or cut inside one entry, the zip container kept valid) must raise a clear
/// <see cref="FormatException"/> naming the entry, the component and the zip, never load silently.
/// </summary>
[Collection("Torch")]
public class CorruptedZipTests(ITestOutputHelper output)
{
    /// <summary>Every entry our components write in the full pipeline zip, with the loader signature of the component that owns it.</summary>
    public static TheoryData<string, string> Entries => new()
    {
        { "TransformerChain/Transform_000/Model.key", "LlmTextNormalizer" },
        { "TransformerChain/Transform_001/Model.key", "LlmLanguageDetector" },
        { "TransformerChain/Transform_002/Model.key", "LlmLanguageFilter" },
        { "TransformerChain/Transform_003/Model.key", "LlmTextQualityFilter" },
        { "TransformerChain/Transform_004/Model.key", "LlmNearDupRemover" },
        { "TransformerChain/Transform_004/Reference", "LlmNearDupRemover" },
        { "TransformerChain/Transform_005/Model.key", "LmTokenizingTransformer" },
        { "TransformerChain/Transform_006/Model.key", "TokenPackingTransformer" },
        { "TransformerChain/Transform_007/Model.key", "CausalLmTransformer" },
        { "TransformerChain/Transform_007/Tokenizer", "CausalLmTransformer" },
        { "TransformerChain/Transform_007/Weights", "CausalLmTransformer" },
        { "TransformerChain/Transform_007/History", "CausalLmTransformer" },
    };

    [Theory]
    [MemberData(nameof(Entries))]
    public void AFlippedByteInAnEntryRaisesAChecksumErrorNamingEntryComponentAndZip(string entry, string component)
    {
        string dir = NewDirectory();
        try
        {
            string good = SaveCurrentFormatZip(dir);
            var entries = ReadEntries(good);
            var bytes = entries[entry];
            var (start, length) = ContentRange(entry, bytes);
            bytes[start + length / 2] ^= 0x10;
            string bad = Path.Combine(dir, "flipped.zip");
            WriteEntries(bad, entries);

            var e = Cause(Assert.ThrowsAny<Exception>(() => Load(bad)));
            Assert.StartsWith($"Entry '{entry}' of component '{component}' in model zip '{bad}' is corrupt: its XxHash64 checksum 0x", e.Message);
            Assert.EndsWith("The file was damaged after it was saved; save the model again or restore a good copy.", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void ATruncatedSideEntryRaisesTheSameClearError()
    {
        string dir = NewDirectory();
        try
        {
            var entries = ReadEntries(SaveCurrentFormatZip(dir));
            const string entry = "TransformerChain/Transform_007/Weights";
            int total = entries[entry].Length;
            entries[entry] = entries[entry][..(total - 100)];
            string bad = Path.Combine(dir, "truncated.zip");
            WriteEntries(bad, entries);

            var e = Cause(Assert.ThrowsAny<Exception>(() => Load(bad)));
            Assert.Equal(
                $"Entry '{entry}' of component 'CausalLmTransformer' in model zip '{bad}' is corrupt: it holds {total - 100} bytes, but its footer " +
                $"records {BinaryPrimitives.ReadInt64LittleEndian(entries[entry].AsSpan(total - 116))} bytes of content and a 16-byte footer (truncated or damaged). " +
                "The file was damaged after it was saved; save the model again or restore a good copy.", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void SixtyCorruptedCopiesAllRaiseAClearError()
    {
        string dir = NewDirectory();
        try
        {
            var original = ReadEntries(SaveCurrentFormatZip(dir));
            var names = Entries.Select(row => (string)row[0]).ToArray();
            var rng = new Random(14);
            var counts = new SortedDictionary<string, int>();
            for (int i = 0; i < 60; i++)
            {
                bool flip = i < 30;
                string entry = names[i % names.Length];
                var entries = original.ToDictionary(kv => kv.Key, kv => (byte[])kv.Value.Clone());
                var bytes = entries[entry];
                string what;
                bool inChecksummedRange;
                if (flip)
                {
                    int at = rng.Next(bytes.Length);
                    bytes[at] ^= (byte)rng.Next(1, 256);
                    what = $"flip at {at}/{bytes.Length}";
                    var (start, length) = ContentRange(entry, original[entry]);
                    inChecksummedRange = !IsModelKey(entry) || (at >= start && at < start + length + 8);
                }
                else
                {
                    int keep = rng.Next(bytes.Length);
                    entries[entry] = bytes[..keep];
                    what = $"cut to {keep}/{bytes.Length}";
                    inChecksummedRange = !IsModelKey(entry);
                }
                string bad = Path.Combine(dir, $"copy{i:D2}.zip");
                WriteEntries(bad, entries);
                Exception? error = null;
                try
                {
                    Load(bad);
                }
                catch (Exception e)
                {
                    error = e;
                }
                Assert.True(error is not null, $"{entry} {what}: loaded silently");
                var cause = Cause(error!);
                bool ours = cause is FormatException && cause.Message.StartsWith($"Entry '{entry}' of component ", StringComparison.Ordinal)
                    && cause.Message.Contains($" in model zip '{bad}' is corrupt: ", StringComparison.Ordinal);
                string kind = ours ? "ours" : $"ML.NET {cause.GetType().Name}";
                counts[kind] = counts.GetValueOrDefault(kind) + 1;
                output.WriteLine($"{entry} {what}: {kind}: {cause.Message}");
                if (inChecksummedRange)
                {
                    Assert.True(ours, $"{entry} {what}: expected the checksum error, got {cause.GetType().Name}: {cause.Message}");
                }
                else
                {
                    Assert.True(ours || cause is FormatException or FileNotFoundException or FileLoadException,
                        $"{entry} {what}: ML.NET's header check raised {cause.GetType().Name}: {cause.Message}");
                }
            }
            output.WriteLine(string.Join(", ", counts.Select(kv => $"{kv.Key}: {kv.Value}")));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Re-saves the format-v1 fixture with the current code: a zip of the current format with every entry kind.</summary>
    private static string SaveCurrentFormatZip(string dir)
    {
        var ml = new MLContext(seed: 1);
        var model = ml.Model.Load(Path.Combine(FormatV1Fixture.OutputFolder("format-v1"), FormatV1Fixture.ZipName), out var schema);
        string path = Path.Combine(dir, "model.zip");
        ml.Model.Save(model, schema, path);
        Dispose(model);
        return path;
    }

    /// <summary>
    /// The error a loader raised: ML.NET's component catalog wraps every loader's exception in
    /// InvalidOperationException("Error during class instantiation") ▸ TargetInvocationException; unwrap those two.
    /// </summary>
    private static Exception Cause(Exception e)
    {
        while (e.InnerException is not null && (e is TargetInvocationException || e.Message == "Error during class instantiation"))
            e = e.InnerException;
        return e;
    }

    private static void Load(string path)
    {
        var model = new MLContext(seed: 1).Model.Load(path, out _);
        Dispose(model);
    }

    private static void Dispose(ITransformer model)
    {
        foreach (var t in (IEnumerable<ITransformer>)model)
            (t as IDisposable)?.Dispose();
    }

    /// <summary>The bytes an entry's checksum covers: a Model.key's model region (ML.NET header fields FpModel, CbModel), else all.</summary>
    private static (int Start, int Length) ContentRange(string entry, byte[] bytes)
    {
        if (!IsModelKey(entry))
            return (0, bytes.Length - 16);
        long fpModel = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16));
        long cbModel = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(24));
        return ((int)fpModel, (int)cbModel - 8);
    }

    private static bool IsModelKey(string entry) => entry.EndsWith("/Model.key", StringComparison.Ordinal);

    private static Dictionary<string, byte[]> ReadEntries(string path)
    {
        var entries = new Dictionary<string, byte[]>();
        using var zip = ZipFile.OpenRead(path);
        foreach (var e in zip.Entries)
        {
            using var s = e.Open();
            using var ms = new MemoryStream();
            s.CopyTo(ms);
            entries[e.FullName] = ms.ToArray();
        }
        return entries;
    }

    private static void WriteEntries(string path, Dictionary<string, byte[]> entries)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var (name, bytes) in entries)
        {
            using var s = zip.CreateEntry(name).Open();
            s.Write(bytes);
        }
    }

    private static string NewDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "llm-corrupt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        return dir;
    }
}
