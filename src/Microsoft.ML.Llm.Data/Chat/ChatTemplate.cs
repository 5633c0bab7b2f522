namespace Microsoft.ML.Llm.Data;

/// <summary>One message of a conversation: who speaks (<see cref="ChatRoles"/>) and what they say.</summary>
/// <param name="Role">The speaker: "system", "user" or "assistant" (the names OpenAI and Hugging Face use), or a role
/// the template defines.</param>
/// <param name="Content">The message text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>The role names every <see cref="ChatTemplate"/> understands.</summary>
public static class ChatRoles
{
    /// <summary>Instructions to the assistant, before the conversation.</summary>
    public const string System = "system";

    /// <summary>The person talking to the model.</summary>
    public const string User = "user";

    /// <summary>The model: the turns a fine-tuned model learns to write, and the one a generator completes.</summary>
    public const string Assistant = "assistant";
}

/// <summary>A piece of a rendered conversation, and whether the model is trained to write it.</summary>
/// <param name="Text">The text.</param>
/// <param name="IsResponse">True for an assistant turn's content and closing text: the tokens a supervised fine-tuning
/// loss is computed on (Hugging Face TRL's <c>assistant_only_loss</c>).</param>
public readonly record struct ChatSegment(string Text, bool IsResponse);

/// <summary>
/// Turns a conversation into the text a causal language model reads, and tells which parts are the model's own.
/// Each role has a format with one <c>{content}</c> placeholder (and optionally <c>{role}</c>): a turn renders as its
/// role's format with the placeholders filled in, turns are concatenated, and the text before <c>{content}</c> in the
/// assistant's format is the <see cref="GenerationPrompt"/> a generator is given to write the next reply.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Default"/> is plain text that any byte-level or character tokenizer encodes without special tokens, so it
/// also suits the small models this library trains from scratch:
/// </para>
/// <code>
/// System: You are terse.
/// User: Add 23 and 45.
/// Assistant: 68
/// </code>
/// <para>
/// <see cref="ChatML"/> is the <c>&lt;|im_start|&gt;role … &lt;|im_end|&gt;</c> format of OpenAI's ChatML and many
/// Hugging Face chat models. Supervised fine-tuning appends the tokenizer's end-of-text token after every assistant
/// turn, so a fine-tuned model learns to stop; <see cref="StopStrings"/> stop a model that has not learned that.
/// </para>
/// </remarks>
public sealed class ChatTemplate
{
    /// <summary>The placeholder for a turn's text in a role format.</summary>
    public const string ContentPlaceholder = "{content}";

    /// <summary>The placeholder for the role name in a role format (optional).</summary>
    public const string RolePlaceholder = "{role}";

    private readonly Dictionary<string, (string Prefix, string Suffix)> _formats;

    /// <summary>
    /// A template from one format per role. Role names are matched ignoring case; <c>{role}</c> in a format is replaced by
    /// the role name as written in the dictionary key.
    /// </summary>
    /// <param name="roleFormats">The format of each role, e.g. <c>["user"] = "User: {content}\n"</c>. It must define
    /// <see cref="ChatRoles.User"/> and <see cref="ChatRoles.Assistant"/>; each format holds <c>{content}</c> exactly once.</param>
    /// <exception cref="ArgumentException">A format lacks <c>{content}</c> or holds it more than once, or the user or
    /// assistant role is missing.</exception>
    public ChatTemplate(IReadOnlyDictionary<string, string> roleFormats)
    {
        ArgumentNullException.ThrowIfNull(roleFormats);
        _formats = new Dictionary<string, (string, string)>(StringComparer.OrdinalIgnoreCase);
        foreach (var (role, format) in roleFormats)
        {
            if (string.IsNullOrWhiteSpace(role))
                throw new ArgumentException("A chat template role name is empty; give names such as 'system', 'user', 'assistant'.", nameof(roleFormats));
            ArgumentNullException.ThrowIfNull(format, nameof(roleFormats));
            int at = format.IndexOf(ContentPlaceholder, StringComparison.Ordinal);
            if (at < 0 || format.IndexOf(ContentPlaceholder, at + 1, StringComparison.Ordinal) >= 0)
            {
                throw new ArgumentException(
                    $"The chat template format of role '{role}' is '{Escape(format)}'; it must contain '{ContentPlaceholder}' exactly once.", nameof(roleFormats));
            }
            string prefix = format[..at].Replace(RolePlaceholder, role, StringComparison.Ordinal);
            string suffix = format[(at + ContentPlaceholder.Length)..].Replace(RolePlaceholder, role, StringComparison.Ordinal);
            _formats[role] = (prefix, suffix);
        }
        foreach (var required in (string[])[ChatRoles.User, ChatRoles.Assistant])
        {
            if (!_formats.ContainsKey(required))
                throw new ArgumentException($"The chat template has no format for role '{required}'; it defines {RoleList()}, and needs 'user' and 'assistant'.", nameof(roleFormats));
        }
        RoleFormats = roleFormats.ToDictionary(p => p.Key, p => p.Value, StringComparer.OrdinalIgnoreCase);
        GenerationPrompt = _formats[ChatRoles.Assistant].Prefix;
        StopStrings = ComputeStopStrings();
    }

