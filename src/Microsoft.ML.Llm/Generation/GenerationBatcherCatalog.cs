using Microsoft.ML.Llm;

namespace Microsoft.ML;

/// <summary><c>mlContext.Llm().CreateBatcher(model)</c>: concurrent generation requests decoded together in batches.</summary>
public static class GenerationBatcherCatalog
{
    /// <summary>
    /// A <see cref="GenerationBatcher"/> over the language model in <paramref name="model"/> (a
    /// <see cref="CausalLmTransformer"/> or a chain containing one, e.g. a loaded model zip): concurrent requests are
    /// decoded together, up to <paramref name="maxBatchSize"/> at a time.
    /// </summary>
    /// <param name="catalog">The language-model catalog.</param>
    /// <param name="model">The trained model.</param>
    /// <param name="maxBatchSize">The most requests decoded together in one batch.</param>
    public static GenerationBatcher CreateBatcher(this LlmCatalog catalog, ITransformer model,
        int maxBatchSize = GenerationBatcherOptions.Defaults.MaxBatchSize) =>
        catalog.CreateBatcher(model, new GenerationBatcherOptions { MaxBatchSize = maxBatchSize });

    /// <summary>A <see cref="GenerationBatcher"/> over the language model in <paramref name="model"/>, bounded by <paramref name="options"/>.</summary>
    /// <param name="catalog">The language-model catalog.</param>
    /// <param name="model">The trained model.</param>
    /// <param name="options">Batch size, queue length, batch wait, stream buffer.</param>
    public static GenerationBatcher CreateBatcher(this LlmCatalog catalog, ITransformer model, GenerationBatcherOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new GenerationBatcher(catalog.CreateGenerator(model), options);
    }
}
