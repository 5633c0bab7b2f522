using System.Diagnostics;

namespace Microsoft.ML.Llm.Tests.Packaging;

/// <summary>
/// What a user outside this repository gets: both libraries packed into a temporary feed, a new console app (its own
/// nuget.config: that feed plus the machine's registries) referencing Microsoft.ML.Llm and TorchSharp-cpu, built,
/// trained, saved, and reloaded in a second process. On Debian 12 / Ubuntu 22.04 the app only runs if the package's
/// buildTransitive targets patched TorchSharp's native library in the app's output.
/// </summary>
[Collection("Torch")]
public class PackageConsumerTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif

    private const string AppProgram = """
        using Microsoft.ML;
        using Microsoft.ML.Llm;
        using Microsoft.ML.Llm.Data;

        var ml = new MLContext(seed: 1);
        if (args[0] == "train")
        {
            var lines = Enumerable.Range(0, 60).Select(i => new Row { Text = $"line {i % 7}: the quick brown fox jumps over the lazy dog." });
            var text = ml.Data.LoadFromEnumerable(lines);
            var prep = ml.Transforms.Text.NormalizeForLm("Text")
                .Append(ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { VocabularySize = 300 }))
                .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", contextLength: 16))
                .Fit(text);
            var lm = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
            {
                Model = GptConfig.Tiny(contextLength: 16),
                MaxSteps = 25, LearningRate = 3e-3, WarmupSteps = 3, NumberOfThreads = 1,
            }).Fit(prep.Transform(text));
            ml.Model.Save(prep.Append(lm), text.Schema, args[1]);
            Console.WriteLine($"TRAINED first {lm.History[0].Loss:F3} last {lm.History[^1].Loss:F3}");
        }
        else
        {
            var generator = ml.Llm().CreateGenerator(ml.Model.Load(args[1], out _));
            Console.WriteLine("GENERATED[" + generator.Generate("line 3:", new GenerationOptions { MaxNewTokens = 8, DoSample = false }) + "]");
        }

        sealed class Row
        {
            public string Text { get; set; } = "";
        }
        """;

    [Fact]
    public void PackedLibrariesWorkInAFreshAppOutsideTheRepository()
    {
        string repo = RepoRoot();
        string work = Path.Combine(Path.GetTempPath(), "llm-consumer-" + Guid.NewGuid().ToString("N"));
        // A version no earlier run used, so the NuGet cache cannot serve a stale copy of our packages.
        string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string feed = Path.Combine(work, "feed");
        string app = Path.Combine(work, "app");
        try
        {
            Directory.CreateDirectory(app);
            foreach (var project in (string[])["src/Microsoft.ML.Llm.Data/Microsoft.ML.Llm.Data.csproj", "src/Microsoft.ML.Llm/Microsoft.ML.Llm.csproj"])
            {
                // Its own artifacts folder: the repository's build outputs (which this test runs from) stay untouched.
                Run("dotnet", $"pack \"{Path.Combine(repo, project)}\" -c {Configuration} -o \"{feed}\" --artifacts-path \"{Path.Combine(work, "artifacts")}\" -p:Version={version} -p:IncludeSymbols=false", repo);
            }
            Assert.True(File.Exists(Path.Combine(feed, $"Microsoft.ML.Llm.{version}.nupkg")));

            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <add key="llm-test-feed" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <ImplicitUsings>enable</ImplicitUsings>
                    <Nullable>enable</Nullable>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="Microsoft.ML.Llm" Version="{version}" />
                    <PackageReference Include="TorchSharp-cpu" Version="0.107.0" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), AppProgram);

            string build = Run("dotnet", "build -c Release", app);
            // The package's buildTransitive targets ran on the app's output: either they patched TorchSharp's native
            // library (Debian 12, Ubuntu 22.04) or found the system libstdc++ new enough.
            Assert.Matches(@"LlmNativePatch: (marked GLIBCXX_3\.4\.32 weak in|.* provides GLIBCXX_3\.4\.32;|GLIBCXX_3\.4\.32 already weak)", build);
            string dll = Path.Combine(app, "bin", "Release", "net10.0", "App.dll");
            string zip = Path.Combine(work, "model.zip");

            string trained = Run("dotnet", $"\"{dll}\" train \"{zip}\"", app);
            var match = System.Text.RegularExpressions.Regex.Match(trained, @"TRAINED first (\S+) last (\S+)");
            Assert.True(match.Success, trained);
            Assert.True(double.Parse(match.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) < double.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) - 1.0, trained);

            string generated = Run("dotnet", $"\"{dll}\" load \"{zip}\"", app);
            Assert.Matches(@"GENERATED\[.+\]", generated);
        }
        finally
        {
            if (Directory.Exists(work))
                Directory.Delete(work, recursive: true);
            // Our test versions would otherwise pile up in the NuGet cache.
            string cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            foreach (var id in (string[])["microsoft.ml.llm", "microsoft.ml.llm.data"])
            {
                string cached = Path.Combine(cache, id, version);
                if (Directory.Exists(cached))
                    Directory.Delete(cached, recursive: true);
            }
        }
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "LlmMlNet.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"No LlmMlNet.sln above {AppContext.BaseDirectory}.");
    }

    /// <summary>Runs a command, returns its output; fails the test with the output when the exit code is not 0.</summary>
    private static string Run(string file, string arguments, string directory)
    {
        var start = new ProcessStartInfo(file, arguments)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // The test host's MSBuild/SDK variables would leak into the child builds; start them clean.
        foreach (var key in (string[])["MSBuildSDKsPath", "MSBuildExtensionsPath", "MSBUILD_EXE_PATH", "DOTNET_HOST_PATH", "VSTEST_HOST_DEBUG"])
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(8)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"'{file} {arguments}' ran longer than 8 minutes.");
        }
        string output = stdout.Result + stderr.Result;
        Assert.True(process.ExitCode == 0, $"'{file} {arguments}' in {directory} exited with {process.ExitCode}:\n{output}");
        return output;
    }
}
