using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data.Tests.Chat;

public class ChatTemplateTests
{
    private static readonly ChatTurn[] s_conversation =
    [
        new(ChatRoles.System, "You are terse."),
        new(ChatRoles.User, "Add 23 and 45."),
        new(ChatRoles.Assistant, "68"),
        new(ChatRoles.User, "Reverse abc."),
    ];

    [Fact]
    public void DefaultRendersPlainTextTurnsAndTheGenerationPrompt()
    {
        Assert.Equal(
            "System: You are terse.\nUser: Add 23 and 45.\nAssistant: 68\nUser: Reverse abc.\nAssistant: ",
            ChatTemplate.Default.Render(s_conversation, addGenerationPrompt: true));
        Assert.Equal("Assistant: ", ChatTemplate.Default.GenerationPrompt);
        Assert.Equal(["\nUser:", "\nSystem:"], ChatTemplate.Default.StopStrings);
    }

    [Fact]
    public void ChatMLRendersRoleMarkersAndStopsAtImEnd()
    {
        Assert.Equal(
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n<|im_start|>assistant\n",
            ChatTemplate.ChatML.Render([new(ChatRoles.User, "hi"), new(ChatRoles.Assistant, "hello")], addGenerationPrompt: true));
        Assert.Equal(["<|im_end|>"], ChatTemplate.ChatML.StopStrings);
    }

    [Fact]
    public void SegmentsMarkOnlyAssistantContentAndClosingAsResponse()
    {
        var segments = ChatTemplate.Default.RenderSegments(s_conversation);
        Assert.Equal(string.Concat(segments.Select(s => s.Text)), ChatTemplate.Default.Render(s_conversation));
        Assert.Equal(["68\n"], segments.Where(s => s.IsResponse).Select(s => s.Text));
        Assert.Equal("Assistant: ", segments[4].Text);
        Assert.False(segments[4].IsResponse);
    }

    [Fact]
    public void UserTemplatesMatchRolesIgnoringCaseAndFillTheRoleName()
    {
        var template = new ChatTemplate(new Dictionary<string, string>
        {
            ["User"] = "[{role}] {content}|",
            ["Assistant"] = "> {content}",
        });
        Assert.Equal("[User] q|> a> ", template.Render([new("user", "q"), new("ASSISTANT", "a")], addGenerationPrompt: true));
        // The assistant format has no closing text, so stopping is at the next user turn's opening.
        Assert.Equal(["[User]"], template.StopStrings);
    }

    [Fact]
    public void InstructionRecordsBecomeOneUserAndOneAssistantTurn()
    {
        Assert.Equal(
            [new ChatTurn("user", "Sort the letters.\n\ncab"), new ChatTurn("assistant", "abc")],
            ChatTemplate.InstructionTurns("Sort the letters.", "cab", "abc"));
        Assert.Equal([new ChatTurn("user", "Say hi.")], ChatTemplate.InstructionTurns("Say hi.", input: "", output: null));
    }

    [Fact]
    public void BadTemplatesAndTurnsAreRejectedWithTheirValues()
    {
        var noContent = Assert.Throws<ArgumentException>(() => new ChatTemplate(new Dictionary<string, string> { ["user"] = "U: {role}\n", ["assistant"] = "{content}" }));
        Assert.StartsWith("The chat template format of role 'user' is 'U: {role}\\n'; it must contain '{content}' exactly once.", noContent.Message);
        var twice = Assert.Throws<ArgumentException>(() => new ChatTemplate(new Dictionary<string, string> { ["user"] = "{content}{content}", ["assistant"] = "{content}" }));
        Assert.Contains("exactly once", twice.Message);
        var noAssistant = Assert.Throws<ArgumentException>(() => new ChatTemplate(new Dictionary<string, string> { ["user"] = "{content}" }));
        Assert.StartsWith("The chat template has no format for role 'assistant'; it defines 'user', and needs 'user' and 'assistant'.", noAssistant.Message);
        var unknownRole = Assert.Throws<ArgumentException>(() => ChatTemplate.Default.Render([new("tool", "x")]));
        Assert.StartsWith("Chat turn 0 has role 'tool'; the template formats 'system', 'user', 'assistant'.", unknownRole.Message);
    }

    [Fact]
    public void SaveAndLoadRoundTrip()
    {
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
            ChatTemplate.ChatML.Save(writer);
        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        var loaded = ChatTemplate.Load(reader);
        Assert.Equal(ChatTemplate.ChatML.Render(s_conversation, true), loaded.Render(s_conversation, true));
        Assert.Equal(ChatTemplate.ChatML.ToString(), loaded.ToString());
    }
}
