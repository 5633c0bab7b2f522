// LmTokenizer: the tokenizer files of a Hugging Face checkpoint folder (read and write).
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Llm.Data;

public sealed partial class LmTokenizer
{
    /// <summary>
    /// Loads the tokenizer of a Hugging Face checkpoint folder: a byte-level BPE from <c>tokenizer.json</c> (preferred, as
    /// <c>AutoTokenizer</c> does) or from <c>vocab.json</c> + <c>merges.txt</c>, or a SentencePiece <c>tokenizer.model</c>.
    /// Special tokens come from <c>tokenizer.json</c>'s <c>added_tokens</c> and <c>tokenizer_config.json</c>
    /// (<c>eos_token</c>, <c>pad_token</c>, <c>bos_token</c>, <c>added_tokens_decoder</c>); the end-of-text id from
    /// <c>generation_config.json</c>'s <c>eos_token_id</c> when present (the id generation stops at), else the
    /// tokenizer config's <c>eos_token</c>, else <c>&lt;|endoftext|&gt;</c> when the vocabulary has it.
    /// </summary>
    /// <param name="folder">The checkpoint folder.</param>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder holds none of the tokenizer files above.</exception>
    /// <exception cref="FormatException">A file is malformed or describes a tokenizer this library cannot run (the message names the file).</exception>
    public static LmTokenizer FromHuggingFace(string folder)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException($"The Hugging Face folder '{folder}' does not exist.");
        string tokenizerJson = Path.Combine(folder, "tokenizer.json");
        string vocabJson = Path.Combine(folder, "vocab.json");
        string mergesTxt = Path.Combine(folder, "merges.txt");
        string sentencePiece = Path.Combine(folder, "tokenizer.model");
        var config = ReadJsonObject(Path.Combine(folder, "tokenizer_config.json"));
        var generation = ReadJsonObject(Path.Combine(folder, "generation_config.json"));

        Dictionary<string, int> vocabulary;
        (string, string)[] merges;
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        var pattern = PreTokenizationPattern.Gpt2;
        bool addBos = config?["add_bos_token"] is JsonValue b && b.TryGetValue(out bool v) && v;
        if (File.Exists(tokenizerJson))
        {
            try
            {
                (vocabulary, merges, pattern) = ReadTokenizerJson(tokenizerJson, added);
            }
            catch (FormatException) when (File.Exists(sentencePiece))
            {
                // Llama 2 style folders: tokenizer.json is a SentencePiece-like BPE (Metaspace, byte fallback) that this
                // library runs from the tokenizer.model beside it.
                return FromSentencePiece(sentencePiece, addBos);
            }
        }
        else if (File.Exists(vocabJson) && File.Exists(mergesTxt))
        {
            vocabulary = ReadVocabulary(vocabJson);
            merges = ReadMerges(mergesTxt, vocabulary);
        }
        else if (File.Exists(sentencePiece))
        {
            return FromSentencePiece(sentencePiece, addBos);
        }
        else
        {
            throw new FileNotFoundException(
                $"The Hugging Face folder '{folder}' holds no tokenizer: expected tokenizer.json, vocab.json with merges.txt, or tokenizer.model.");
        }

