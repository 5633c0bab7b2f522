using System.Globalization;
using System.Text;
using Microsoft.ML.Data;

namespace Microsoft.ML.Llm.Tests.Compatibility;

/// <summary>
/// The format-v1 compatibility fixture (tests/Microsoft.ML.Llm.Tests/Fixtures/format-v1): a full pipeline zip and a
/// trainer checkpoint written by the code of format version 0x00010001 (before checksums), the corpus they were trained
/// on, and the outputs that code recorded. <see cref="RecordOutputs"/> computes those outputs; the maker
/// (<see cref="FormatV1FixtureMaker"/>) writes them with the old code, the tests recompute them with the new code. It
/// uses only loaded models and public APIs, no estimator options, so renamed options types don't touch it.
/// </summary>
internal static class FormatV1Fixture
{
    /// <summary>The file names inside the fixture folder.</summary>
    public const string ZipName = "pipeline.zip";
    public const string CheckpointName = "checkpoint-000000003.ckpt";
    public const string CorpusName = "corpus.txt";
    public const string ExpectedName = "expected.txt";

    /// <summary>The trainer's step count of the run that wrote the fixture (the checkpoint is from step 3 of it).</summary>
    public const int MaxSteps = 6;

    /// <summary>The fixed input whose transformed rows are recorded: kept, duplicate, French, reference-matching and new docs.</summary>
    public static string[] Probe(string[] corpus) =>
    [
        corpus[0],
        corpus[1] + "  “quoted”\u200b",
        corpus[0],
        "le chat est sur la table et il mange du pain avec les enfants de la maison pendant que nous parlons de la pluie.",
        corpus[5],
        "to be or not to be, that is the question of the mind. the slings and arrows of fortune are outrageous to suffer.",
    ];

    /// <summary>The fixture folder the maker writes next: the format of the code it runs with (format-v2: components at
    /// 0x00010002, checkpoint format 2, written at commit 1e52714).</summary>
    public const string MakerFolderName = "format-v2";

