using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// A pipeline to sweep: a search space and a factory that builds the whole pipeline — tokenizer, packing, trainer —
/// from one <see cref="Parameter"/> of it (AutoML's <c>SweepableEstimator</c>, made by
/// <c>mlContext.Llm().CreateSweepableEstimator(factory, searchSpace)</c>).
/// </summary>
public sealed class SweepableEstimator
{
    private readonly Func<MLContext, Parameter, IEstimator<ITransformer>> _factory;

    internal SweepableEstimator(Func<MLContext, Parameter, IEstimator<ITransformer>> factory, Sweeping.SearchSpace searchSpace)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(SweepableEstimator));
        _factory = factory;
        SearchSpace = searchSpace;
    }

    /// <summary>The search space the parameters come from.</summary>
    public Sweeping.SearchSpace SearchSpace { get; }

    /// <summary>The pipeline for <paramref name="parameter"/> (AutoML's <c>BuildFromOption</c>).</summary>
    public IEstimator<ITransformer> BuildFromOption(MLContext context, Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(parameter);
        return _factory(context, parameter) ?? throw new InvalidOperationException($"The pipeline factory returned null for parameter {parameter}.");
    }
}