        // Added tokens of tokenizer_config.json ("added_tokens_decoder": {"50256": {"content": "<|endoftext|>", ...}}).
        if (config?["added_tokens_decoder"] is JsonObject decoder)
        {
            foreach (var (key, value) in decoder)
            {
                if (int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int id) && value?["content"] is JsonValue content)
                    added[content.GetValue<string>()] = id;
            }
        }

        int size = Math.Max(vocabulary.Values.DefaultIfEmpty(-1).Max(), added.Values.DefaultIfEmpty(-1).Max()) + 1;
        var tokensById = new string[size];
        foreach (var (token, id) in vocabulary.Concat(added))
        {
            if (id < 0 || (tokensById[id] is not null && tokensById[id] != token))
                throw new FormatException($"The tokenizer files in '{folder}' give id {id} to '{tokensById[Math.Max(id, 0)]}' and to '{token}'; each id must name one token.");
            tokensById[id] = token;
        }

        int missing = Array.IndexOf(tokensById, null);
        if (missing >= 0)
            throw new FormatException($"The tokenizer files in '{folder}' define no token with id {missing}; ids must run from 0 to {size - 1} without gaps.");

        string? eosToken = TokenText(config?["eos_token"]);
        string? padToken = TokenText(config?["pad_token"]);
        string? bosToken = TokenText(config?["bos_token"]);
        int? eosId = FirstId(generation?["eos_token_id"]);
        if (eosId is null && eosToken is not null && vocabulary.Concat(added).FirstOrDefault(kv => kv.Key == eosToken) is { Key: not null } eosEntry)
            eosId = eosEntry.Value;
        if (eosId is null && vocabulary.TryGetValue(DefaultEndOfTextToken, out int defaultEos))
            eosId = defaultEos;
        if (eosId is int e && (uint)e >= (uint)size)
            throw new FormatException($"The end-of-text id {e} of '{folder}' (generation_config.json eos_token_id or tokenizer_config.json eos_token) is outside the vocabulary of {size} tokens.");

        // Special tokens: the added ones, plus the named ones (which GPT-2's vocab.json holds as ordinary entries).
        var specials = new Dictionary<string, int>(added, StringComparer.Ordinal);
        foreach (string? token in new[] { eosToken, padToken, bosToken })
        {
            if (token is not null && vocabulary.TryGetValue(token, out int id))
                specials.TryAdd(token, id);
        }

        if (eosId is int eid)
            specials.TryAdd(tokensById[eid], eid);
        CheckByteLevel(vocabulary, specials, $"The tokenizer of '{folder}' is not a byte-level BPE");

        int? padId = padToken is not null && specials.TryGetValue(padToken, out int p) ? p : null;
        return CreateBpe(new BpeDefinition(tokensById, merges, pattern), specials, eosId, padId);
    }

    private static (Dictionary<string, int> Vocabulary, (string, string)[] Merges, PreTokenizationPattern Pattern) ReadTokenizerJson(
        string path, Dictionary<string, int> added)
    {
        var root = ReadJsonObject(path)!;
        var model = root["model"] as JsonObject
            ?? throw new FormatException($"The tokenizer file '{path}' has no \"model\" object; expected a Hugging Face tokenizers file.");
        string? type = model["type"]?.GetValue<string>();
        if (type != "BPE")
            throw new FormatException($"The tokenizer file '{path}' has model type '{type}'; this library reads byte-level BPE (\"BPE\") tokenizer.json files only.");
        var pattern = ReadPreTokenizer(path, root["pre_tokenizer"]);
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        if (model["vocab"] is not JsonObject vocab || vocab.Count == 0)
            throw new FormatException($"The tokenizer file '{path}' has no \"model.vocab\" object of token → id.");
        foreach (var (token, id) in vocab)
            vocabulary[token] = id!.GetValue<int>();
        var merges = new List<(string, string)>();
        foreach (var merge in model["merges"] as JsonArray ?? [])
        {
            // Older files write "left right"; tokenizers ≥ 0.20 write ["left", "right"].
            (string, string) pair = merge switch
            {
                JsonArray { Count: 2 } a => (a[0]!.GetValue<string>(), a[1]!.GetValue<string>()),
                JsonValue v when v.GetValue<string>().Split(' ') is [var l, var r] => (l, r),
                _ => throw new FormatException($"The tokenizer file '{path}' has the merge {merge?.ToJsonString()}; expected \"left right\" or [\"left\", \"right\"]."),
            };
            if (!vocabulary.ContainsKey(pair.Item1) || !vocabulary.ContainsKey(pair.Item2) || !vocabulary.ContainsKey(pair.Item1 + pair.Item2))
                throw new FormatException($"The tokenizer file '{path}' merges '{pair.Item1}' and '{pair.Item2}', but its vocabulary lacks one of them or their concatenation.");
            merges.Add(pair);
        }

        foreach (var token in root["added_tokens"] as JsonArray ?? [])
        {
            if (token?["content"] is JsonValue content && token["id"] is JsonValue id)
                added[content.GetValue<string>()] = id.GetValue<int>();
        }

        return (vocabulary, [.. merges], pattern);
    }

    // GPT-2's ByteLevel pre-tokenizer (use_regex true) splits with GPT-2's regex; a Split with another known regex
    // (Llama 3, GPT-4 style) maps to that pattern; anything else would tokenize differently, so it is refused.
    private static PreTokenizationPattern ReadPreTokenizer(string path, JsonNode? node)
    {
        var steps = node?["type"]?.GetValue<string>() == "Sequence" ? (node["pretokenizers"] as JsonArray ?? []).ToList() : [node];
        PreTokenizationPattern? pattern = null;
        foreach (var step in steps)
        {
            string? type = step?["type"]?.GetValue<string>();
            if (type == "ByteLevel")
            {
                if (step!["add_prefix_space"] is JsonValue prefix && prefix.GetValue<bool>())
                    throw new FormatException($"The tokenizer file '{path}' sets add_prefix_space = true; this library's byte-level BPE does not add a leading space.");
                if (step["use_regex"] is not JsonValue useRegex || useRegex.GetValue<bool>())
                    pattern ??= PreTokenizationPattern.Gpt2;
            }
            else if (type == "Split" && step!["pattern"]?["Regex"] is JsonValue regex)
            {
                string text = regex.GetValue<string>();
                pattern = text.Contains("\\p{N}{1,3}", StringComparison.Ordinal) ? PreTokenizationPattern.Cl100k
                    : throw new FormatException($"The tokenizer file '{path}' splits with the regex '{text}'; this library knows GPT-2's and cl100k's pre-tokenization only.");
            }
            else if (type is not null)
            {
                throw new FormatException($"The tokenizer file '{path}' has the pre-tokenizer '{type}'; this library reads ByteLevel (GPT-2) and Split (cl100k regex) only.");
            }
        }

        return pattern ?? throw new FormatException($"The tokenizer file '{path}' has no ByteLevel pre-tokenizer; this library reads byte-level BPE tokenizers only.");
    }

    private static JsonObject? ReadJsonObject(string path)
    {
        if (!File.Exists(path))
            return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject
                ?? throw new FormatException($"The file '{path}' does not hold a JSON object.");
        }
        catch (JsonException e)
        {
            throw new FormatException($"The file '{path}' is not valid JSON ({e.Message}).", e);
        }
    }

    private static string? TokenText(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue(out string? s) => s,
        JsonObject o when o["content"] is JsonValue c => c.GetValue<string>(),
        _ => null,
    };

    private static int? FirstId(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue(out int id) => id,
        JsonArray { Count: > 0 } a when a[0] is JsonValue first && first.TryGetValue(out int id) => id,
        _ => null,
    };

    /// <summary>
    /// Writes this tokenizer in the Hugging Face layout into <paramref name="folder"/> (which must exist): a byte-level
    /// BPE as <c>vocab.json</c> + <c>merges.txt</c> (<c>GPT2Tokenizer</c>), the byte tokenizer as the equivalent
    /// byte-level BPE with no merges (id b is byte b), a SentencePiece model as <c>tokenizer.model</c>
    /// (<c>LlamaTokenizer</c>); plus <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> naming the
    /// end-of-text and padding tokens.
    /// </summary>
    /// <param name="folder">An existing folder.</param>
    /// <param name="modelMaxLength">The model's context length (<c>model_max_length</c>).</param>
    /// <exception cref="NotSupportedException">The tokenizer is a character, Tiktoken or custom tokenizer, which Hugging Face's tokenizer classes cannot reproduce from these files.</exception>
    public void SaveHuggingFace(string folder, int modelMaxLength)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        CheckHuggingFaceExportable();
        var tokenizerConfig = new JsonObject();
        if (_kind == LmTokenizerKind.SentencePiece)
        {
            File.WriteAllBytes(Path.Combine(folder, "tokenizer.model"), _sentencePieceModel!);
            tokenizerConfig["tokenizer_class"] = "LlamaTokenizer";
            tokenizerConfig["add_bos_token"] = _sentencePieceAddsBos;
            tokenizerConfig["add_eos_token"] = false;
        }
        else
        {
            // The byte tokenizer is the byte-level BPE whose vocabulary is the 256 bytes (then its specials) and no merges.
            var definition = _bpe ?? new BpeDefinition(
                [.. Enumerable.Range(0, 256).Select(b => ByteLevelAlphabet.ByteToChar[b].ToString()), .. SpecialTokens.OrderBy(kv => kv.Value).Select(kv => kv.Key)],
                [], PreTokenizationPattern.Gpt2);
            if (definition.Pattern != PreTokenizationPattern.Gpt2)
                throw new NotSupportedException($"This BPE pre-tokenizes with the {definition.Pattern} regex; Hugging Face's GPT2Tokenizer (vocab.json + merges.txt) uses GPT-2's, so only Gpt2-pattern BPEs can be written.");
            using (var stream = File.Create(Path.Combine(folder, "vocab.json")))
            using (var json = new Utf8JsonWriter(stream))
            {
                json.WriteStartObject();
                for (int id = 0; id < definition.TokensById.Length; id++)
                    json.WriteNumber(definition.TokensById[id], id);
                json.WriteEndObject();
            }

            using (var writer = new StreamWriter(Path.Combine(folder, "merges.txt"), false, new UTF8Encoding(false)) { NewLine = "\n" })
            {
                writer.WriteLine("#version: 0.2");
                foreach (var (left, right) in definition.Merges)
                    writer.WriteLine($"{left} {right}");
            }

            tokenizerConfig["tokenizer_class"] = "GPT2Tokenizer";
            tokenizerConfig["add_prefix_space"] = false;
        }

        var specialMap = new JsonObject();
        var addedDecoder = new JsonObject();
        foreach (var (token, id) in SpecialTokens.OrderBy(kv => kv.Value))
            addedDecoder[id.ToString(CultureInfo.InvariantCulture)] = new JsonObject { ["content"] = token, ["special"] = true, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["single_word"] = false };
        if (EndOfTextId is int eos)
        {
            string text = SpecialText(eos);
            tokenizerConfig["eos_token"] = text;
            tokenizerConfig["bos_token"] = text;       // GPT-2's convention: one <|endoftext|> for both
            tokenizerConfig["unk_token"] = text;
            specialMap["eos_token"] = text;
            specialMap["bos_token"] = text;
            specialMap["unk_token"] = text;
        }

        if (PadId is int pad)
        {
            tokenizerConfig["pad_token"] = SpecialText(pad);
            specialMap["pad_token"] = SpecialText(pad);
        }

        tokenizerConfig["added_tokens_decoder"] = addedDecoder;
        tokenizerConfig["model_max_length"] = modelMaxLength;
        tokenizerConfig["clean_up_tokenization_spaces"] = false;
        var indented = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), tokenizerConfig.ToJsonString(indented));
        File.WriteAllText(Path.Combine(folder, "special_tokens_map.json"), specialMap.ToJsonString(indented));
    }

    private string SpecialText(int id) => SpecialTokens.FirstOrDefault(kv => kv.Value == id).Key ?? Decode([id]);

    /// <summary>Throws unless <see cref="SaveHuggingFace"/> can write this tokenizer (checked before anything is written).</summary>
    /// <exception cref="NotSupportedException">The kind has no Hugging Face equivalent here.</exception>
    public void CheckHuggingFaceExportable()
    {
        if (_kind is LmTokenizerKind.Bpe or LmTokenizerKind.Bytes or LmTokenizerKind.SentencePiece)
        {
            if (_bpe is { Pattern: not PreTokenizationPattern.Gpt2 } bpe)
                throw new NotSupportedException($"This BPE pre-tokenizes with the {bpe.Pattern} regex; Hugging Face's GPT2Tokenizer (vocab.json + merges.txt) uses GPT-2's, so only Gpt2-pattern BPEs can be written in the Hugging Face layout.");
            return;
        }

        throw new NotSupportedException(
            $"A {_kind} tokenizer cannot be written in the Hugging Face layout; Bpe (GPT-2 pattern), Bytes and SentencePiece tokenizers can. Export the model without its tokenizer (includeTokenizer: false).");
    }
}
