// Part of the internals layer (see Microsoft.ML.Llm.Data/Internal/ModelPersistence.cs): the MLContext settings
// ML.NET keeps on its internal IHostEnvironmentInternal (seed, GPU device, CPU fallback) and the cancellation
// flag MLContext.CancelExecution() sets. Everything else in this assembly uses public APIs.

namespace Microsoft.ML.Llm.Internal;

internal static class HostAccess
{
    /// <summary>The seed the MLContext was created with, or null.</summary>
    public static int? Seed(IHostEnvironment env) => (env as IHostEnvironmentInternal)?.Seed;

    /// <summary><see cref="MLContext.GpuDeviceId"/> of the environment.</summary>
    public static int? GpuDeviceId(IHostEnvironment env) => (env as IHostEnvironmentInternal)?.GpuDeviceId;

    /// <summary><see cref="MLContext.FallbackToCpu"/> of the environment.</summary>
    public static bool FallbackToCpu(IHostEnvironment env) => (env as IHostEnvironmentInternal)?.FallbackToCpu ?? true;

    /// <summary>True once MLContext.CancelExecution() (internal to ML.NET) was called on the environment.</summary>
    public static bool IsCanceled(IHostEnvironment env) => env is ICancelable { IsCanceled: true };

    /// <summary>Calls ML.NET's internal MLContext.CancelExecution(): every component that checks the context stops.</summary>
    public static void CancelExecution(MLContext context) => context.CancelExecution();

    /// <summary>Writes an informational message to the channel (ML.NET's <c>Info</c> extension is internal).</summary>
    public static void Info(IChannel channel, string message) => channel.Info(MessageSensitivity.None, message);

    /// <summary>Writes a warning to the channel.</summary>
    public static void Warning(IChannel channel, string message) => channel.Warning(MessageSensitivity.None, message);

    /// <summary>
    /// The estimators of an <see cref="EstimatorChain{TLastTransformer}"/>, nested chains flattened, in order; any other
    /// estimator as itself. ML.NET keeps the chain's array private (<c>_estimators</c>); the sweep fits a chain one
    /// estimator at a time so the trainer can see the validation data through the transforms fitted before it.
    /// </summary>
    public static IEnumerable<IEstimator<ITransformer>> FlattenEstimators(IEstimator<ITransformer> estimator)
    {
        var type = estimator.GetType();
        if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(EstimatorChain<>))
        {
            var field = type.GetField("_estimators", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)
                ?? throw new InvalidOperationException("This ML.NET version's EstimatorChain has no '_estimators' field; the sweep cannot read the pipeline's steps.");
            foreach (var inner in (IEstimator<ITransformer>[])field.GetValue(estimator)!)
            {
                foreach (var e in FlattenEstimators(inner))
                    yield return e;
            }

            yield break;
        }

        yield return estimator;
    }
}
