using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Training;

/// <summary>
/// The loss counts exactly the response tokens: TokenizeChat masks the prompts, PackTokens carries the mask and
/// annotates the packed columns, and the trainer and Evaluate pick them up by themselves (issue 13).
/// </summary>
[Collection("Torch")]
public class LossMaskTests
{
    public sealed class Record
    {
        public string Instruction { get; set; } = "";
        public string Response { get; set; } = "";
    }

    // Characters of the corpus and of the default chat template ("User: …\nAssistant: …\n").
    private static readonly LmTokenizer Tokenizer = LmTokenizer.Character([TestData.Corpus, "User: \nAssistant: "], endOfTextToken: "<|endoftext|>");

    // Prompt → response pairs; the response (and the end-of-text after it) is trained, the prompt is not.
    private static readonly (string Prompt, string Response)[] Pairs =
    [
        ("to be or ", "not to be"),
        ("that is the ", "question"),
        ("whether tis ", "nobler"),
        ("in the mind ", "to suffer"),
        ("the slings ", "and arrows"),
        ("of outrageous ", "fortune"),
    ];

    // Each response is trained with the template's closing newline and the end-of-text after it.
    private static readonly int ResponseTokens = Pairs.Sum(p => p.Response.Length + 2);

    /// <summary>The instruction records through TokenizeChat and PackTokens; no column is named after TokenizeChat.</summary>
    private static IDataView Pack(MLContext ml, PackingMode mode, int context = 128)
    {
        var data = ml.Data.LoadFromEnumerable(Pairs.Select(p => new Record { Instruction = p.Prompt, Response = p.Response }));
        return ml.Transforms.Text.TokenizeChat("Chat", "Instruction", "Response", tokenizer: Tokenizer)
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Chat", new TokenPackerOptions { ContextLength = context, Mode = mode }))
            .Fit(data).Transform(data);
    }

    private static CausalLmTrainerOptions Options(long steps, int rows) => new()
    {
        Model = GptConfig.Tiny(contextLength: 128) with { VocabularySize = Tokenizer.VocabularySize },
        Tokenizer = Tokenizer,
        BatchSize = rows,
        MaxSteps = steps,
        LearningRate = 3e-3,
        WarmupSteps = 0,
        EvaluationInterval = 1000,
        LogInterval = 1,
        Seed = 7,
        NumberOfThreads = 1,
        Precision = TrainingPrecision.Fp32,   // the losses are checked against a hand computation in fp32 to 1e-5
    };

    /// <summary>A model trained a few steps on the conversations (so its predictions are not uniform).</summary>
    private static CausalLmTransformer TrainedModel(MLContext ml) => ml.Llm().Trainers.CausalLm(Options(5, 6)).Fit(Pack(ml, PackingMode.Padded));

