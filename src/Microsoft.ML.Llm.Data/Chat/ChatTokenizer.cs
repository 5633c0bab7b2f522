// TokenizeChat: instruction records (Alpaca's instruction / optional input / output) or chat conversations → the tokens
// of the conversation rendered with a ChatTemplate, plus a loss mask that is true only on the assistant's responses and
// the end-of-text after each (TRL's completion-only / assistant-only loss), for supervised fine-tuning (SFT).
// PackTokens carries the mask through packing and the trainer and Evaluate pick it up from the annotations.
using System.Text.Json;

namespace Microsoft.ML.Llm.Data;

/// <summary>
/// Options of <c>TokenizeChat</c>. Set exactly one input representation:
/// <list type="bullet">
/// <item><b>Instruction records</b>: <see cref="InstructionColumnName"/> and <see cref="ResponseColumnName"/> (text), and
/// optionally <see cref="InputColumnName"/> (text; empty = none). A record is one user turn (the instruction, then the
/// input after a blank line) and one assistant turn (the response): <see cref="ChatTemplate.InstructionTurns"/>.</item>
/// <item><b>Parallel message vectors</b>: <see cref="RolesColumnName"/> and <see cref="ContentsColumnName"/>, two text
/// vectors of the same length per row: message i is (Roles[i], Contents[i]), e.g. <c>["user", "assistant"]</c> and
/// <c>["Add 2 and 3", "5"]</c>.</item>
/// <item><b>OpenAI-style JSON</b>: <see cref="MessagesColumnName"/>, a text column holding
/// <c>[{"role": "user", "content": "…"}, {"role": "assistant", "content": "…"}]</c> or the fine-tuning line form
/// <c>{"messages": [ … ]}</c>.</item>
/// </list>
/// Every conversation needs at least one assistant turn, and no assistant turn may be empty.
/// </summary>
public sealed class ChatTokenizerOptions
{
    /// <summary>Default values, written once.</summary>
    public static class Defaults
    {
        public const string LossMaskColumnName = "LossMask";
    }

    /// <summary>Records: the instruction (text) column.</summary>
    public string? InstructionColumnName { get; set; }

    /// <summary>Records: the optional input (context) column; an empty value means no input.</summary>
    public string? InputColumnName { get; set; }

    /// <summary>Records: the response (Alpaca's "output") column; the tokens the model is trained to write.</summary>
    public string? ResponseColumnName { get; set; }

    /// <summary>Messages: the text-vector column of roles ("system", "user", "assistant", or the template's own).</summary>
    public string? RolesColumnName { get; set; }

    /// <summary>Messages: the text-vector column of contents, parallel to <see cref="RolesColumnName"/>.</summary>
    public string? ContentsColumnName { get; set; }

    /// <summary>Messages: a text column of OpenAI-style JSON messages.</summary>
    public string? MessagesColumnName { get; set; }

    /// <summary>The chat template; null means <see cref="ChatTemplate.Default"/>. <see cref="HuggingFaceChatTemplate"/>
    /// reads the one a Hugging Face model ships in <c>tokenizer_config.json</c>.</summary>
    public ChatTemplate? Template { get; set; }

    /// <summary>
    /// The tokenizer: for fine-tuning, the tokenizer of the model being fine-tuned (<c>CausalLmTransformer.Tokenizer</c>).
    /// When null, the tokenizer annotated on <see cref="TokenizerColumnName"/> (a <c>TokenizeForLm</c> output column).
    /// </summary>
    public LmTokenizer? Tokenizer { get; set; }

    /// <summary>An input column carrying a tokenizer annotation (<c>TokenizeForLm</c>'s output), used when
    /// <see cref="Tokenizer"/> is null.</summary>
    public string? TokenizerColumnName { get; set; }

    /// <summary>The token appended after every response so the model learns to stop; null takes the tokenizer's
    /// end-of-text id (a tokenizer without one needs this set).</summary>
    public int? EndOfTextId { get; set; }

    /// <summary>The name of the loss-mask column added (a Boolean vector, one value per token, true on responses).</summary>
    public string LossMaskColumnName { get; set; } = Defaults.LossMaskColumnName;

