// Reads the chat template a Hugging Face model ships in tokenizer_config.json ("chat_template", a Jinja program) where it
// is a simple per-message format — the ChatML shape and its role-conditional variants — and turns it into a
// ChatTemplate. Anything else (conditions on other variables, loops over content parts, raise_exception, system-prompt
// defaults…) is refused with a message that names the file and what is supported: a faithful Jinja interpreter is out
// of scope, and a template silently rendered differently from Python would train on the wrong format.
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// Reads Hugging Face chat templates (<c>tokenizer_config.json</c>'s <c>chat_template</c>) of the simple per-message
/// form into a <see cref="ChatTemplate"/>.
/// </summary>
/// <remarks>
/// Supported: one loop over <c>messages</c> whose body writes, per message, text and expressions joined with <c>+</c>
/// of string literals, <c>message['role']</c>, <c>message['content']</c> (or <c>message.role</c>,
/// <c>message.content</c>), <c>bos_token</c> and <c>eos_token</c>; the body may instead be one
/// <c>{% if message['role'] == 'user' %}…{% elif message['role'] == 'assistant' %}…{% endif %}</c> chain with one
/// branch per role; after the loop, an optional <c>{% if add_generation_prompt %}…{% endif %}</c> that writes the
/// opening of an assistant turn (or, as Zephyr's, <c>{% if loop.last and add_generation_prompt %}…{% endif %}</c> at
/// the end of the loop body). For example ChatML:
/// <code>
/// {% for message in messages %}{{'&lt;|im_start|&gt;' + message['role'] + '\n' + message['content'] + '&lt;|im_end|&gt;' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '&lt;|im_start|&gt;assistant\n' }}{% endif %}
/// </code>
/// Whitespace control (<c>{%-</c>, <c>-%}</c>, <c>{{-</c>, <c>-}}</c>) and comments are honoured, as are the
/// <c>trim_blocks</c> and <c>lstrip_blocks</c> settings <c>transformers</c> renders with.
/// </remarks>
public static class HuggingFaceChatTemplate
{
    private const string Supported =
        "Supported: a {% for message in messages %} loop whose body writes string literals, message['role'], message['content'], bos_token and eos_token " +
        "joined with '+' (optionally one {% if message['role'] == '...' %}…{% elif … %}…{% endif %} branch per role), and an optional " +
        "{% if add_generation_prompt %} block after it that writes the assistant turn's opening (ChatML is such a template). " +
        "Build a ChatTemplate from role formats instead";

