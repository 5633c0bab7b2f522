// Instruction tuning (SFT), end to end: start from a model, fine-tune it on instructions whose answers this program
// generates and checks exactly, and print exact-match accuracy on held-out instructions before and after.
//
//   dotnet run -c Release --project samples/FineTune [model] [steps] [--full]
//
// model: a model zip (e.g. samples/TinyShakespeare's out/shakespeare.zip) or a Hugging Face checkpoint folder
// (config.json + model.safetensors + tokenizer files). Without one, the sample first trains a small character-level
// base model on Tiny Shakespeare for 300 steps (~30 s), with an end-of-text token, so it runs on its own.
// The task: "Reverse: abcd" → "dcba" and "Upper: abcd" → "ABCD" over random 3-5 letter words (letters only, so any
// tokenizer that covers Shakespeare's characters covers it). Fine-tuning is LoRA by default (rank-32 adapters on every
// linear layer, the base weights frozen); --full trains every weight instead.
using System.Diagnostics;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Llm;
using Microsoft.ML.Llm.Data;

CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
bool full = args.Contains("--full");
var positional = args.Where(a => a != "--full").ToArray();
string? modelPath = positional.Length > 0 && positional[0] != "-" ? positional[0] : null;
// LoRA trains 2.5× more steps than full fine-tuning: the copy skill (reversal) appears only after ~600 adapter steps.
long steps = positional.Length > 1 ? long.Parse(positional[1], CultureInfo.InvariantCulture) : full ? 1200 : 3000;
string outDir = Path.Combine(AppContext.BaseDirectory, "out");
Directory.CreateDirectory(outDir);
var ml = new MLContext(seed: 1);
var total = Stopwatch.StartNew();

// 1. The starting model.
CausalLmTransformer baseModel = modelPath switch
{
    null => TrainSmallBase(ml),
    _ when Directory.Exists(modelPath) => ml.Llm().LoadHuggingFace(modelPath),
    _ => FindLanguageModel(ml.Model.Load(modelPath, out _)),
};
var tokenizer = baseModel.Tokenizer ?? throw new InvalidOperationException($"The model {modelPath} has no tokenizer; fine-tuning needs one to tokenize instructions.");
// Each response ends with the end-of-text token so the model learns to stop. A tokenizer without one (a character
// tokenizer trained without special tokens, as samples/TinyShakespeare's) stops at the newline that ends a turn instead.
int endOfText = tokenizer.EndOfTextId ?? tokenizer.Encode("\n").Single();
int context = baseModel.Config.ContextLength;
Console.WriteLine($"Base model: {(modelPath ?? "small character-level GPT trained above")}; {baseModel.Model.ParameterCount / 1e6:F2}M parameters, context {context}, {tokenizer}.");

// 2. The task: instructions with exactly checkable answers; held-out words never appear in training.
var random = new Random(7);
var words = new HashSet<string>();
while (words.Count < 2600)
    words.Add(new string(Enumerable.Range(0, random.Next(3, 6)).Select(_ => (char)('a' + random.Next(26))).ToArray()));
var wordList = words.ToArray();
var trainRecords = wordList[..2400].SelectMany(Tasks).ToArray();
var heldOut = wordList[2400..].SelectMany(Tasks).ToArray();
// The chat template: a Hugging Face model's own (tokenizer_config.json) when it has one this library reads, else the
// default "User: {content}\n" / "Assistant: {content}\n".
var template = ChatTemplate.Default;
if (modelPath is not null && File.Exists(Path.Combine(modelPath, "tokenizer_config.json")))
{
    try
    {
        template = HuggingFaceChatTemplate.Load(modelPath);
        Console.WriteLine($"Chat template from {modelPath}/tokenizer_config.json: {template}");
    }
    catch (FormatException e)
    {
        Console.WriteLine($"Default chat template ({e.Message})");
    }
}

double before = Accuracy(baseModel, heldOut, out _);
Console.WriteLine($"Exact-match accuracy on {heldOut.Length} held-out instructions before fine-tuning: {before:P1}");

// 3. Fine-tune: records → chat tokens + response-only loss mask → one conversation per block (the mask and the
// padding mask travel together; the trainer picks the mask up from the column annotations) → CausalLm from the base.
var train = ml.Data.LoadFromEnumerable(trainRecords);
var prep = ml.Transforms.Text.TokenizeChat("Chat", new ChatTokenizerOptions
{
    InstructionColumnName = nameof(Instruction.Prompt),
    ResponseColumnName = nameof(Instruction.Answer),
    Tokenizer = tokenizer,
    Template = template,
    EndOfTextId = endOfText,
}).Append(ml.Transforms.Text.PackTokens("Tokens", "Chat", new TokenPackerOptions { ContextLength = context, Mode = PackingMode.Padded }));
var prepModel = prep.Fit(train);
var blocks = ml.Data.Cache(prepModel.Transform(train));
// LoRA (the default): rank 32, alpha 64 (scale 2), dropout 0.05, on every linear layer of the blocks; only the adapters
// train, at twice full fine-tuning's learning rate (5e-3 and 1e-2 were worse here: the loss stalls near 2.6).
// A base given as a path lets the adapters be saved alone, naming it (LoraSaveMode.Adapters).
var lora = full ? null : new LoraOptions { Rank = 32, Alpha = 64, Dropout = 0.05, TargetModules = ["all-linear"] };
var options = new CausalLmTrainerOptions
{
    InitialModel = modelPath is null ? baseModel : modelPath,
    Lora = lora,
    BatchSize = 16,
    MaxSteps = steps,
    LearningRate = full ? 1e-3 : 2e-3,
    WarmupSteps = 50,
    Beta2 = 0.99,
    WeightDecay = 0.0,
    EvaluationInterval = 1_000_000,
    LogInterval = 100,
    Progress = new ConsoleProgress(),
    Seed = 1,
};
var clock = Stopwatch.StartNew();
var tuned = ml.Llm().Trainers.CausalLm(options).Fit(blocks);
clock.Stop();
if (prepModel.LastTransformer.LastPassStatistics is { TruncatedFraction: > 0 } packing)
    Console.WriteLine($"Warning: {packing.TruncatedFraction:P1} of the conversation tokens did not fit the model's context of {context} and were cut.");
