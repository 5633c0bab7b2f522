using Microsoft.ML.Llm.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm.Tests.Generation;

/// <summary>
/// Random tiny models for decoding tests, with weights scaled up so their next-token distributions are peaked (a
/// freshly initialised GPT is nearly uniform, and near-ties would make greedy comparisons depend on rounding), and an
/// independent reference: the argmax chain and log-probabilities from full forward passes, no cache.
/// </summary>
internal static class GenerationTestModel
{
    public static LmTokenizer Tokenizer { get; } = TestData.CharTokenizer();

    public static GptModel Create(GptStyle style = GptStyle.Gpt2, int contextLength = 32, int seed = 5, double scale = 6)
    {
        torch.manual_seed(seed);
        var model = new GptModel(GptConfig.Tiny(Tokenizer.VocabularySize, contextLength) with { Style = style });
        using (no_grad())
        {
            foreach (var (name, p) in model.named_parameters())
            {
                if (name.Contains("wte", StringComparison.Ordinal) || name.Contains("c_attn", StringComparison.Ordinal))
                {
                    p.mul_(scale);
                }
            }
        }

        model.eval();
        return model;
    }

    public static TextGenerator Generator(GptModel model) => new(model, Tokenizer);

    /// <summary>
    /// A model whose next-token distribution depends only on the last token, with known probabilities (a bigram table):
    /// the blocks are zeroed (the residual stream is the token's one-hot embedding), ln_f maps one-hot k to a·e_k − b·1,
    /// and the untied output layer's column k holds log p(· | k) / a, with a last column that makes every row sum to zero
    /// (so b drops out). Transitions not in the table get the logit −30 (probability ~1e-13).
    /// </summary>
    public static GptModel Bigram(LmTokenizer tokenizer, IReadOnlyDictionary<(char From, char To), double> probabilities, int contextLength = 32)
    {
        int vocabulary = tokenizer.VocabularySize;
        var config = GptConfig.Tiny(vocabulary, contextLength) with { TiedEmbeddings = false, EmbeddingSize = 32 };
        int embedding = config.EmbeddingSize;
        var model = new GptModel(config);

        // LayerNorm of a one-hot vector of size E: mean 1/E, variance (1/E)(1 − 1/E); a is 1/σ.
        double a = 1 / Math.Sqrt(1.0 / embedding * (1 - 1.0 / embedding) + config.NormEpsilon);
        var head = new float[config.PaddedVocabularySize * embedding];
        for (int v = 0; v < vocabulary; v++)
        {
            double sum = 0;
            for (int k = 0; k < vocabulary; k++)
            {
                char from = tokenizer.Decode([k])[0], to = tokenizer.Decode([v])[0];
                double logit = probabilities.TryGetValue((from, to), out double p) ? Math.Log(p) : -30;
                head[v * embedding + k] = (float)(logit / a);
                sum += head[v * embedding + k];
            }

            head[v * embedding + embedding - 1] = (float)-sum;
        }

        using (no_grad())
        {
            foreach (var (name, parameter) in model.named_parameters())
            {
                parameter.zero_();
                if (name == "ln_f.weight")
                {
                    parameter.fill_(1);
                }
                else if (name == "wte.weight")
                {
                    for (int k = 0; k < vocabulary; k++)
                    {
                        parameter[k, k] = 1;
                    }
                }
                else if (name == "lm_head.weight")
                {
                    parameter.copy_(tensor(head, [config.PaddedVocabularySize, embedding]));
                }
            }
        }

        model.eval();
        return model;
    }

    /// <summary>Log-softmax of the next-token logits after <paramref name="sequence"/> (its last ContextLength tokens), full forward pass.</summary>
    public static float[] NextLogProbs(GptModel model, IReadOnlyList<int> sequence)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        int context = model.Config.ContextLength;
        var window = sequence.Skip(Math.Max(0, sequence.Count - context)).Select(t => (long)t).ToArray();
        var logits = model.forward(tensor(window, new long[] { 1, window.Length }))[0, -1, ..model.Config.ResolvedVocabularySize];
        return nn.functional.log_softmax(logits, 0).data<float>().ToArray();
    }

    /// <summary>Greedy decoding by full forward passes: the reference every cached path must reproduce.</summary>
    public static int[] ArgmaxChain(GptModel model, int[] prompt, int count)
    {
        var sequence = new List<int>(prompt);
        for (int i = 0; i < count; i++)
        {
            var logProbs = NextLogProbs(model, sequence);
            sequence.Add(Array.IndexOf(logProbs, logProbs.Max()));
        }

        return sequence.Skip(prompt.Length).ToArray();
    }

    /// <summary>Total log-probability of <paramref name="continuation"/> after <paramref name="prompt"/>, by full forward passes.</summary>
    public static double LogProbability(GptModel model, int[] prompt, IReadOnlyList<int> continuation)
    {
        var sequence = new List<int>(prompt);
        double total = 0;
        foreach (int token in continuation)
        {
            total += NextLogProbs(model, sequence)[token];
            sequence.Add(token);
        }

        return total;
    }
}