    /// <summary>
    /// Reads the chat template of a Hugging Face model: <paramref name="path"/> is its <c>tokenizer_config.json</c> or
    /// the folder holding it. <c>bos_token</c> and <c>eos_token</c> come from the same file.
    /// </summary>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    /// <exception cref="FormatException">The file has no chat template, or one this reader does not support; the
    /// message names the file and what is supported.</exception>
    public static ChatTemplate Load(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string file = Directory.Exists(path) ? Path.Combine(path, "tokenizer_config.json") : path;
        if (!File.Exists(file))
            throw new FileNotFoundException($"Could not find the tokenizer configuration '{file}' (a Hugging Face model folder holds tokenizer_config.json).", file);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(File.ReadAllText(file));
        }
        catch (JsonException e)
        {
            throw new FormatException($"'{file}' is not valid JSON: {e.Message}", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("chat_template", out var template))
                throw new FormatException($"'{file}' has no \"chat_template\"; build a ChatTemplate from role formats (or use ChatTemplate.Default).");
            string jinja = template.ValueKind switch
            {
                JsonValueKind.String => template.GetString()!,
                // Newer files hold a list of named templates: the "default" one is what apply_chat_template uses.
                JsonValueKind.Array => template.EnumerateArray()
                    .Where(t => t.ValueKind == JsonValueKind.Object && t.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == "default"
                        && t.TryGetProperty("template", out var s) && s.ValueKind == JsonValueKind.String)
                    .Select(t => t.GetProperty("template").GetString()!)
                    .FirstOrDefault() ?? throw new FormatException($"'{file}' holds a list of chat templates without one named \"default\"."),
                _ => throw new FormatException($"'{file}' has a \"chat_template\" of JSON type {template.ValueKind}; expected a string."),
            };
            return Parse(jinja, SpecialToken(root, "bos_token"), SpecialToken(root, "eos_token"), $"'{file}'");
        }
    }

    /// <summary>Parses a Jinja chat template of the supported form (see the remarks of <see cref="HuggingFaceChatTemplate"/>).</summary>
    /// <param name="jinja">The template text.</param>
    /// <param name="bosToken">The value of <c>bos_token</c>, if the template uses it.</param>
    /// <param name="eosToken">The value of <c>eos_token</c>, if the template uses it.</param>
    /// <param name="source">How messages name the template's origin (e.g. the file).</param>
    /// <exception cref="FormatException">The template is not of the supported form.</exception>
    public static ChatTemplate Parse(string jinja, string? bosToken = null, string? eosToken = null, string source = "the chat template")
    {
        ArgumentNullException.ThrowIfNull(jinja);
        List<Item> items;
        try
        {
            items = Lex(jinja);
        }
        catch (FormatException e)
        {
            throw new FormatException($"The chat template in {source} is not a simple per-message format: {e.Message} {Supported}.", e);
        }
        return new Parser(items, bosToken, eosToken, source).Run();
    }

    private static string? SpecialToken(JsonElement root, string name)
    {
        if (!root.TryGetProperty(name, out var value))
            return null;
        return value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
            _ => null,
        };
    }

    private enum Kind
    {
        Text,
        Expression,
        Statement,
    }

    private readonly record struct Item(Kind Kind, string Value);

    /// <summary>Splits the template into text, <c>{{ }}</c> and <c>{% %}</c> items, applying whitespace control,
    /// comments, trim_blocks and lstrip_blocks.</summary>
    private static List<Item> Lex(string s)
    {
        var items = new List<Item>();
        int i = 0;
        bool trimNext = false;      // a "-}}"/"-%}" before: strip the next text's leading white space
        bool afterBlock = false;    // trim_blocks: the first newline after a block tag is removed
        var text = new StringBuilder();
        void FlushText(bool trimEnd, bool lstrip)
        {
            string t = text.ToString();
            text.Clear();
            if (trimNext)
                t = t.TrimStart();
            else if (afterBlock && t.StartsWith('\n'))
                t = t[1..];
            if (trimEnd)
            {
                t = t.TrimEnd();
            }
            else if (lstrip)
            {
                // lstrip_blocks: spaces and tabs from the start of a line up to a block tag are removed.
                int lineStart = t.LastIndexOf('\n') + 1;
                if (t.AsSpan(lineStart).Trim(" \t").IsEmpty)
                    t = t[..lineStart];
            }
            if (t.Length > 0)
                items.Add(new Item(Kind.Text, t));
            trimNext = false;
            afterBlock = false;
        }
        while (i < s.Length)
        {
            if (i + 1 < s.Length && s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
            {
                char open = s[i + 1];
                string close = open switch { '{' => "}}", '%' => "%}", _ => "#}" };
                int end = s.IndexOf(close, i + 2, StringComparison.Ordinal);
                if (end < 0)
                    throw new FormatException($"Unclosed '{{{open}' at character {i}.");
                string inner = s[(i + 2)..end];
                bool trimBefore = inner.StartsWith('-');
                bool trimAfter = inner.EndsWith('-');
                FlushText(trimBefore, lstrip: open != '{');
                if (open != '#')
                {
                    string body = inner.Trim('-').Trim();
                    items.Add(new Item(open == '{' ? Kind.Expression : Kind.Statement, body));
                }
                trimNext = trimAfter;
                afterBlock = open != '{';
                i = end + 2;
                continue;
            }
            text.Append(s[i]);
            i++;
        }
        FlushText(false, false);
        return items;
    }

    private sealed class Parser(List<Item> items, string? bos, string? eos, string source)
    {
        private int _at;
        private string _loopVariable = "message";

        public ChatTemplate Run()
        {
            var loop = Match(Kind.Statement) ?? throw Unsupported("it does not start with a loop over messages");
            var m = Regex.Match(loop, @"^for\s+(\w+)\s+in\s+messages$");
            if (!m.Success)
                throw Unsupported($"it starts with '{{% {loop} %}}' rather than '{{% for message in messages %}}'");
            _loopVariable = m.Groups[1].Value;

            var formats = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            if (Peek() is { Kind: Kind.Statement } first && first.Value.StartsWith("if ", StringComparison.Ordinal))
            {
                // One branch per role.
                string? condition = Take().Value;
                while (true)
                {
                    string role = RoleOf(condition);
                    string format = Sequence(role);
                    formats[role] = format;
                    var next = Take();
                    if (next.Kind != Kind.Statement)
                        throw Unsupported($"unexpected '{next.Value}' in the role branches");
                    if (next.Value == "endif")
                        break;
                    if (next.Value == "else")
                        throw Unsupported("it has an {% else %} branch (a format for any other role)");
                    if (!next.Value.StartsWith("elif ", StringComparison.Ordinal))
                        throw Unsupported($"'{{% {next.Value} %}}' in the role branches");
                    condition = next.Value[2..];   // "elif x" → "if x"
                }
            }
            else
            {
                string format = Sequence(role: null);
                foreach (var role in (string[])[ChatRoles.System, ChatRoles.User, ChatRoles.Assistant])
                    formats[role] = format;
            }
            // Zephyr's form: the generation prompt inside the loop, after the last message.
            string? generationPrompt = null;
            if (Peek() is { Kind: Kind.Statement, Value: var inLoop }
                && Regex.IsMatch(inLoop, @"^if\s+(loop\.last\s+and\s+add_generation_prompt|add_generation_prompt\s+and\s+loop\.last)$"))
            {
                generationPrompt = GenerationBlock();
            }
            if (Take() is not { Kind: Kind.Statement, Value: "endfor" })
                throw Unsupported("the message loop holds more than one output sequence or one chain of role branches");

            if (generationPrompt is null && Peek() is { Kind: Kind.Statement, Value: var s } && Regex.IsMatch(s, @"^if\s+add_generation_prompt$"))
                generationPrompt = GenerationBlock();
            if (_at < items.Count)
                throw Unsupported($"'{items[_at].Value}' follows the message loop");

            ChatTemplate template;
            try
            {
                template = new ChatTemplate(formats);
            }
            catch (ArgumentException e)
            {
                throw Unsupported(e.Message);
            }
            if (generationPrompt is not null && generationPrompt != template.GenerationPrompt)
            {
                throw Unsupported($"its generation prompt '{Escape(generationPrompt)}' is not the opening of its assistant turn '{Escape(template.GenerationPrompt)}'");
            }
            return template;
        }

        /// <summary>An <c>{% if … add_generation_prompt %}</c> block: its text, up to its <c>{% endif %}</c>.</summary>
        private string GenerationBlock()
        {
            _at++;
            string prompt = Sequence(role: "", generation: true);
            if (Take() is not { Kind: Kind.Statement, Value: "endif" })
                throw Unsupported("the add_generation_prompt block holds more than text");
            return prompt;
        }

        private string RoleOf(string condition)
        {
            string v = Regex.Escape(_loopVariable);
            var m = Regex.Match(condition, $@"^if\s+{v}(?:\[\s*['""]role['""]\s*\]|\.role)\s*==\s*(['""])(\w+)\1$");
            if (!m.Success)
                throw Unsupported($"the condition '{condition}' is not {_loopVariable}['role'] == '...'");
            return m.Groups[2].Value;
        }

        /// <summary>Text and expressions up to the next statement, as a role format.</summary>
        private string Sequence(string? role, bool generation = false)
        {
            var format = new StringBuilder();
            while (Peek() is { Kind: not Kind.Statement } item)
            {
                _at++;
                if (item.Kind == Kind.Text)
                {
                    format.Append(Literal(item.Value));
                    continue;
                }
                foreach (var term in SplitTerms(item.Value))
                    format.Append(Term(term, role, generation));
            }
            return format.ToString();
        }

        private string Term(string term, string? role, bool generation)
        {
            string v = Regex.Escape(_loopVariable);
            if (term.Length >= 2 && (term[0] == '\'' || term[0] == '"') && term[^1] == term[0])
                return Literal(Unquote(term));
            if (!generation && Regex.IsMatch(term, $@"^{v}(?:\[\s*['""]content['""]\s*\]|\.content)$"))
                return ChatTemplate.ContentPlaceholder;
            if (!generation && Regex.IsMatch(term, $@"^{v}(?:\[\s*['""]role['""]\s*\]|\.role)$"))
                return role ?? ChatTemplate.RolePlaceholder;
            if (term == "bos_token")
                return Literal(bos ?? throw Unsupported("it uses bos_token, which the tokenizer configuration does not define"));
            if (term == "eos_token")
                return Literal(eos ?? throw Unsupported("it uses eos_token, which the tokenizer configuration does not define"));
            throw Unsupported($"it writes '{term}'");
        }

        private string Literal(string text)
        {
            if (text.Contains(ChatTemplate.ContentPlaceholder, StringComparison.Ordinal) || text.Contains(ChatTemplate.RolePlaceholder, StringComparison.Ordinal))
                throw Unsupported($"its literal text '{Escape(text)}' contains a ChatTemplate placeholder");
            return text;
        }

        /// <summary>Splits an expression at the top-level '+' signs (outside string literals).</summary>
        private List<string> SplitTerms(string expression)
        {
            var terms = new List<string>();
            var current = new StringBuilder();
            char quote = '\0';
            for (int i = 0; i < expression.Length; i++)
            {
                char c = expression[i];
                if (quote != '\0')
                {
                    current.Append(c);
                    if (c == '\\' && i + 1 < expression.Length)
                        current.Append(expression[++i]);
                    else if (c == quote)
                        quote = '\0';
                    continue;
                }
                if (c is '\'' or '"')
                {
                    quote = c;
                    current.Append(c);
                }
                else if (c == '+')
                {
                    terms.Add(current.ToString().Trim());
                    current.Clear();
                }
                else
                {
                    current.Append(c);
                }
            }
            if (quote != '\0')
                throw Unsupported($"the expression '{expression}' has an unterminated string");
            terms.Add(current.ToString().Trim());
            if (terms.Any(t => t.Length == 0))
                throw Unsupported($"the expression '{expression}' is not a '+'-joined list of terms");
            return terms;
        }

        private static string Unquote(string literal)
        {
            var s = new StringBuilder();
            for (int i = 1; i < literal.Length - 1; i++)
            {
                char c = literal[i];
                if (c != '\\' || i + 1 >= literal.Length - 1)
                {
                    s.Append(c);
                    continue;
                }
                char e = literal[++i];
                s.Append(e switch { 'n' => '\n', 't' => '\t', 'r' => '\r', _ => e });
            }
            return s.ToString();
        }

        private Item? Peek() => _at < items.Count ? items[_at] : null;

        private Item Take() => _at < items.Count ? items[_at++] : throw Unsupported("it ends inside a block");

        private string? Match(Kind kind) => Peek() is { } item && item.Kind == kind ? Take().Value : null;

        private FormatException Unsupported(string reason) =>
            new($"The chat template in {source} is not a simple per-message format: {reason}. {Supported}.");

        private static string Escape(string s) => s.Replace("\n", "\\n", StringComparison.Ordinal);
    }
}
