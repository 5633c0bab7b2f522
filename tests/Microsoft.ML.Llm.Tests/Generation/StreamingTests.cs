using System.Text;
using Microsoft.ML.Llm.Data;
using TorchSharp;

namespace Microsoft.ML.Llm.Tests.Generation;

[Collection("Torch")]
public class StreamingTests
{
    [Fact]
    public async Task SyncAndAsyncStreamsConcatenateToTheNonStreamingResult()
    {
        using var model = GenerationTestModel.Create(contextLength: 16);
        var generator = GenerationTestModel.Generator(model);
        foreach (var options in new[]
        {
            new GenerationOptions { DoSample = false, MaxNewTokens = 30 },
            new GenerationOptions { MaxNewTokens = 30, Seed = 9, TopK = 10, NoRepeatNgramSize = 3 },
            new GenerationOptions { DoSample = false, MaxNewTokens = 30, StopStrings = ["e"] },
        })
        {
            string whole = generator.Generate("to be", options);
            Assert.Equal(whole, string.Concat(generator.GenerateStreaming("to be", options)));
            var pieces = new List<string>();
            await foreach (var piece in generator.GenerateStreamingAsync("to be", options))
            {
                pieces.Add(piece);
            }

            Assert.Equal(whole, string.Concat(pieces));
            Assert.All(pieces, p => Assert.NotEqual("", p));
        }
    }

    [Fact]
    public void PiecesAreCompleteUtf8Characters()
    {
        // A byte-level tokenizer: "é" and "€" take 2 and 3 tokens, so a token often ends inside a character.
        var bytes = LmTokenizer.Bytes();
        torch.manual_seed(3);
        using var model = new GptModel(GptConfig.Tiny(bytes.VocabularySize, 64));
        model.eval();
        var generator = new TextGenerator(model, bytes);

        // Bad words keep the sampled bytes valid UTF-8 with multi-byte characters: above 0x7F only the bytes of é (C3 A9)
        // and € (E2 82 AC), each lead followed by its continuation and no continuation byte anywhere else.
        var options = new GenerationOptions { MaxNewTokens = 120, Seed = 1 };
        int[] special = [0xC3, 0xA9, 0xE2, 0x82, 0xAC];
        for (int b = 0x80; b < 256; b++)
        {
            if (!special.Contains(b))
            {
                options.BadWordsIds.Add([b]);
            }
        }

        var follower = new Dictionary<int, int> { [0xC3] = 0xA9, [0xE2] = 0x82, [0x82] = 0xAC };
        for (int previous = 0; previous < 256; previous++)
        {
            for (int next = 0; next < bytes.VocabularySize; next++)
            {
                bool ok = follower.TryGetValue(previous, out int only) ? next == only : next is not (0xA9 or 0x82 or 0xAC);
                if (!ok && (next < 0x80 || next > 0xFF || special.Contains(next)))
                {
                    options.BadWordsIds.Add([previous, next]);
                }
            }
        }

        var pieces = generator.GenerateStreaming("café €", options).ToList();
        string text = string.Concat(pieces);
        Assert.Equal(generator.Generate("café €", options), text);
        // Only the very end may hold an incomplete character (the length limit cut it), flushed as U+FFFD.
        Assert.DoesNotContain('\uFFFD', text.TrimEnd('\uFFFD'));
        Assert.True(text.Contains('é') || text.Contains('€'), $"no multi-byte character in '{text}'");
        Assert.Contains(pieces, p => p.Length > 0 && (p[^1] == 'é' || p[^1] == '€'));
        Assert.All(pieces.SkipLast(1), p => Assert.DoesNotContain('\uFFFD', p));
    }

    [Fact]
    public async Task CancellationStopsWithinOneToken()
    {
        using var model = GenerationTestModel.Create(contextLength: 64);
        var generator = GenerationTestModel.Generator(model);
        var options = new GenerationOptions { DoSample = false, MaxNewTokens = 60 };
        using var cancel = new CancellationTokenSource();
        var received = new List<string>();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var piece in generator.GenerateStreamingAsync("to be", options, cancel.Token))
            {
                received.Add(piece);
                if (received.Count == 3)
                {
                    cancel.Cancel();
                }
            }
        });

        Assert.Equal(3, received.Count);   // a character tokenizer: one piece per token, none after the cancel
        Assert.Equal(string.Concat(received), generator.Generate("to be", options)[..3]);
    }

    [Fact]
    public void StreamingRejectsBeamSearch()
    {
        using var model = GenerationTestModel.Create();
        var generator = GenerationTestModel.Generator(model);
        var ex = Assert.Throws<ArgumentException>(() => generator.GenerateStreaming("to", new GenerationOptions { DoSample = false, NumBeams = 2 }));
        Assert.Equal("Streaming yields one completion as it is generated; GenerationOptions.NumBeams is 2 and NumReturnSequences 1 (both must be 1). Call Generate for beam search or several sequences. (Parameter 'options')", ex.Message);
    }
}
