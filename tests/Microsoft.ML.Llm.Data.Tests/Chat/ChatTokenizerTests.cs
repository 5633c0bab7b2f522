using System.Text;
using Microsoft.ML.Data;
using Microsoft.ML.Llm.Data;
using static Microsoft.ML.Llm.Data.Tests.Tokenization.TokenizeForLmTests;

namespace Microsoft.ML.Llm.Data.Tests.Chat;

/// <summary>TokenizeChat (instruction tuning): tokens, loss masks, representations, persistence and bad records (issue 13).</summary>
public class ChatTokenizerTests
{
    public sealed class Record
    {
        public string Instruction { get; set; } = "";
        public string Input { get; set; } = "";
        public string Response { get; set; } = "";
    }

    public sealed class Messages
    {
        [VectorType]
        public string[] Roles { get; set; } = [];

        [VectorType]
        public string[] Contents { get; set; } = [];

        public string Json { get; set; } = "";
    }

    private static readonly LmTokenizer Bytes = LmTokenizer.Bytes();   // end-of-text id 256

    private static int[] Utf8(string s) => Encoding.UTF8.GetBytes(s).Select(b => (int)b).ToArray();

    private static List<bool[]> ReadMask(IDataView data, string column)
    {
        var result = new List<bool[]>();
        using var cursor = data.GetRowCursor([data.Schema[column]]);
        var getter = cursor.GetGetter<VBuffer<bool>>(data.Schema[column]);
        VBuffer<bool> value = default;
        while (cursor.MoveNext())
        {
            getter(ref value);
            result.Add(value.DenseValues().ToArray());
        }
        return result;
    }