    /// <summary>
    /// The default: <c>System: {content}\n</c>, <c>User: {content}\n</c>, <c>Assistant: {content}\n</c>. Plain text, so it
    /// needs no special tokens; stops at <c>"\nUser:"</c> and <c>"\nSystem:"</c>.
    /// </summary>
    public static ChatTemplate Default { get; } = new(new Dictionary<string, string>
    {
        [ChatRoles.System] = "System: {content}\n",
        [ChatRoles.User] = "User: {content}\n",
        [ChatRoles.Assistant] = "Assistant: {content}\n",
    });

    /// <summary>ChatML: <c>&lt;|im_start|&gt;{role}\n{content}&lt;|im_end|&gt;\n</c> for every role; stops at <c>&lt;|im_end|&gt;</c>.</summary>
    public static ChatTemplate ChatML { get; } = new(new Dictionary<string, string>
    {
        [ChatRoles.System] = "<|im_start|>{role}\n{content}<|im_end|>\n",
        [ChatRoles.User] = "<|im_start|>{role}\n{content}<|im_end|>\n",
        [ChatRoles.Assistant] = "<|im_start|>{role}\n{content}<|im_end|>\n",
    });

    /// <summary>The format of each role, as given.</summary>
    public IReadOnlyDictionary<string, string> RoleFormats { get; }

    /// <summary>The text that opens an assistant turn (the assistant format before <c>{content}</c>): appended to the
    /// rendered conversation, it asks the model for the next reply.</summary>
    public string GenerationPrompt { get; }

    /// <summary>
    /// Texts that end an assistant turn, for generation with a model that has not learned to emit end-of-text: the
    /// assistant format's closing text when it is a marker (ChatML's <c>&lt;|im_end|&gt;</c>), otherwise that closing
    /// text followed by the opening of a user or system turn (the default's <c>"\nUser:"</c>, <c>"\nSystem:"</c>),
    /// trailing white space removed.
    /// </summary>
    public IReadOnlyList<string> StopStrings { get; }

    /// <summary>The roles this template formats.</summary>
    public IEnumerable<string> Roles => _formats.Keys;

    /// <summary>
    /// The text of <paramref name="turns"/>; with <paramref name="addGenerationPrompt"/>, followed by
    /// <see cref="GenerationPrompt"/> (Hugging Face's <c>apply_chat_template(add_generation_prompt=True)</c>).
    /// </summary>
    public string Render(IReadOnlyList<ChatTurn> turns, bool addGenerationPrompt = false)
    {
        var text = new StringBuilder();
        foreach (var segment in RenderSegments(turns))
            text.Append(segment.Text);
        if (addGenerationPrompt)
            text.Append(GenerationPrompt);
        return text.ToString();
    }