    /// <summary>A fixture folder (format-v1, format-v2, ...) in the test output (copied there by the project file).</summary>
    public static string OutputFolder(string name) => Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    /// <summary>A fixture folder in the source tree (where the maker writes).</summary>
    public static string SourceFolder(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "LlmMlNet.sln")))
            dir = dir.Parent;
        if (dir is null)
            throw new DirectoryNotFoundException("LlmMlNet.sln not found above " + AppContext.BaseDirectory);
        return Path.Combine(dir.FullName, "tests", "Microsoft.ML.Llm.Tests", "Fixtures", name);
    }

    /// <summary>The training corpus: one document per line.</summary>
    public static string[] ReadCorpus(string folder) => File.ReadAllLines(Path.Combine(folder, CorpusName));

    /// <summary>
    /// Loads <see cref="ZipName"/> from <paramref name="folder"/> and records, as text lines: every visible column of each
    /// row after the tokenizer and after the whole chain (floats as their bits), and the greedy completion of a prompt.
    /// </summary>
    public static List<string> RecordOutputs(string folder)
    {
        var ml = new MLContext(seed: 1);
        var lines = new List<string>();
        var model = ml.Model.Load(Path.Combine(folder, ZipName), out var inputSchema);
        var chain = ((IEnumerable<ITransformer>)model).ToList();
        lines.Add($"transformers: {string.Join(", ", chain.Select(t => t.GetType().Name))}");
        lines.Add($"input schema: {string.Join(", ", inputSchema.Select(c => $"{c.Name}:{c.Type}"))}");
        var probe = ml.Data.LoadFromEnumerable(Probe(ReadCorpus(folder)).Select(t => new TestData.TextRow { Text = t }));

        IDataView view = probe;
        for (int i = 0; i < chain.Count - 2; i++)
            view = chain[i].Transform(view);
        lines.Add($"after {chain[chain.Count - 3].GetType().Name}:");
        Dump(view, lines);
        lines.Add("after the whole chain:");
        Dump(model.Transform(probe), lines);

        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 24 };
        lines.Add("greedy 'to be': " + Escape(ml.Llm().CreateGenerator(model).Generate("to be", greedy)));
        var lm = chain.OfType<CausalLmTransformer>().Single();
        lines.Add("history losses: " + string.Join(' ', lm.History.Select(h => Bits(h.Loss))));
        return lines;
    }

    /// <summary>
    /// Resumes the fixture's run from <see cref="CheckpointName"/> (step 3) to <see cref="MaxSteps"/> and records the
    /// losses of the resumed steps and the greedy completion of the resumed model.
    /// </summary>
    public static List<string> RecordResume(string folder, string checkpoint)
    {
        var ml = new MLContext(seed: 1);
        var model = ml.Model.Load(Path.Combine(folder, ZipName), out _);
        var chain = ((IEnumerable<ITransformer>)model).ToList();
        var lm = chain.OfType<CausalLmTransformer>().Single();
        IDataView blocks = ml.Data.LoadFromEnumerable(ReadCorpus(folder).Select(t => new TestData.TextRow { Text = t }));
        foreach (var t in chain.Take(chain.Count - 1))
            blocks = t.Transform(blocks);
        var options = TrainerOptions(lm.Config);
        options.ResumeFrom = checkpoint;
        var resumed = ml.Llm().Trainers.CausalLm(options).Fit(blocks);
        var greedy = new GenerationOptions { DoSample = false, MaxNewTokens = 24 };
        return
        [
            "resumed losses: " + string.Join(' ', resumed.History.Select(h => $"{h.Step}:{Bits(h.Loss)}")),
            "resumed greedy 'to be': " + Escape(ml.Llm().CreateGenerator(resumed).Generate("to be", greedy)),
        ];
    }

    /// <summary>The trainer options of the fixture's run (the maker's and the resume's).</summary>
    public static CausalLmTrainerOptions TrainerOptions(GptConfig model) => new()
    {
        Model = model,
        BatchSize = 4,
        MaxSteps = MaxSteps,
        LearningRate = 3e-3,
        MinLearningRate = 3e-4,
        WarmupSteps = 2,
        WeightDecay = 0.0,
        EvaluationInterval = 1000,
        LogInterval = 1,
        Seed = 7,
        NumberOfThreads = 1,
    };

    private static void Dump(IDataView view, List<string> lines)
    {
        var columns = view.Schema.Where(c => !c.IsHidden).ToList();
        using var cursor = view.GetRowCursor(columns);
        int row = 0;
        while (cursor.MoveNext())
        {
            var cells = columns.Select(c => $"{c.Name}={Cell(cursor, c)}");
            lines.Add($"  row {row++}: {string.Join(" | ", cells)}");
        }
        lines.Add($"  rows: {row}");
    }

    private static string Cell(DataViewRowCursor cursor, DataViewSchema.Column column)
    {
        switch (column.Type)
        {
            case TextDataViewType:
                {
                    ReadOnlyMemory<char> v = default;
                    cursor.GetGetter<ReadOnlyMemory<char>>(column)(ref v);
                    return Escape(v.ToString());
                }
            case NumberDataViewType n when n == NumberDataViewType.Single:
                {
                    float v = 0;
                    cursor.GetGetter<float>(column)(ref v);
                    return Bits(v);
                }
            case NumberDataViewType n when n == NumberDataViewType.Int32:
                {
                    int v = 0;
                    cursor.GetGetter<int>(column)(ref v);
                    return v.ToString(CultureInfo.InvariantCulture);
                }
            case BooleanDataViewType:
                {
                    bool v = false;
                    cursor.GetGetter<bool>(column)(ref v);
                    return v ? "true" : "false";
                }
            case VectorDataViewType { ItemType: var item } when item == NumberDataViewType.Int32:
                {
                    VBuffer<int> v = default;
                    cursor.GetGetter<VBuffer<int>>(column)(ref v);
                    return "[" + string.Join(',', v.DenseValues()) + "]";
                }
            case VectorDataViewType { ItemType: BooleanDataViewType }:
                {
                    VBuffer<bool> v = default;
                    cursor.GetGetter<VBuffer<bool>>(column)(ref v);
                    return "[" + string.Join(',', v.DenseValues().Select(b => b ? 1 : 0)) + "]";
                }
            default:
                return $"<{column.Type}>";
        }
    }

    private static string Bits(float v) => $"{v.ToString("R", CultureInfo.InvariantCulture)}#{BitConverter.SingleToInt32Bits(v):X8}";

    private static string Bits(double v) => $"{v.ToString("R", CultureInfo.InvariantCulture)}#{BitConverter.DoubleToInt64Bits(v):X16}";

    private static string Escape(string s)
    {
        var sb = new StringBuilder("\"");
        foreach (char c in s)
        {
            if (c == '"' || c == '\\')
                sb.Append('\\').Append(c);
            else if (c < 0x20 || c > 0x7E)
                sb.Append($"\\u{(int)c:X4}");
            else
                sb.Append(c);
        }
        return sb.Append('"').ToString();
    }
}