    internal ChatTokenizerOptions Clone() => (ChatTokenizerOptions)MemberwiseClone();

    internal ChatSource Source
    {
        get
        {
            bool records = InstructionColumnName is not null || ResponseColumnName is not null || InputColumnName is not null;
            bool vectors = RolesColumnName is not null || ContentsColumnName is not null;
            bool json = MessagesColumnName is not null;
            int chosen = (records ? 1 : 0) + (vectors ? 1 : 0) + (json ? 1 : 0);
            if (chosen != 1)
            {
                throw new ArgumentException(
                    (chosen == 0 ? "ChatTokenizerOptions names no input columns" : "ChatTokenizerOptions names columns of more than one input representation") +
                    "; set exactly one of: InstructionColumnName + ResponseColumnName (+ optional InputColumnName), RolesColumnName + ContentsColumnName, or MessagesColumnName.",
                    "options");
            }
            if (records && (string.IsNullOrEmpty(InstructionColumnName) || string.IsNullOrEmpty(ResponseColumnName)))
            {
                throw new ArgumentException(
                    $"ChatTokenizerOptions: instruction records need both InstructionColumnName and ResponseColumnName; got '{InstructionColumnName}' and '{ResponseColumnName}'.",
                    string.IsNullOrEmpty(InstructionColumnName) ? nameof(InstructionColumnName) : nameof(ResponseColumnName));
            }
            if (vectors && (string.IsNullOrEmpty(RolesColumnName) || string.IsNullOrEmpty(ContentsColumnName)))
            {
                throw new ArgumentException(
                    $"ChatTokenizerOptions: message vectors need both RolesColumnName and ContentsColumnName; got '{RolesColumnName}' and '{ContentsColumnName}'.",
                    string.IsNullOrEmpty(RolesColumnName) ? nameof(RolesColumnName) : nameof(ContentsColumnName));
            }
            if (json && MessagesColumnName!.Length == 0)
                throw new ArgumentException("ChatTokenizerOptions.MessagesColumnName is empty; name a text column of JSON messages.", nameof(MessagesColumnName));
            return records ? ChatSource.Records : vectors ? ChatSource.RolesAndContents : ChatSource.MessagesJson;
        }
    }

    internal void Validate()
    {
        _ = Source;
        ArgumentException.ThrowIfNullOrEmpty(LossMaskColumnName);
        if (EndOfTextId is < 0)
            throw new ArgumentOutOfRangeException(nameof(EndOfTextId), EndOfTextId, $"ChatTokenizerOptions.EndOfTextId must be a token id (>= 0); got {EndOfTextId}.");
    }
}

/// <summary>Which input representation <c>TokenizeChat</c> reads.</summary>
internal enum ChatSource
{
    Records = 0,
    RolesAndContents = 1,
    MessagesJson = 2,
}

/// <summary>Estimator of <c>TokenizeChat</c>: checks the columns and resolves the tokenizer and end-of-text id.</summary>
public sealed class ChatTokenizerEstimator : IEstimator<ChatTokenizerTransformer>
{
    private readonly string _outputColumnName;
    private readonly ChatTokenizerOptions _options;