    [Fact]
    public void RecordsBecomeTemplateTokensWithAMaskOnTheResponseOnly()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new Record { Instruction = "Add 2 and 3", Response = "5" },
            new Record { Instruction = "Reverse", Input = "abc", Response = "cba" },
        });
        var output = ml.Transforms.Text.TokenizeChat("Tokens", "Instruction", "Response", "Input", Bytes).Fit(data).Transform(data);

        // Default template: "User: {content}\n" then "Assistant: {content}\n"; the end-of-text follows each response.
        string prompt0 = "User: Add 2 and 3\nAssistant: ", prompt1 = "User: Reverse\n\nabc\nAssistant: ";
        Assert.Equal([[.. Utf8(prompt0), .. Utf8("5\n"), 256], [.. Utf8(prompt1), .. Utf8("cba\n"), 256]], ReadTokens(output, "Tokens"));
        Assert.Equal(
            [[.. Enumerable.Repeat(false, prompt0.Length), true, true, true], [.. Enumerable.Repeat(false, prompt1.Length), true, true, true, true, true]],
            ReadMask(output, "LossMask"));

        var tokens = output.Schema["Tokens"];
        Assert.True(tokens.TryGetTokenizer(out var annotated));
        Assert.Same(Bytes, annotated);
        Assert.True(tokens.TryGetLossMaskColumn(out var mask));
        Assert.Equal("LossMask", mask);
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32), tokens.Type);
    }

    public sealed class Tokenized
    {
        [VectorType]
        public int[] Tokens { get; set; } = [];

        [VectorType]
        public bool[] LossMask { get; set; } = [];
    }

    [Fact]
    public void WorksInAPredictionEngine()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Record { Instruction = "a", Response = "b" } });
        var model = ml.Transforms.Text.TokenizeChat("Tokens", "Instruction", "Response", tokenizer: Bytes).Fit(data);
        Assert.True(model.IsRowToRowMapper);
        var engine = ml.Model.CreatePredictionEngine<Record, Tokenized>(model);
        var first = engine.Predict(new Record { Instruction = "x", Response = "yz" });
        Assert.Equal([.. Utf8("User: x\nAssistant: "), .. Utf8("yz\n"), 256], first.Tokens);
        Assert.Equal(4, first.LossMask.Count(m => m));
        var second = engine.Predict(new Record { Instruction = "x", Response = "y" });   // a new row, not the cached one
        Assert.Equal([.. Utf8("User: x\nAssistant: "), .. Utf8("y\n"), 256], second.Tokens);
    }

    [Fact]
    public void MessageVectorsAndJsonGiveTheSameConversation()
    {
        var ml = new MLContext(seed: 1);
        var row = new Messages
        {
            Roles = ["system", "user", "assistant", "user", "assistant"],
            Contents = ["Be terse.", "Hi", "Hello", "2+2?", "4"],
            Json = """{"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}""",
        };
        var data = ml.Data.LoadFromEnumerable(new[] { row });
        var vectors = ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { RolesColumnName = "Roles", ContentsColumnName = "Contents", Tokenizer = Bytes, Template = ChatTemplate.ChatML })
            .Fit(data).Transform(data);
        var json = ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { MessagesColumnName = "Json", Tokenizer = Bytes, Template = ChatTemplate.ChatML })
            .Fit(data).Transform(data);
        Assert.Equal(ReadTokens(vectors, "Tokens"), ReadTokens(json, "Tokens"));
        Assert.Equal(ReadMask(vectors, "LossMask"), ReadMask(json, "LossMask"));

        // Both responses (content, closing "<|im_end|>\n", end-of-text) are trained; nothing else is.
        var tokens = ReadTokens(json, "Tokens")[0];
        var trained = tokens.Zip(ReadMask(json, "LossMask")[0]).Where(p => p.Second).Select(p => p.First).ToArray();
        Assert.Equal([.. Utf8("Hello<|im_end|>\n"), 256, .. Utf8("4<|im_end|>\n"), 256], trained);
        Assert.Equal(Utf8(ChatTemplate.ChatML.Render([new("system", "Be terse."), new("user", "Hi"), new("assistant", "Hello"), new("user", "2+2?"), new("assistant", "4")])),
            tokens.Where(t => t != 256).ToArray());
    }

    [Fact]
    public void PackTokensPicksUpTheChatMaskAndKeepsConversationsApart()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new Record { Instruction = "a", Response = "b" },
            new Record { Instruction = "c", Response = "d" },
        });
        var model = ml.Transforms.Text.TokenizeChat("Tokens", "Instruction", "Response", tokenizer: Bytes)
            .Append(ml.Transforms.Text.PackTokens("Blocks", "Tokens", new TokenPackerOptions { ContextLength = 63, Mode = PackingMode.BestFit }))
            .Fit(data);
        Assert.Equal("LossMask", model.LastTransformer.InputLossMaskColumnName);
        var output = model.Transform(data);
        // "User: a\nAssistant: " (19) + "b\n" + end-of-text (3): 22 tokens each, no second end-of-text; both in one block.
        var expectedMask = Enumerable.Repeat(false, 19).Concat(Enumerable.Repeat(true, 3)).ToArray();
        Assert.Equal([[.. expectedMask, .. expectedMask, .. Enumerable.Repeat(false, 20)]], ReadMask(output, "LossMask"));
        Assert.Equal([[.. Enumerable.Repeat(0, 22), .. Enumerable.Repeat(1, 22), .. Enumerable.Repeat(-1, 20)]], ReadTokens(output, "DocumentIds"));
    }

    [Fact]
    public void SavedAndLoadedTransformGivesTheSameRows()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Messages { Json = """[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]""" } });
        var template = new ChatTemplate(new Dictionary<string, string> { ["user"] = "Q: {content}\n", ["assistant"] = "A: {content}\n" });
        var model = ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { MessagesColumnName = "Json", Tokenizer = Bytes, Template = template, LossMaskColumnName = "M" }).Fit(data);
        using var stream = new MemoryStream();
        ml.Model.Save(model, data.Schema, stream);
        stream.Position = 0;
        var loaded = (ChatTokenizerTransformer)ml.Model.Load(stream, out _);
        Assert.Equal(template.RoleFormats, loaded.Template.RoleFormats);
        var output = loaded.Transform(data);
        Assert.Equal(ReadTokens(model.Transform(data), "Tokens"), ReadTokens(output, "Tokens"));
        Assert.Equal(ReadMask(model.Transform(data), "M"), ReadMask(output, "M"));
        Assert.True(output.Schema["Tokens"].TryGetLossMaskColumn(out var mask) && mask == "M");
        Assert.Equal([.. Utf8("Q: x\nA: "), .. Utf8("y\n"), 256], ReadTokens(output, "Tokens")[0]);
    }

    private static string Error<T>(MLContext ml, IDataView data, ChatTokenizerOptions options) where T : Exception
        => Assert.Throws<T>(() => ReadTokens(ml.Transforms.Text.TokenizeChat("Tokens", options).Fit(data).Transform(data), "Tokens")).Message;

    [Fact]
    public void BadRecordsNameTheRowColumnAndValue()
    {
        var ml = new MLContext(seed: 1);
        var records = ml.Data.LoadFromEnumerable(new[] { new Record { Instruction = "ok", Response = "fine" }, new Record { Instruction = "Add 1 and 1", Response = "  " } });
        Assert.Equal("TokenizeChat: row 1, column 'Response', value '  ': the response is empty; supervised fine-tuning needs a non-empty response in every record (remove or fill the row).",
            Error<InvalidDataException>(ml, records, new ChatTokenizerOptions { InstructionColumnName = "Instruction", ResponseColumnName = "Response", Tokenizer = Bytes }));

        IDataView Json(string json) => ml.Data.LoadFromEnumerable(new[] { new Messages { Json = json } });
        var options = new ChatTokenizerOptions { MessagesColumnName = "Json", Tokenizer = Bytes };
        Assert.Equal("TokenizeChat: row 0, column 'Json', value '': assistant message 1 is empty; supervised fine-tuning needs a non-empty response in every assistant turn.",
            Error<InvalidDataException>(ml, Json("""[{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]"""), options));
        Assert.Equal("TokenizeChat: row 0, column 'Json', value 'user': the conversation has no assistant turn, so there is nothing to train on.",
            Error<InvalidDataException>(ml, Json("""[{"role": "user", "content": "x"}]"""), options));
        Assert.Equal("TokenizeChat: row 0, column 'Json', value 'bot': message 1 has role 'bot', which the chat template does not format; it formats 'system', 'user', 'assistant'.",
            Error<InvalidDataException>(ml, Json("""[{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}]"""), options));
        Assert.StartsWith("TokenizeChat: row 0, column 'Json', value '[{\"role\": \"user\"': it is not valid JSON (",
            Error<InvalidDataException>(ml, Json("[{\"role\": \"user\""), options));
        Assert.EndsWith("message 0 lacks a string \"role\" or \"content\"; expected OpenAI-style messages: [{\"role\": \"user\", \"content\": \"...\"}, {\"role\": \"assistant\", \"content\": \"...\"}] or {\"messages\": [...]}.",
            Error<InvalidDataException>(ml, Json("""[{"role": "user", "text": "x"}]"""), options));

        var ragged = ml.Data.LoadFromEnumerable(new[] { new Messages { Roles = ["user", "assistant"], Contents = ["x"] } });
        Assert.Equal("TokenizeChat: row 0, column 'Contents', value '1 contents': column 'Roles' has 2 roles but column 'Contents' has 1 contents; message i is (Roles[i], Contents[i]), so they must have the same length.",
            Error<InvalidDataException>(ml, ragged, new ChatTokenizerOptions { RolesColumnName = "Roles", ContentsColumnName = "Contents", Tokenizer = Bytes }));
    }

    [Fact]
    public void TheTokenizerCanComeFromAnUpstreamTokenizeForLmColumn()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Record { Instruction = "a", Response = "b" } });
        var model = ml.Transforms.Text.TokenizeForLm("Ids", "Instruction", LmTokenizerKind.Bytes)
            .Append(ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { InstructionColumnName = "Instruction", ResponseColumnName = "Response", TokenizerColumnName = "Ids" }))
            .Fit(data);
        Assert.Equal(256, model.LastTransformer.EndOfTextId);
        Assert.Equal([.. Utf8("User: a\nAssistant: "), .. Utf8("b\n"), 256], ReadTokens(model.Transform(data), "Tokens")[0]);

        Assert.Equal("Column 'Instruction' (ChatTokenizerOptions.TokenizerColumnName) carries no tokenizer annotation; name a TokenizeForLm output column, or set ChatTokenizerOptions.Tokenizer. (Parameter 'TokenizerColumnName')",
            Assert.Throws<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { InstructionColumnName = "Instruction", ResponseColumnName = "Response", TokenizerColumnName = "Instruction" }).Fit(data)).Message);
    }

    [Fact]
    public void BadOptionsAreReported()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(new[] { new Record { Instruction = "a", Response = "b" } });
        Assert.StartsWith("ChatTokenizerOptions names no input columns; set exactly one of:",
            Assert.Throws<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { Tokenizer = Bytes })).Message);
        Assert.StartsWith("ChatTokenizerOptions names columns of more than one input representation;",
            Assert.Throws<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", new ChatTokenizerOptions { InstructionColumnName = "Instruction", ResponseColumnName = "Response", MessagesColumnName = "M" })).Message);
        Assert.StartsWith("TokenizeChat needs a tokenizer: set ChatTokenizerOptions.Tokenizer",
            Assert.Throws<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", "Instruction", "Response").Fit(data)).Message);
        Assert.StartsWith("The tokenizer (LmTokenizer(Bytes, 256 tokens)) has no end-of-text token, and TokenizeChat appends one after every response",
            Assert.Throws<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", "Instruction", "Response", tokenizer: LmTokenizer.Bytes(endOfTextToken: null)).Fit(data)).Message);
        Assert.Contains("Could not find input column 'Nope'",
            Assert.ThrowsAny<ArgumentException>(() => ml.Transforms.Text.TokenizeChat("Tokens", "Nope", "Response", tokenizer: Bytes).Fit(data)).Message);
    }
}
