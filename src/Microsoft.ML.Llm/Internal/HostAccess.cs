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
}