long trainable = tuned.Model.TrainableParameterCount;
Console.WriteLine($"Fine-tuned {steps} steps in {clock.Elapsed.TotalSeconds:F1} s; trainable parameters {trainable:N0} of {tuned.Model.ParameterCount:N0} " +
    (full ? "(full fine-tuning)." : $"({100.0 * trainable / tuned.Model.ParameterCount:F1} %: LoRA r {lora!.Rank}, alpha {lora.Alpha}, {string.Join(", ", lora.TargetModules!)})."));

double after = Accuracy(tuned, heldOut, out var examples);
Console.WriteLine($"Exact-match accuracy on {heldOut.Length} held-out instructions after fine-tuning: {after:P1} (before: {before:P1})");
foreach (var (prompt, expected, got) in examples.Take(6))
    Console.WriteLine($"  {prompt,-16} expected {expected,-6} got {got}");
// Saving: the default writes the adapters merged into the base (an ordinary model zip, loadable anywhere). The adapters
// also go out in Hugging Face PEFT's layout (adapter_config.json + adapter_model.safetensors).
string zip = Path.Combine(outDir, "finetuned.zip");
ml.Model.Save(tuned, blocks.Schema, zip);
Console.WriteLine($"Saved {zip} ({new FileInfo(zip).Length / 1024} KiB{(full ? "" : ", adapters merged")}).");
if (!full)
{
    string peft = Path.Combine(outDir, "lora-adapter");
    if (Directory.Exists(peft))
        Directory.Delete(peft, recursive: true);
    tuned.SaveLoraAdapters(peft);
    Console.WriteLine($"Saved the adapters in PEFT layout to {peft} ({Directory.GetFiles(peft).Sum(f => new FileInfo(f).Length) / 1024} KiB).");
}

Console.WriteLine($"Total time {total.Elapsed.TotalSeconds:F1} s.");

// Greedy answers to held-out prompts, compared exactly with the expected answer (the text before the first newline).
double Accuracy(CausalLmTransformer model, Instruction[] items, out List<(string Prompt, string Expected, string Got)> shown)
{
    var generator = ml.Llm().CreateGenerator(model);
    int correct = 0;
    shown = [];
    foreach (var item in items)
    {
        string prompt = template.Render([new ChatTurn(ChatRoles.User, item.Prompt)], addGenerationPrompt: true);
        string answer = generator.Generate(prompt, new GenerationOptions
        {
            DoSample = false,
            MaxNewTokens = item.Answer.Length + 2,
            EosTokenIds = [endOfText],
            StopStrings = ["\n"],
        }).Trim();
        if (answer == item.Answer)
            correct++;
        if (shown.Count < 6)
            shown.Add((item.Prompt, item.Answer, answer));
    }
    return (double)correct / items.Length;
}

static IEnumerable<Instruction> Tasks(string word)
{
    yield return new Instruction($"Reverse: {word}", new string(word.Reverse().ToArray()));
    yield return new Instruction($"Upper: {word}", word.ToUpperInvariant());
}

static CausalLmTransformer FindLanguageModel(ITransformer model) => model switch
{
    CausalLmTransformer lm => lm,
    IEnumerable<ITransformer> chain => chain.OfType<CausalLmTransformer>().LastOrDefault()
        ?? throw new ArgumentException("The model zip holds no CausalLmTransformer."),
    _ => throw new ArgumentException($"The model zip holds a {model.GetType().Name}, not a language model."),
};

// A character-level GPT (nanoGPT's shakespeare_char shape) trained briefly on Tiny Shakespeare, with an end-of-text token.
static CausalLmTransformer TrainSmallBase(MLContext ml)
{
    string text = File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "tinyshakespeare.txt"));
    var data = ml.Data.LoadFromEnumerable(new[] { new TextRow(text) });
    var prep = ml.Transforms.Text.TokenizeForLm("Ids", "Text", new LmTokenizerOptions { Kind = LmTokenizerKind.Character, CharacterSpecialTokens = true })
        .Append(ml.Transforms.Text.PackTokens("Tokens", "Ids", new TokenPackerOptions { ContextLength = 64, Stride = 8 }));
    var clock = Stopwatch.StartNew();
    var lm = ml.Llm().Trainers.CausalLm(new CausalLmTrainerOptions
    {
        Model = GptConfig.ShakespeareChar(),
        BatchSize = 12,
        MaxSteps = 300,
        LearningRate = 1e-3,
        WarmupSteps = 50,
        Beta2 = 0.99,
        EvaluationInterval = 1_000_000,
        Seed = 1,
    }).Fit(prep.Fit(data).Transform(data));
    Console.WriteLine($"Trained the small base model: 300 steps in {clock.Elapsed.TotalSeconds:F1} s, final loss {lm.History[^1].Loss:F3}.");
    return lm;
}

internal sealed record TextRow(string Text);

internal sealed record Instruction(string Prompt, string Answer);

internal sealed class ConsoleProgress : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress p) => Console.WriteLine(
        $"step {p.Step,5}: loss {p.Loss:F4}, lr {p.LearningRate:E2}, {p.TokensPerSecond,8:F0} tok/s, {p.Elapsed.TotalSeconds,6:F1} s");
}