    internal ChatTokenizerEstimator(string outputColumnName, ChatTokenizerOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(outputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _outputColumnName = outputColumnName;
        _options = options.Clone();
    }

    /// <summary>Checks the input columns and creates the transformer (no data is read).</summary>
    public ChatTokenizerTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        var options = _options.Clone();
        ChatTokenizerTransformer.InputColumns(input.Schema, options);
        var tokenizer = options.Tokenizer;
        if (tokenizer is null && options.TokenizerColumnName is { } source)
        {
            var column = input.Schema.GetColumnOrNull(source) ?? throw SchemaChecks.MissingColumn(nameof(input), source);
            if (!column.TryGetTokenizer(out tokenizer))
            {
                throw new ArgumentException(
                    $"Column '{source}' (ChatTokenizerOptions.TokenizerColumnName) carries no tokenizer annotation; name a TokenizeForLm output column, or set ChatTokenizerOptions.Tokenizer.",
                    nameof(ChatTokenizerOptions.TokenizerColumnName));
            }
        }
        if (tokenizer is null)
        {
            throw new ArgumentException(
                "TokenizeChat needs a tokenizer: set ChatTokenizerOptions.Tokenizer (for fine-tuning, the Tokenizer of the model being fine-tuned) " +
                "or ChatTokenizerOptions.TokenizerColumnName (a column carrying TokenizeForLm's tokenizer annotation).", nameof(ChatTokenizerOptions.Tokenizer));
        }
        int eos = options.EndOfTextId ?? tokenizer.EndOfTextId ?? throw new ArgumentException(
            $"The tokenizer ({tokenizer}) has no end-of-text token, and TokenizeChat appends one after every response so the model learns to stop; " +
            "set ChatTokenizerOptions.EndOfTextId or use a tokenizer with an end-of-text token.", nameof(ChatTokenizerOptions.EndOfTextId));
        if (eos >= tokenizer.VocabularySize)
        {
            throw new ArgumentOutOfRangeException(nameof(ChatTokenizerOptions.EndOfTextId), eos,
                $"ChatTokenizerOptions.EndOfTextId {eos} is outside the tokenizer's vocabulary; valid ids are 0 to {tokenizer.VocabularySize - 1}.");
        }
        options.Tokenizer = tokenizer;
        options.EndOfTextId = eos;
        options.Template ??= ChatTemplate.Default;
        return new ChatTokenizerTransformer(_outputColumnName, options);
    }

    /// <summary>Checks the input columns and adds the token column (with its annotations) and the loss-mask column.</summary>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        foreach (var (name, vector) in ChatTokenizerTransformer.RequiredColumns(_options))
        {
            if (!inputSchema.TryFindColumn(name, out var column))
                throw SchemaChecks.MissingColumn(nameof(inputSchema), name);
            bool ok = column.ItemType is TextDataViewType && (column.Kind == SchemaShape.Column.VectorKind.Scalar) != vector;
            if (!ok)
                throw SchemaChecks.Mismatch(nameof(inputSchema), name, vector ? "VarVector<String>" : "String", SchemaChecks.Describe(column));
        }
        var columns = inputSchema.ToDictionary(c => c.Name);
        columns[_outputColumnName] = ModelPersistence.SchemaColumn(_outputColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Int32, isKey: false,
            LmAnnotations.ShapeOf(tokenizer: true, lossMask: true, documentIds: false));
        columns[_options.LossMaskColumnName] = ModelPersistence.SchemaColumn(_options.LossMaskColumnName, SchemaShape.Column.VectorKind.VariableVector, BooleanDataViewType.Instance, isKey: false);
        return ModelPersistence.SchemaShapeOf(columns.Values);
    }
}

/// <summary>
/// Transformer of <c>TokenizeChat</c>: appends the token column (variable-length Int32 vector, annotated with the
/// tokenizer and the name of its loss-mask column) and the loss-mask column (Boolean vector, true on the assistant's
/// responses and the end-of-text token after each). Row-to-row. Each template segment is tokenized on its own, so a
/// token never straddles a prompt and a response and the mask is exact.
/// </summary>
public sealed class ChatTokenizerTransformer : AppendColumnsTransformerBase, IPersistentComponent<ChatTokenizerTransformer>
{
    internal const string LoaderSignature = "LlmChatTokenizer";

    internal static readonly ComponentVersion Version =
        new("LMCHATTK", 0x00010002, 0x00010002, LoaderSignature, typeof(ChatTokenizerTransformer).Assembly);

    static ComponentVersion IPersistentComponent<ChatTokenizerTransformer>.PersistenceVersion => Version;

    private readonly ChatTokenizerOptions _options;

    internal ChatTokenizerTransformer(string outputColumnName, ChatTokenizerOptions options)
        : base(Version)
    {
        OutputColumnName = outputColumnName;
        _options = options;
    }

    /// <summary>The token column added.</summary>
    public string OutputColumnName { get; }

    /// <summary>The loss-mask column added.</summary>
    public string LossMaskColumnName => _options.LossMaskColumnName;

    /// <summary>The template conversations are rendered with.</summary>
    public ChatTemplate Template => _options.Template!;

