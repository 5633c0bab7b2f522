using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Llm;

/// <summary>
/// Numbers that tensor operations take as a <see cref="Scalar"/>, held for the life of the process.
/// </summary>
/// <remarks>
/// TorchSharp 0.107 turns a number passed where a <see cref="Scalar"/> is expected (<c>t * 0.5</c>, <c>alpha: x</c>, and
/// the alpha of 1 behind every <c>a + b</c> of two tensors) into a temporary Scalar that nothing disposes
/// (dotnet/TorchSharp#1434). Once its handle has been read, the garbage collector may finalize it while libtorch still
/// reads it, and the operation fails with "Expected false to be true … toFloat". Under a thread calling
/// <c>GC.Collect()</c> in a loop, <c>a + b</c> failed after 2,333 calls, and two of about 60 sweep trainings failed this
/// way (benchmarks/README.md, "fourth pass"). The training step's and the forward pass's per-layer operations take their
/// numbers from here, or from a Scalar held in a <c>using</c> for the call.
/// </remarks>
internal static class HeldScalar
{
    /// <summary>1: the alpha of a tensor sum.</summary>
    public static readonly Scalar One = 1.ToScalar();

    /// <summary>0: a fill value.</summary>
    public static readonly Scalar Zero = 0.ToScalar();

    /// <summary>−1: the ignored target id, and the one-hot's minus one.</summary>
    public static readonly Scalar MinusOne = (-1).ToScalar();

    /// <summary>a + b without a temporary Scalar.</summary>
    public static Tensor Add(Tensor a, Tensor b) => a.add(b, One);
}
