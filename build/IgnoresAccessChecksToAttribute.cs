// Declared by the compiler-facing build layer (build/Llm.Build.targets) for projects that set
// LlmUseMlNetInternals. CoreCLR honours this attribute: the assembly may use non-public members of the named
// assemblies, which the build exposes at compile time through publicized reference copies.
namespace System.Runtime.CompilerServices;

[AttributeUsage(AttributeTargets.Assembly, AllowMultiple = true)]
internal sealed class IgnoresAccessChecksToAttribute : Attribute
{
    public IgnoresAccessChecksToAttribute(string assemblyName) => AssemblyName = assemblyName;

    public string AssemblyName { get; }
}