    /// <summary>The tokenizer.</summary>
    public LmTokenizer Tokenizer => _options.Tokenizer!;

    /// <summary>The token appended after every response.</summary>
    public int EndOfTextId => _options.EndOfTextId!.Value;

    /// <summary>
    /// Tokenizes one conversation: the ids of each template segment, the end-of-text id after each response; the mask
    /// is true on response segments and their end-of-text.
    /// </summary>
    public (int[] Tokens, bool[] LossMask) Tokenize(IReadOnlyList<ChatTurn> turns)
    {
        var ids = new List<int>();
        var mask = new List<bool>();
        Tokenize(turns, ids, mask);
        return (ids.ToArray(), mask.ToArray());
    }

    private void Tokenize(IReadOnlyList<ChatTurn> turns, List<int> ids, List<bool> mask)
    {
        foreach (var segment in Template.RenderSegments(turns))
        {
            int before = ids.Count;
            Tokenizer.EncodeInto(segment.Text, ids);
            if (segment.IsResponse)
                ids.Add(EndOfTextId);
            for (int i = before; i < ids.Count; i++)
                mask.Add(segment.IsResponse);
        }
    }

    /// <summary>The input columns of the chosen representation: (name, is a vector).</summary>
    internal static IEnumerable<(string Name, bool Vector)> RequiredColumns(ChatTokenizerOptions o)
    {
        switch (o.Source)
        {
            case ChatSource.Records:
                yield return (o.InstructionColumnName!, false);
                if (!string.IsNullOrEmpty(o.InputColumnName))
                    yield return (o.InputColumnName, false);
                yield return (o.ResponseColumnName!, false);
                break;
            case ChatSource.RolesAndContents:
                yield return (o.RolesColumnName!, true);
                yield return (o.ContentsColumnName!, true);
                break;
            default:
                yield return (o.MessagesColumnName!, false);
                break;
        }
    }