    /// <summary>
    /// The text of <paramref name="turns"/> in pieces: each turn's opening text (not a response), then its content and
    /// closing text (a response for assistant turns). Concatenated, the pieces equal <see cref="Render"/>'s text. Empty
    /// pieces are left out.
    /// </summary>
    /// <exception cref="ArgumentException">A turn is null, or its role is not one of the template's.</exception>
    public IReadOnlyList<ChatSegment> RenderSegments(IReadOnlyList<ChatTurn> turns)
    {
        ArgumentNullException.ThrowIfNull(turns);
        var segments = new List<ChatSegment>(turns.Count * 2);
        for (int i = 0; i < turns.Count; i++)
        {
            var turn = turns[i] ?? throw new ArgumentException($"Chat turn {i} is null.", nameof(turns));
            var (prefix, suffix) = FormatOf(turn.Role, i);
            bool response = string.Equals(turn.Role, ChatRoles.Assistant, StringComparison.OrdinalIgnoreCase);
            if (prefix.Length > 0)
                segments.Add(new ChatSegment(prefix, IsResponse: false));
            string body = (turn.Content ?? "") + suffix;
            if (body.Length > 0)
                segments.Add(new ChatSegment(body, response));
        }
        return segments;
    }

    /// <summary>
    /// The conversation of an instruction record (Alpaca's instruction/input/output): one user turn holding the
    /// instruction, and the input after a blank line when there is one, then the output as the assistant's turn (left
    /// out when <paramref name="output"/> is null, for prompting).
    /// </summary>
    public static IReadOnlyList<ChatTurn> InstructionTurns(string instruction, string? input, string? output)
    {
        ArgumentNullException.ThrowIfNull(instruction);
        string user = string.IsNullOrEmpty(input) ? instruction : instruction + "\n\n" + input;
        return output is null
            ? [new ChatTurn(ChatRoles.User, user)]
            : [new ChatTurn(ChatRoles.User, user), new ChatTurn(ChatRoles.Assistant, output)];
    }

    /// <inheritdoc/>
    public override string ToString() => string.Join(", ", RoleFormats.Select(p => $"{p.Key}: '{Escape(p.Value)}'"));

    /// <summary>Writes the template (role count, then role and format strings).</summary>
    internal void Save(BinaryWriter writer)
    {
        writer.Write(RoleFormats.Count);
        foreach (var (role, format) in RoleFormats)
        {
            writer.Write(role);
            writer.Write(format);
        }
    }

    /// <summary>Reads a template <see cref="Save"/> wrote.</summary>
    internal static ChatTemplate Load(BinaryReader reader)
    {
        int count = reader.ReadInt32();
        if (count is < 0 or > 1024)
            throw new InvalidDataException($"The saved chat template has {count} roles; expected 2 to 1024.");
        var formats = new Dictionary<string, string>(count);
        for (int i = 0; i < count; i++)
        {
            string role = reader.ReadString();
            formats[role] = reader.ReadString();
        }
        return new ChatTemplate(formats);
    }

    private (string Prefix, string Suffix) FormatOf(string? role, int index)
    {
        if (role is not null && _formats.TryGetValue(role, out var format))
            return format;
        throw new ArgumentException($"Chat turn {index} has role '{role}'; the template formats {RoleList()}.", "turns");
    }

    private string RoleList() => string.Join(", ", _formats.Keys.Select(r => $"'{r}'"));

    private List<string> ComputeStopStrings()
    {
        string closing = _formats[ChatRoles.Assistant].Suffix;
        var stops = new List<string>();
        if (closing.Trim().Length > 0)
        {
            stops.Add(closing.TrimEnd());
            return stops;
        }
        foreach (var role in (string[])[ChatRoles.User, ChatRoles.System])
        {
            if (!_formats.TryGetValue(role, out var format))
                continue;
            string stop = (closing + format.Prefix).TrimEnd();
            if (stop.Trim().Length > 0 && !stops.Contains(stop))
                stops.Add(stop);
        }
        return stops;
    }

    private static string Escape(string s) => s.Replace("\n", "\\n", StringComparison.Ordinal);
}