    private static List<T[]> Read<T>(IDataView data, string column)
    {
        var result = new List<T[]>();
        using var cursor = data.GetRowCursor([data.Schema[column]]);
        var getter = cursor.GetGetter<VBuffer<T>>(data.Schema[column]);
        VBuffer<T> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    /// <summary>
    /// The reference: one row at a time through the model, log-softmax in float64 here, and the mean of −log p(target)
    /// over the targets whose mask is true: nothing of the framework's masking or reduction is used.
    /// </summary>
    private static double HandComputedLoss(CausalLmTransformer model, IDataView packed)
    {
        var tokens = Read<int>(packed, "Tokens");
        var mask = Read<bool>(packed, "LossMask");
        double nats = 0;
        int count = 0;
        model.Model.eval();
        using var noGrad = no_grad();
        for (int r = 0; r < tokens.Count; r++)
        {
            using var scope = NewDisposeScope();
            int t = tokens[r].Length - 1;
            var input = tensor(tokens[r][..t].Select(v => (long)v).ToArray(), [1, t]);
            var logits = model.Model.forward(input, documentIds: null).to(ScalarType.Float64).data<double>().ToArray();
            long vocab = logits.Length / t;
            for (int j = 0; j < t; j++)
            {
                if (!mask[r][j + 1])
                    continue;
                var row = logits.AsSpan((int)(j * vocab), (int)vocab);
                double max = double.NegativeInfinity;
                foreach (double v in row)
                    max = Math.Max(max, v);
                double sum = 0;
                foreach (double v in row)
                    sum += Math.Exp(v - max);
                nats += max + Math.Log(sum) - row[tokens[r][j + 1]];
                count++;
            }
        }
        Assert.Equal(ResponseTokens, count);   // exactly the responses, their closing newline and end-of-text
        return nats / count;
    }

    [Fact]
    public void TheLossIgnoresPromptTokensExactly()
    {
        var ml = new MLContext(seed: 1);
        var model = TrainedModel(ml);
        var packed = Pack(ml, PackingMode.Padded);
        double reference = HandComputedLoss(model, packed);

        // Evaluate picks up the packed loss mask from the token column's annotation.
        var metrics = ml.Llm().Evaluate(model, packed);
        Assert.Equal(reference, metrics.Loss, 1e-5);
        Assert.Equal(ResponseTokens, metrics.Tokens);

        // The trainer's first step is taken at the initial weights: its loss is the same masked mean (one batch of all rows).
        var options = Options(1, Pairs.Length);
        options.InitialModel = model;
        options.Model = null;
        options.ValidationSet = packed;   // validation picks up the same columns
        var step = ml.Llm().Trainers.CausalLm(options).Fit(packed);
        Assert.Equal(reference, step.History[0].Loss, 1e-5);
        Assert.Equal(ml.Llm().Evaluate(step, packed).Loss, step.History[0].ValidationLoss!.Value, 1e-5);
        options.ValidationSet = null;

        // The trainer opts out too: then it trains on prompts and padding, and its first loss is another number.
        options.UseAnnotatedColumns = false;
        Assert.NotEqual(reference, ml.Llm().Trainers.CausalLm(options).Fit(packed).History[0].Loss, 3);

        // Opting out scores every token, prompts and padding included.
        var unmasked = ml.Llm().Evaluate(model, packed, new LanguageModelEvaluationOptions { UseAnnotatedColumns = false });
        Assert.Equal(Pairs.Length * 128, unmasked.Tokens);
        Assert.NotEqual(reference, unmasked.Loss, 3);

        // Explicit names win over the annotations.
        var renamed = ml.Transforms.CopyColumns("Mask2", "LossMask").Fit(packed).Transform(packed);
        var explicitMetrics = ml.Llm().Evaluate(model, renamed, new LanguageModelEvaluationOptions { LossMaskColumnName = "Mask2", UseAnnotatedColumns = false });
        Assert.Equal(metrics.Loss, explicitMetrics.Loss, 12);
    }

    [Fact]
    public void PackedConversationsScoreAsUnpackedOnes()
    {
        var ml = new MLContext(seed: 1);
        var model = TrainedModel(ml);
        var padded = Pack(ml, PackingMode.Padded);
        var packed = Pack(ml, PackingMode.BestFit);
        Assert.True(Read<int>(packed, "Tokens").Count < Pairs.Length, "several conversations share a block");

        // Evaluate: the document ids are picked up too, so packed conversations neither attend to each other nor
        // predict each other's first tokens.
        var unpackedMetrics = ml.Llm().Evaluate(model, padded);
        var packedMetrics = ml.Llm().Evaluate(model, packed);
        Assert.Equal(unpackedMetrics.Tokens, packedMetrics.Tokens);
        Assert.Equal(unpackedMetrics.Loss, packedMetrics.Loss, 1e-5);
        Assert.Equal(unpackedMetrics.BitsPerByte, packedMetrics.BitsPerByte, 1e-5);

        // The trainer: the first-step loss over all rows, packed and unpacked.
        double FirstLoss(IDataView data, int rows)
        {
            var options = Options(1, rows);
            options.InitialModel = model;
            options.Model = null;
            return ml.Llm().Trainers.CausalLm(options).Fit(data).History[0].Loss;
        }
        double unpackedLoss = FirstLoss(padded, Pairs.Length);
        double packedLoss = FirstLoss(packed, Read<int>(packed, "Tokens").Count);
        Assert.Equal(unpackedLoss, packedLoss, 1e-5);
        Assert.Equal(unpackedMetrics.Loss, unpackedLoss, 1e-5);

        // Without document masking the packed conversations see each other: a different loss.
        var leaky = ml.Llm().Evaluate(model, packed, new LanguageModelEvaluationOptions { UseDocumentMasking = false });
        Assert.NotEqual(packedMetrics.Loss, leaky.Loss, 4);
    }

    [Fact]
    public void AChainScoresRecordsAndSurvivesSaveAndLoad()
    {
        var ml = new MLContext(seed: 1);
        var model = TrainedModel(ml);
        var records = ml.Data.LoadFromEnumerable(Pairs.Select(p => new Record { Instruction = p.Prompt, Response = p.Response }));
        var prep = ml.Transforms.Text.TokenizeChat("Chat", "Instruction", "Response", tokenizer: Tokenizer)
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Chat", new TokenPackerOptions { ContextLength = 128, Mode = PackingMode.BestFit }))
            .Fit(records);
        // The tokenizer can come from the model to fine-tune itself (a loaded model here; a zip or an HF folder alike).
        var fromModel = ml.Transforms.Text.TokenizeChat("Chat", new ChatTokenizerOptions { InstructionColumnName = "Instruction", ResponseColumnName = "Response" }, model).Fit(records);
        Assert.Same(Tokenizer, fromModel.Tokenizer);
        var chain = prep.Append(model);
        double direct = ml.Llm().Evaluate(model, prep.Transform(records)).Loss;
        Assert.Equal(direct, ml.Llm().Evaluate(chain, records).Loss, 12);

        using var zip = new MemoryStream();
        ml.Model.Save(chain, records.Schema, zip);
        zip.Position = 0;
        var loaded = new MLContext(seed: 2).Model.Load(zip, out _);
        Assert.Equal(direct, ml.Llm().Evaluate(loaded, records).Loss, 6);
    }

    [Fact]
    public void AMicroBatchWithoutTargetsAddsNothing()
    {
        // The first prompt is longer than a block: padding truncates its whole response away, so that block has no
        // target. One block per micro-batch: its step must add a zero loss, not NaN weights.
        var ml = new MLContext(seed: 1);
        var records = ml.Data.LoadFromEnumerable(new[]
        {
            new Record { Instruction = string.Concat(Enumerable.Repeat("to be or not ", 12)), Response = "to be" },
            new Record { Instruction = "that is the ", Response = "question" },
        });
        var packed = ml.Transforms.Text.TokenizeChat("Chat", "Instruction", "Response", tokenizer: Tokenizer)
            .Append(ml.Transforms.Text.PackTokens("Tokens", "Chat", new TokenPackerOptions { ContextLength = 128, Mode = PackingMode.Padded }))
            .Fit(records).Transform(records);
        Assert.Equal([false, true], Read<bool>(packed, "LossMask").Select(m => m.Any(v => v)));
        var options = Options(4, 1);
        var model = ml.Llm().Trainers.CausalLm(options).Fit(packed);
        Assert.All(model.History, h => Assert.True(double.IsFinite(h.Loss)));
        Assert.Contains(model.History, h => h.Loss == 0);
        Assert.True(double.IsFinite(ml.Llm().Evaluate(model, packed).Loss));
    }

    [Fact]
    public void DocumentMaskingWithoutDocumentIdsIsReported()
    {
        var ml = new MLContext(seed: 1);
        var model = TrainedModel(ml);
        var padded = Pack(ml, PackingMode.Padded);
        var error = Assert.Throws<ArgumentException>(() => ml.Llm().Evaluate(model, padded, new LanguageModelEvaluationOptions { UseDocumentMasking = true }));
        Assert.StartsWith("Option 'UseDocumentMasking' is true but there is no document-id column: 'DocumentIdsColumnName' is not set and column 'Tokens' has no document-ids annotation. Pack with PackTokens in BestFit mode, or name the document-id column.", error.Message);
    }
}