    /// <summary>Finds and type-checks the input columns.</summary>
    internal static DataViewSchema.Column[] InputColumns(DataViewSchema schema, ChatTokenizerOptions o)
    {
        var result = new List<DataViewSchema.Column>();
        foreach (var (name, vector) in RequiredColumns(o))
        {
            if (!vector)
            {
                result.Add(SchemaChecks.TextColumn(schema, name));
                continue;
            }
            var column = schema.GetColumnOrNull(name) ?? throw SchemaChecks.MissingColumn("inputSchema", name);
            if (column.Type is not VectorDataViewType { ItemType: TextDataViewType })
                throw SchemaChecks.Mismatch("inputSchema", name, "VarVector<String>", column.Type.ToString() ?? "");
            result.Add(column);
        }
        return [.. result];
    }

    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        var inputs = InputColumns(inputSchema, _options);
        var annotations = new DataViewSchema.Annotations.Builder();
        LmAnnotations.Add(annotations, Tokenizer);
        LmAnnotations.AddColumnName(annotations, LmAnnotations.LossMaskColumnKind, LossMaskColumnName);
        AddedColumn[] added =
        [
            new(OutputColumnName, new VectorDataViewType(NumberDataViewType.Int32), annotations.ToAnnotations()),
            new(LossMaskColumnName, new VectorDataViewType(BooleanDataViewType.Instance)),
        ];
        return new AppendColumnsMapper(inputSchema, inputs.Select(c => c.Index).ToArray(), added, (row, active) =>
        {
            var read = TurnReader(row, inputs);
            var ids = new List<int>();
            var mask = new List<bool>();
            long cached = -1;
            void Compute()
            {
                if (cached == row.Position && cached >= 0)
                    return;
                ids.Clear();
                mask.Clear();
                Tokenize(read(), ids, mask);
                cached = row.Position;
            }
            ValueGetter<VBuffer<int>> tokens = (ref VBuffer<int> value) =>
            {
                Compute();
                var editor = VBufferEditor.Create(ref value, ids.Count);
                ids.CopyTo(editor.Values);
                value = editor.Commit();
            };
            ValueGetter<VBuffer<bool>> lossMask = (ref VBuffer<bool> value) =>
            {
                Compute();
                var editor = VBufferEditor.Create(ref value, mask.Count);
                mask.CopyTo(editor.Values);
                value = editor.Commit();
            };
            return [active(0) ? tokens : null, active(1) ? lossMask : null];
        });
    }

    /// <summary>Reads the conversation of the current row, checking it (messages name the row, column and value).</summary>
    private Func<IReadOnlyList<ChatTurn>> TurnReader(DataViewRow row, DataViewSchema.Column[] inputs)
    {
        var o = _options;
        switch (o.Source)
        {
            case ChatSource.Records:
                {
                    var instruction = row.GetGetter<ReadOnlyMemory<char>>(inputs[0]);
                    var input = inputs.Length == 3 ? row.GetGetter<ReadOnlyMemory<char>>(inputs[1]) : null;
                    var response = row.GetGetter<ReadOnlyMemory<char>>(inputs[^1]);
                    ReadOnlyMemory<char> i = default, x = default, r = default;
                    return () =>
                    {
                        instruction(ref i);
                        response(ref r);
                        if (input is not null)
                            input(ref x);
                        string instructionText = i.ToString(), responseText = r.ToString();
                        if (string.IsNullOrWhiteSpace(instructionText))
                            throw BadRecord(row.Position, o.InstructionColumnName!, instructionText, "the instruction is empty; every record needs an instruction");
                        if (string.IsNullOrWhiteSpace(responseText))
                            throw BadRecord(row.Position, o.ResponseColumnName!, responseText, "the response is empty; supervised fine-tuning needs a non-empty response in every record (remove or fill the row)");
                        return ChatTemplate.InstructionTurns(instructionText, input is null ? null : x.ToString(), responseText);
                    };
                }
            case ChatSource.RolesAndContents:
                {
                    var roles = row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(inputs[0]);
                    var contents = row.GetGetter<VBuffer<ReadOnlyMemory<char>>>(inputs[1]);
                    VBuffer<ReadOnlyMemory<char>> rs = default, cs = default;
                    return () =>
                    {
                        roles(ref rs);
                        contents(ref cs);
                        var roleValues = rs.DenseValues().Select(v => v.ToString()).ToArray();
                        var contentValues = cs.DenseValues().Select(v => v.ToString()).ToArray();
                        if (roleValues.Length != contentValues.Length)
                        {
                            throw BadRecord(row.Position, o.ContentsColumnName!, $"{contentValues.Length} contents",
                                $"column '{o.RolesColumnName}' has {roleValues.Length} roles but column '{o.ContentsColumnName}' has {contentValues.Length} contents; message i is (Roles[i], Contents[i]), so they must have the same length");
                        }
                        var turns = roleValues.Zip(contentValues, (role, content) => new ChatTurn(role, content)).ToArray();
                        return CheckTurns(turns, row.Position, o.RolesColumnName!, o.ContentsColumnName!);
                    };
                }
            default:
                {
                    var messages = row.GetGetter<ReadOnlyMemory<char>>(inputs[0]);
                    ReadOnlyMemory<char> m = default;
                    return () =>
                    {
                        messages(ref m);
                        string json = m.ToString();
                        return CheckTurns(ParseMessages(json, row.Position, o.MessagesColumnName!), row.Position, o.MessagesColumnName!, o.MessagesColumnName!);
                    };
                }
        }
    }

    /// <summary>Roles the template knows, at least one assistant turn, no empty assistant turn.</summary>
    private IReadOnlyList<ChatTurn> CheckTurns(ChatTurn[] turns, long row, string rolesColumn, string contentsColumn)
    {
        var known = Template.Roles.ToHashSet(StringComparer.OrdinalIgnoreCase);
        bool anyResponse = false;
        for (int i = 0; i < turns.Length; i++)
        {
            if (!known.Contains(turns[i].Role))
            {
                throw BadRecord(row, rolesColumn, turns[i].Role,
                    $"message {i} has role '{turns[i].Role}', which the chat template does not format; it formats {string.Join(", ", Template.Roles.Select(r => $"'{r}'"))}");
            }
            if (string.Equals(turns[i].Role, ChatRoles.Assistant, StringComparison.OrdinalIgnoreCase))
            {
                if (string.IsNullOrWhiteSpace(turns[i].Content))
                    throw BadRecord(row, contentsColumn, turns[i].Content, $"assistant message {i} is empty; supervised fine-tuning needs a non-empty response in every assistant turn");
                anyResponse = true;
            }
        }
        if (!anyResponse)
            throw BadRecord(row, rolesColumn, string.Join(", ", turns.Select(t => t.Role)), "the conversation has no assistant turn, so there is nothing to train on");
        return turns;
    }

    /// <summary>Parses <c>[{"role":…,"content":…}, …]</c> or <c>{"messages": [ … ]}</c>.</summary>
    private static ChatTurn[] ParseMessages(string json, long row, string column)
    {
        const string Expected = "expected OpenAI-style messages: [{\"role\": \"user\", \"content\": \"...\"}, {\"role\": \"assistant\", \"content\": \"...\"}] or {\"messages\": [...]}";
        try
        {
            using var document = JsonDocument.Parse(json);
            var root = document.RootElement;
            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("messages", out var inner))
                root = inner;
            if (root.ValueKind != JsonValueKind.Array)
                throw BadRecord(row, column, json, Expected);
            var turns = new List<ChatTurn>();
            foreach (var message in root.EnumerateArray())
            {
                if (message.ValueKind != JsonValueKind.Object
                    || !message.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String
                    || !message.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                {
                    throw BadRecord(row, column, json, $"message {turns.Count} lacks a string \"role\" or \"content\"; {Expected}");
                }
                turns.Add(new ChatTurn(role.GetString()!, content.GetString()!));
            }
            return [.. turns];
        }
        catch (JsonException e)
        {
            throw BadRecord(row, column, json, $"it is not valid JSON ({e.Message}); {Expected}");
        }
    }

    private static InvalidDataException BadRecord(long row, string column, string value, string problem)
    {
        string shown = value.Length > 80 ? value[..77] + "..." : value;
        shown = shown.Replace("\n", "\\n", StringComparison.Ordinal);
        return new InvalidDataException($"TokenizeChat: row {row}, column '{column}', value '{shown}': {problem}.");
    }

    // Binary format (version 0x00010002, the first): OutputColumnName, LossMaskColumnName (string), Source (int32), then
    // InstructionColumnName, InputColumnName, ResponseColumnName, RolesColumnName, ContentsColumnName, MessagesColumnName,
    // TokenizerColumnName (string each, "" for null), EndOfTextId (int32), the ChatTemplate (ChatTemplate.Save), the
    // tokenizer (LmTokenizer.Save). No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        var o = _options;
        w.Write(OutputColumnName);
        w.Write(o.LossMaskColumnName);
        w.Write((int)o.Source);
        foreach (var name in new[] { o.InstructionColumnName, o.InputColumnName, o.ResponseColumnName, o.RolesColumnName, o.ContentsColumnName, o.MessagesColumnName, o.TokenizerColumnName })
            w.Write(name ?? "");
        w.Write(EndOfTextId);
        Template.Save(w);
        Tokenizer.Save(w);
    }

    // Binary format: see SaveState.
    static ChatTokenizerTransformer IPersistentComponent<ChatTokenizerTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string output = r.ReadString();
        string mask = r.ReadString();
        int source = r.ReadInt32();
        string? Name()
        {
            string s = r.ReadString();
            return s.Length == 0 ? null : s;
        }
        var options = new ChatTokenizerOptions
        {
            LossMaskColumnName = mask,
            InstructionColumnName = Name(),
            InputColumnName = Name(),
            ResponseColumnName = Name(),
            RolesColumnName = Name(),
            ContentsColumnName = Name(),
            MessagesColumnName = Name(),
            TokenizerColumnName = Name(),
            EndOfTextId = r.ReadInt32(),
        };
        options.Template = ChatTemplate.Load(r);
        options.Tokenizer = LmTokenizer.Load(r);
        options.Validate();
        if ((int)options.Source != source)
            throw new InvalidDataException($"The saved TokenizeChat transform records input representation {source} but its columns describe {(int)options.Source}.");
        return new ChatTokenizerTransformer(output, options);
    }
}
