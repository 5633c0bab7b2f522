using Microsoft.ML.Llm.Data;

namespace Microsoft.ML.Llm.Data.Tests.Chat;

/// <summary>Chat templates read from tokenizer_config.json: the simple per-message forms, and clear refusals (issue 13).</summary>
public class HuggingFaceChatTemplateTests
{
    private static readonly ChatTurn[] Conversation = [new("system", "Be terse."), new("user", "Hi"), new("assistant", "Hello")];

    // Qwen2/ChatML as shipped (the whitespace-control variant many models use).
    private const string ChatMl =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    [Fact]
    public void ChatMlTemplateRendersLikeTheBuiltInOne()
    {
        var template = HuggingFaceChatTemplate.Parse(ChatMl);
        Assert.Equal(ChatTemplate.ChatML.Render(Conversation, addGenerationPrompt: true), template.Render(Conversation, addGenerationPrompt: true));
        Assert.Equal("<|im_start|>assistant\n", template.GenerationPrompt);
    }

    [Fact]
    public void WhitespaceControlAndRoleBranchesAreRead()
    {
        // Zephyr-like, with one branch per role, eos_token, whitespace control and indentation (trim_blocks/lstrip_blocks).
        const string jinja = """
            {%- for message in messages %}
                {%- if message['role'] == 'user' %}
                    {{- '<|user|>\n' + message['content'] + eos_token + '\n' }}
                {%- elif message.role == "system" %}
                    {{- '<|system|>\n' + message['content'] + eos_token + '\n' }}
                {%- elif message['role'] == 'assistant' %}
                    {{- '<|assistant|>\n' + message.content + eos_token + '\n' }}
                {%- endif %}
            {%- endfor %}
            {%- if add_generation_prompt %}
                {{- '<|assistant|>\n' }}
            {%- endif %}
            """;
        var template = HuggingFaceChatTemplate.Parse(jinja, eosToken: "</s>");
        Assert.Equal("<|system|>\nBe terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|assistant|>\n", template.Render(Conversation, addGenerationPrompt: true));
        // The assistant's content and closing text are the response segment.
        Assert.Equal(new ChatSegment("Hello</s>\n", IsResponse: true), template.RenderSegments(Conversation)[^1]);
    }

    [Fact]
    public void ZephyrsTemplateIsReadAsPublished()
    {
        // HuggingFaceH4/zephyr-7b-beta's chat_template, verbatim (the generation prompt inside the loop; the newlines
        // after each expression are kept, those after block tags are trimmed).
        const string zephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n" +
            "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n" +
            "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";
        var template = HuggingFaceChatTemplate.Parse(zephyr, eosToken: "</s>");
        Assert.Equal("<|system|>\nBe terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n<|assistant|>\n", template.Render(Conversation, addGenerationPrompt: true));
    }

    [Fact]
    public void TokenizerConfigIsReadWithItsSpecialTokens()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hf-chat-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), System.Text.Json.JsonSerializer.Serialize(new
            {
                bos_token = new { content = "<s>", lstrip = false },
                eos_token = "</s>",
                chat_template = "{% for message in messages %}{{ bos_token + message['role'] + ': ' + message['content'] + eos_token }}{% endfor %}",
            }));
            var template = HuggingFaceChatTemplate.Load(dir);
            Assert.Equal("<s>user: Hi</s><s>assistant: Hello</s>", template.Render([new("user", "Hi"), new("assistant", "Hello")]));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void OtherTemplatesAreRefusedNamingTheFileAndWhatIsSupported()
    {
        string dir = Path.Combine(Path.GetTempPath(), "hf-chat-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            // Llama 2's template: a system-prompt special case and raise_exception.
            string file = Path.Combine(dir, "tokenizer_config.json");
            File.WriteAllText(file, System.Text.Json.JsonSerializer.Serialize(new
            {
                chat_template = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}" +
                    "{% for message in loop_messages %}{{ raise_exception('x') }}{% endfor %}",
            }));
            var error = Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Load(dir));
            Assert.StartsWith($"The chat template in '{file}' is not a simple per-message format: it starts with '{{% if messages[0]['role'] == 'system' %}}' rather than '{{% for message in messages %}}'. Supported: a {{% for message in messages %}} loop", error.Message);
            Assert.EndsWith("Build a ChatTemplate from role formats instead.", error.Message);

            File.WriteAllText(file, "{\"eos_token\": \"</s>\"}");
            Assert.Equal($"'{file}' has no \"chat_template\"; build a ChatTemplate from role formats (or use ChatTemplate.Default).",
                Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Load(file)).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        Assert.Contains("it writes 'message['content'] | trim'",
            Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Parse("{% for message in messages %}{{ message['content'] | trim }}{% endfor %}")).Message);
        Assert.Contains("it uses eos_token, which the tokenizer configuration does not define",
            Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Parse("{% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}")).Message);
        Assert.Contains("its generation prompt 'Bot: ' is not the opening of its assistant turn '<|im_start|>assistant\\n'",
            Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Parse(ChatMl.Replace("<|im_start|>assistant\\n' }}", "Bot: ' }}"))).Message);
        Assert.Contains("it has an {% else %} branch",
            Assert.Throws<FormatException>(() => HuggingFaceChatTemplate.Parse("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% else %}{{ m['content'] }}{% endif %}{% endfor %}")).Message);
        Assert.Throws<FileNotFoundException>(() => HuggingFaceChatTemplate.Load("/nonexistent/tokenizer_config.json"));
    }
}
