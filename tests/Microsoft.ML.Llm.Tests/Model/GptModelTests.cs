using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Model;

[Collection("Torch")]
public class GptModelTests
{
    private static GptModel NewModel(GptConfig config, long seed = 1234)
    {
        torch.manual_seed(seed);
        var model = new GptModel(config);
        model.eval();
        return model;
    }

    private static Tensor RandomTokens(long batch, long length, int vocabulary, long seed)
    {
        var generator = new torch.Generator((ulong)seed);
        return randint(0, vocabulary, [batch, length], dtype: ScalarType.Int64, generator: generator);
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void ForwardMapsTokensToPaddedVocabularyLogits(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Style = style });
        var logits = model.forward(RandomTokens(3, 10, 50, 1));
        Assert.Equal(new long[] { 3, 10, 64 }, logits.shape);
        Assert.Equal(ScalarType.Float32, logits.dtype);
        Assert.True(logits.isfinite().all().item<bool>());

        // The full context is accepted, and the same input gives the same logits.
        var idx = RandomTokens(2, 16, 50, 2);
        Assert.True(model.forward(idx).allclose(model.forward(idx), rtol: 0, atol: 0));
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void ChangingAFutureTokenNeverChangesEarlierLogits(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Style = style });
        var idx = RandomTokens(2, 12, 50, 3);
        var before = model.forward(idx);
        for (long changed = 0; changed < 12; changed++)
        {
            var altered = idx.clone();
            altered[.., changed] = (idx[.., changed] + 1) % 50;
            var after = model.forward(altered);
            if (changed > 0)
            {
                Assert.True(after[.., ..(int)changed].allclose(before[.., ..(int)changed], rtol: 0, atol: 1e-6), $"position {changed} leaked backwards");
            }

            // ...while the changed position and everything after it do change.
            Assert.False(after[.., (int)changed..].allclose(before[.., (int)changed..], rtol: 0, atol: 1e-4));
        }
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void DocumentMaskingIsolatesDocumentsAndRestartsPositions(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Style = style });

        // One row packing three documents: tokens 0-4, 5-10, 11-15.
        var idx = RandomTokens(1, 16, 50, 4);
        var documents = tensor(new long[] { 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9 }).reshape(1, 16);
        var packed = model.forward(idx, documents);

        // Each document's logits equal those of the document run alone from position 0: it sees nothing of the
        // documents before it, and its positions (learned or rotary) restart at 0.
        foreach (var (start, end) in new[] { (0, 5), (5, 11), (11, 16) })
        {
            var alone = model.forward(idx[.., start..end].contiguous());
            Assert.True(packed[.., start..end].allclose(alone, rtol: 0, atol: 1e-5), $"document {start}..{end} differs from running it alone");
        }

        // Changing a token of document 1 changes nothing in documents 2 and 3.
        var altered = idx.clone();
        altered[0, 2] = (idx[0, 2] + 1) % 50;
        var afterChange = model.forward(altered, documents);
        Assert.True(afterChange[.., 5..].allclose(packed[.., 5..], rtol: 0, atol: 1e-6));
        Assert.False(afterChange[.., 2..5].allclose(packed[.., 2..5], rtol: 0, atol: 1e-4));

        // Without document ids the same row is one long document, which differs from the packed result after token 5.
        var plain = model.forward(idx);
        Assert.True(plain[.., ..5].allclose(packed[.., ..5], rtol: 0, atol: 1e-5));
        Assert.False(plain[.., 5..].allclose(packed[.., 5..], rtol: 0, atol: 1e-4));

        // A single document id per row is plain causal attention, through the mask path.
        var oneDocument = zeros(2, 16, dtype: ScalarType.Int64);
        var batch = RandomTokens(2, 16, 50, 5);
        Assert.True(model.forward(batch, oneDocument).allclose(model.forward(batch), rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void Gpt2SmallHasTheKnownParameterCount()
    {
        // By hand, C = 768, padded vocabulary 50304, context 1024, 12 layers:
        //   wte 50304·768 = 38,633,472; wpe 1024·768 = 786,432
        //   per block: ln_1 2·768 = 1,536; c_attn 768·2304 + 2304 = 1,771,776; attn.c_proj 768·768 + 768 = 590,592;
        //              ln_2 1,536; c_fc 768·3072 + 3072 = 2,362,368; mlp.c_proj 3072·768 + 768 = 2,360,064
        //              → 7,087,872; × 12 = 85,054,464
        //   ln_f 1,536
        //   total 38,633,472 + 786,432 + 85,054,464 + 1,536 = 124,475,904. (Hugging Face's GPT-2, unpadded, has
        //   124,439,808 = 47·768 fewer.) Without wpe: 123,689,472, the "123.69M" nanoGPT prints.
        using var model = NewModel(GptConfig.Gpt2Small());
        Assert.Equal(124_475_904L, model.ParameterCount);
        Assert.Equal(123_689_472L, model.NonEmbeddingParameterCount);
        Assert.Equal(model.ParameterCount, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void ModernSmallHasTheHandComputedParameterCount()
    {
        // wte 50304·768 = 38,633,472, no wpe (RoPE), no biases;
        // per block: two RMSNorm weights 1,536; c_attn 768·2304 = 1,769,472; attn.c_proj 589,824;
        //            c_fc (gate and up) 768·4096 = 3,145,728; mlp.c_proj 2048·768 = 1,572,864 → 7,079,424; × 12 = 84,953,088
        // ln_f 768 → total 123,587,328.
        using var model = NewModel(GptConfig.ModernSmall(50257, 1024));
        Assert.Equal(123_587_328L, model.ParameterCount);
        Assert.Equal(model.ParameterCount, model.NonEmbeddingParameterCount);
    }

    [Fact]
    public void FlopsPerTokenFollowNanoGptEstimate()
    {
        // ShakespeareChar(65): C = 128, padded vocabulary 128, context 64, 4 layers, 4 heads of 32.
        //   wte 128·128 = 16,384; wpe 64·128 = 8,192
        //   per block: ln 256 + c_attn 128·384+384 = 49,536 + c_proj 16,512 + ln 256 + c_fc 128·512+512 = 66,048
        //              + c_proj 512·128+128 = 65,664 → 198,272; × 4 = 793,088; ln_f 256
        //   total 817,920; N (without wpe) 809,728
        //   flops/token = 6·809,728 + 12·4·4·32·64 = 4,858,368 + 393,216 = 5,251,584
        using var model = NewModel(GptConfig.ShakespeareChar(65));
        Assert.Equal(817_920L, model.ParameterCount);
        Assert.Equal(809_728L, model.NonEmbeddingParameterCount);
        Assert.Equal(5_251_584.0, model.FlopsPerToken);

        // Without biases (nanoGPT train.py's default bias = False):
        //   per block: ln 128 + c_attn 49,152 + c_proj 16,384 + ln 128 + c_fc 65,536 + c_proj 65,536 = 196,864; × 4 = 787,456
        //   + wte 16,384 + wpe 8,192 + ln_f 128 = 812,160; N = 803,968; flops/token = 4,823,808 + 393,216 = 5,217,024
        using var noBias = NewModel(GptConfig.ShakespeareChar(65) with { Bias = false });
        Assert.Equal(812_160L, noBias.ParameterCount);
        Assert.Equal(803_968L, noBias.NonEmbeddingParameterCount);
        Assert.Equal(5_217_024.0, noBias.FlopsPerToken);

        // No vocabulary padding (litgpt padding_multiple 1): wte has 65 rows, 63·128 = 8,064 fewer parameters.
        using var unpadded = NewModel(GptConfig.ShakespeareChar(65) with { VocabularyPaddingMultiple = 1 });
        Assert.Equal(65, unpadded.Config.PaddedVocabularySize);
        Assert.Equal(817_920L - 8_064, unpadded.ParameterCount);
    }

    [Fact]
    public void WeightsFollowGpt2Initialisation()
    {
        using var scope = NewDisposeScope();
        var config = GptConfig.ShakespeareChar(65) with { EmbeddingSize = 256, LayerCount = 8 };
        using var model = NewModel(config);
        double residualStd = 0.02 / Math.Sqrt(2 * 8);                 // 0.0050
        foreach (var (name, p) in model.named_parameters())
        {
            double std = p.std().item<float>(), mean = p.mean().item<float>();
            if (name.EndsWith("c_proj.weight", StringComparison.Ordinal))
            {
                Assert.InRange(std, residualStd * 0.97, residualStd * 1.03);
            }
            else if (p.dim() >= 2)
            {
                Assert.InRange(std, 0.02 * 0.97, 0.02 * 1.03);          // c_attn, c_fc, wte, wpe
            }
            else if (name.EndsWith(".bias", StringComparison.Ordinal))
            {
                Assert.Equal(0.0, p.abs().max().item<float>());
            }
            else
            {
                Assert.True(p.eq(1).all().item<bool>(), $"{name} should be all ones");  // norm weights
            }

            if (p.dim() >= 2)
            {
                Assert.InRange(mean, -0.001, 0.001);
            }
        }
    }

    [Fact]
    public void ParametersAreNamedLikeNanoGptAndSplitForWeightDecay()
    {
        using var gpt2 = NewModel(GptConfig.ShakespeareChar(65));
        var names = gpt2.named_parameters().Select(p => p.name).ToList();
        foreach (var expected in new[] { "wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias", "h.0.attn.c_attn.weight",
                     "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight", "h.0.ln_2.weight", "h.3.mlp.c_fc.weight", "h.3.mlp.c_proj.bias", "ln_f.weight", "ln_f.bias" })
        {
            Assert.Contains(expected, names);
        }

        Assert.DoesNotContain(names, n => n.Contains("lm_head", StringComparison.Ordinal));
        // Decay: wte, wpe and 4 matmul weights per block; no decay: 4 biases and 2 norms (weight + bias) per block, ln_f.
        Assert.Equal(2 + 4 * 4, gpt2.DecayParameters.Count());
        Assert.Equal(4 * 8 + 2, gpt2.NoDecayParameters.Count());
        Assert.Equal(gpt2.ParameterCount, gpt2.DecayParameters.Concat(gpt2.NoDecayParameters).Sum(p => p.numel()));

        using var modern = NewModel(GptConfig.ShakespeareChar(65) with { Style = GptStyle.Modern });
        var modernNames = modern.named_parameters().Select(p => p.name).ToList();
        Assert.DoesNotContain(modernNames, n => n.EndsWith(".bias", StringComparison.Ordinal) || n.StartsWith("wpe", StringComparison.Ordinal));
        Assert.Equal(1 + 4 * 4, modern.DecayParameters.Count());
        Assert.Equal(4 * 2 + 1, modern.NoDecayParameters.Count());
    }

    [Fact]
    public void OutputLayerIsTheTiedTokenEmbedding()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50));
        var idx = RandomTokens(2, 8, 50, 6);

        // Padded row 63 is never an input token, so it only acts through the output layer: zeroing it zeroes that
        // logit column exactly (the output layer has no bias).
        using (no_grad())
        {
            model.TokenEmbeddingWeight[63].zero_();
        }

        Assert.Equal(0.0f, model.forward(idx)[.., .., 63].abs().max().item<float>());

        // And the gradient of that logit column flows into wte.
        model.train();
        model.zero_grad();
        model.forward(idx)[.., .., 63].sum().backward();
        Assert.True(model.TokenEmbeddingWeight.grad!.select(0, 63).abs().sum().item<float>() > 0);
        Assert.Equal(0.0f, model.TokenEmbeddingWeight.grad!.select(0, 62).abs().sum().item<float>()); // neither input nor differentiated output
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void EveryParameterReceivesAGradient(GptStyle style)
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Style = style });
        model.train();
        var idx = RandomTokens(2, 16, 50, 7);
        var logits = model.forward(idx[.., ..15]);
        var loss = nn.functional.cross_entropy(logits.reshape(-1, 64), idx[.., 1..].reshape(-1));
        Assert.InRange(loss.item<float>(), Math.Log(64) - 0.2, Math.Log(64) + 0.2);   // ≈ uniform at initialisation
        loss.backward();
        foreach (var (name, p) in model.named_parameters())
        {
            Assert.True(p.grad is not null && p.grad.abs().sum().item<float>() > 0, $"{name} got no gradient");
        }
    }

    [Fact]
    public void TheSameSeedBuildsTheSameModel()
    {
        using var scope = NewDisposeScope();
        using var a = NewModel(GptConfig.Tiny(50), seed: 5);
        using var b = NewModel(GptConfig.Tiny(50), seed: 5);
        using var c = NewModel(GptConfig.Tiny(50), seed: 6);
        var idx = RandomTokens(1, 16, 50, 8);
        Assert.True(a.forward(idx).allclose(b.forward(idx), rtol: 0, atol: 0));
        Assert.False(a.forward(idx).allclose(c.forward(idx), rtol: 0, atol: 0));
    }

    [Theory]
    [InlineData(GptStyle.Gpt2)]
    [InlineData(GptStyle.Modern)]
    public void WeightsRoundTripThroughTorchSharpSaveAndLoad(GptStyle style)
    {
        // How the trainer persists a model: GptConfig.Save, then TorchSharp's Module.save (named parameters in
        // state_dict order); loading builds a model from the config with any seed and loads the weights into it.
        using var scope = NewDisposeScope();
        var config = GptConfig.Tiny(50) with { Style = style };
        using var original = NewModel(config, seed: 1);
        using var stream = new MemoryStream();
        using (var writer = new BinaryWriter(stream, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            config.Save(writer);
            original.save(writer);
        }

        stream.Position = 0;
        using var reader = new BinaryReader(stream);
        using var loaded = NewModel(GptConfig.Load(reader), seed: 2);
        loaded.load(reader);
        loaded.eval();
        Assert.Equal(stream.Length, stream.Position);
        var idx = RandomTokens(2, 16, 50, 12);
        Assert.True(loaded.forward(idx).allclose(original.forward(idx), rtol: 0, atol: 0));
    }

    [Fact]
    public void DropoutActsInTrainingOnly()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Dropout = 0.5 });
        var idx = RandomTokens(1, 16, 50, 9);
        Assert.True(model.forward(idx).allclose(model.forward(idx), rtol: 0, atol: 0));
        model.train();
        Assert.False(model.forward(idx).allclose(model.forward(idx), rtol: 0, atol: 0));
    }

    [Fact]
    public void Bfloat16ModelComputesCloseToFloat32()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50) with { Style = GptStyle.Modern });
        var idx = RandomTokens(2, 16, 50, 10);
        var full = model.forward(idx);
        model.to(ScalarType.BFloat16);
        var half = model.forward(idx);
        Assert.Equal(ScalarType.BFloat16, half.dtype);
        Assert.True(half.to(ScalarType.Float32).allclose(full, rtol: 0.05, atol: 0.02));
    }

    [Fact]
    public void TrainingStepsInsideADisposeScopeLeaveNoLiveTensors()
    {
        // TorchSharp counts live tensors two ways: torch.Tensor.TotalCount (process-wide, every undisposed Tensor
        // handle) and DisposeScopeManager.Statistics (this thread: ThreadTotalLiveCount, created/disposed in and
        // outside scopes). Gradients live on the parameters, so the count settles after the first step.
        using var model = NewModel(GptConfig.Tiny(50) with { Style = GptStyle.Modern });
        model.train();
        var idx = RandomTokens(2, 16, 50, 11);
        var documents = zeros(2, 16, dtype: ScalarType.Int64);

        void Step()
        {
            using var scope = NewDisposeScope();
            var logits = model.forward(idx, documents);
            nn.functional.cross_entropy(logits.view(-1, 64), idx.view(-1)).backward();
        }

        Step();

        // TotalCount also counts unreachable handles that await finalisation (e.g. of models built by earlier tests);
        // finalise them now so a GC during the loop cannot lower the count. A tensor the loop leaks stays counted.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long liveTotal = torch.Tensor.TotalCount;
        long liveThread = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 5; i++)
        {
            Step();
        }

        Assert.Equal(liveTotal, torch.Tensor.TotalCount);
        Assert.Equal(liveThread, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        idx.Dispose();
        documents.Dispose();
    }

    [Fact]
    public void BadInputsAreRejectedWithClearMessages()
    {
        using var scope = NewDisposeScope();
        using var model = NewModel(GptConfig.Tiny(50));
        var ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(2, 17, dtype: ScalarType.Int64)));
        Assert.Equal("The sequence length is 17; this model accepts 1 to 16 tokens (GptConfig.ContextLength). (Parameter 'idx')", ex.Message);

        ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(2, 4, dtype: ScalarType.Int32)));
        Assert.Equal("Expected token ids of shape (B, T) and type Int64, got shape (2, 4) and type Int32. (Parameter 'idx')", ex.Message);

        ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(8, dtype: ScalarType.Int64)));
        Assert.Equal("Expected token ids of shape (B, T) and type Int64, got shape (8) and type Int64. (Parameter 'idx')", ex.Message);

        ex = Assert.Throws<ArgumentException>(() => model.forward(zeros(2, 4, dtype: ScalarType.Int64), zeros(2, 5, dtype: ScalarType.Int64)));
        Assert.Equal("Expected document ids of the token ids' shape (2, 4) and type Int64, got shape (2, 5) and type Int64. (Parameter 'documentIds')", ex.Message);

        var configEx = Assert.Throws<ArgumentOutOfRangeException>(() => new GptModel(GptConfig.Tiny(50) with { LayerCount = 0 }));
        Assert.Equal("LayerCount", configEx.ParamName);
    }
}
