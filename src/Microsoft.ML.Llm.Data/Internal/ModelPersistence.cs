// The one place where Microsoft.ML.Llm touches ML.NET's internal persistence API (DESIGN.md §4).
// ML.NET's model zips are written through ModelSaveContext and read through ModelLoadContext; both, plus
// VersionInfo and the LoadableClass registration, are internal to Microsoft.ML.Core. The build compiles this
// layer against publicized copies of Microsoft.ML.Core/Data and declares IgnoresAccessChecksTo, so these
// wrappers run against the real, unmodified assemblies. Components see only ComponentWriter/ComponentReader
// (plain BinaryWriter/BinaryReader plus named side entries) and register through ComponentLoader<T>.
using System.Reflection;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>Identifies one persisted component: a model signature, the format version and the loader.</summary>
/// <param name="ModelSignature">Eight ASCII characters written at the head of the component's entry.</param>
/// <param name="Version">Current format version (written).</param>
/// <param name="MinReadableVersion">Oldest format version this build can still read.</param>
/// <param name="LoaderSignature">Registered loader name (at most 24 characters).</param>
/// <param name="LoaderAssembly">The assembly whose <c>LoadableClass</c> attribute registers the loader.</param>
internal sealed record ComponentVersion(string ModelSignature, uint Version, uint MinReadableVersion, string LoaderSignature, Assembly LoaderAssembly)
{
    internal VersionInfo ToVersionInfo() => new(
        ModelSignature,
        verWrittenCur: Version,
        verReadableCur: Version,
        verWeCanReadBack: MinReadableVersion,
        loaderAssemblyName: LoaderAssembly.FullName,
        loaderSignature: LoaderSignature);
}

/// <summary>
/// A component that loads from an ML.NET model zip (it saves through <see cref="PersistentTransformerBase"/>, which
/// writes the same <see cref="PersistenceVersion"/>).
/// </summary>
internal interface IPersistentComponent<TSelf> where TSelf : IPersistentComponent<TSelf>
{
    /// <summary>Signature, format version and loader of the component.</summary>
    static abstract ComponentVersion PersistenceVersion { get; }

    /// <summary>Reads a component written by its <c>SaveState</c> (of any version from MinReadableVersion on).</summary>
    static abstract TSelf Load(IHostEnvironment env, ComponentReader reader);
}

/// <summary>What a component writes: the main stream and optional named binary side entries.</summary>
internal sealed class ComponentWriter
{
    private readonly ModelSaveContext _ctx;

    internal ComponentWriter(ModelSaveContext ctx) => _ctx = ctx;

    /// <summary>The component's main stream.</summary>
    public BinaryWriter Writer => _ctx.Writer;

    /// <summary>Adds a named binary entry next to the component (e.g. model weights).</summary>
    public void WriteStream(string name, Action<BinaryWriter> write) => _ctx.SaveBinaryStream(name, write);

    /// <summary>Saves a nested component (e.g. a tokenizer inside a model) under <paramref name="name"/>.</summary>
    public void WriteComponent(string name, ICanSaveModel component) => _ctx.SaveModel(component, name);
}

/// <summary>What a component reads back: the main stream, the version it was written with, side entries.</summary>
internal sealed class ComponentReader
{
    private readonly ModelLoadContext _ctx;
    private readonly IHostEnvironment _env;

    internal ComponentReader(IHostEnvironment env, ModelLoadContext ctx, uint version)
    {
        _env = env;
        _ctx = ctx;
        Version = version;
    }

    /// <summary>The component's main stream.</summary>
    public BinaryReader Reader => _ctx.Reader;

    /// <summary>The format version the component was written with.</summary>
    public uint Version { get; }

    /// <summary>Reads a named binary entry written with <see cref="ComponentWriter.WriteStream"/>.</summary>
    public void ReadStream(string name, Action<BinaryReader> read)
    {
        if (!_ctx.TryLoadBinaryStream(name, read))
            throw new FormatException($"The model zip is missing entry '{name}' of component '{ModelHeader.GetLoaderSig(ref _ctx.Header)}'.");
    }

    /// <summary>Loads a nested component written with <see cref="ComponentWriter.WriteComponent"/>.</summary>
    public T ReadComponent<T>(string name) where T : class, ITransformer
    {
        _ctx.LoadModel<ITransformer, SignatureLoadModel>(_env, out var component, name);
        return component as T ?? throw new FormatException($"The model zip entry '{name}' holds a {component.GetType().Name}, expected {typeof(T).Name}.");
    }
}

/// <summary>
/// The loader ML.NET's component catalog calls for a registered <typeparamref name="T"/>
/// (see <c>Internal/LoadableClasses.cs</c>).
/// </summary>
internal static class ComponentLoader<T> where T : class, IPersistentComponent<T>
{
    /// <summary>Entry point with the <c>SignatureLoadModel</c> shape.</summary>
    public static T Create(IHostEnvironment env, ModelLoadContext ctx)
    {
        ArgumentNullException.ThrowIfNull(env);
        ArgumentNullException.ThrowIfNull(ctx);
        uint version = ModelPersistence.CheckHeader(ctx, T.PersistenceVersion);
        return T.Load(env, new ComponentReader(env, ctx, version));
    }
}

/// <summary>Thin wrappers over ML.NET's <see cref="ModelSaveContext"/> and <see cref="ModelLoadContext"/>.</summary>
internal static class ModelPersistence
{
    /// <summary>Writes the header of <paramref name="version"/> and then the component's state at the current position of <paramref name="ctx"/>.</summary>
    public static void Save(ModelSaveContext ctx, ComponentVersion version, Action<ComponentWriter> saveState)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(version.ToVersionInfo());
        saveState(new ComponentWriter(ctx));
    }

    /// <summary>
    /// Checks the component header and returns the format version it was written with. A model saved by an
    /// incompatible version of the library gets a clear <see cref="FormatException"/>, not a crash.
    /// </summary>
    internal static uint CheckHeader(ModelLoadContext ctx, ComponentVersion version)
    {
        ctx.CheckAtModel();
        var header = ctx.Header;
        var expected = version.ToVersionInfo();
        string library = version.LoaderAssembly.GetName().Name ?? "Microsoft.ML.Llm";
        if (header.ModelSignature != expected.ModelSignature)
            throw new FormatException(
                $"The model zip entry loaded as '{version.LoaderSignature}' has model signature 0x{header.ModelSignature:X16}, " +
                $"expected 0x{expected.ModelSignature:X16} ('{version.ModelSignature}'). The file is not a model of this component or is corrupt.");
        if (header.ModelVerReadable > version.Version)
            throw new FormatException(
                $"The model zip holds '{version.LoaderSignature}' format version 0x{header.ModelVerWritten:X8}, readable from 0x{header.ModelVerReadable:X8}; " +
                $"this build of {library} reads versions 0x{version.MinReadableVersion:X8} to 0x{version.Version:X8}. Update the package to load it.");
        if (header.ModelVerWritten < version.MinReadableVersion)
            throw new FormatException(
                $"The model zip holds '{version.LoaderSignature}' format version 0x{header.ModelVerWritten:X8}; " +
                $"this build of {library} reads versions 0x{version.MinReadableVersion:X8} to 0x{version.Version:X8}.");
        return header.ModelVerWritten;
    }

    /// <summary>Creates a <see cref="SchemaShape.Column"/> (its constructor is internal to ML.NET).</summary>
    public static SchemaShape.Column SchemaColumn(string name, SchemaShape.Column.VectorKind kind, DataViewType itemType, bool isKey, SchemaShape? annotations = null)
        => new(name, kind, itemType, isKey, annotations);

    /// <summary>Builds a <see cref="SchemaShape"/> from columns (its constructor is internal to ML.NET).</summary>
    public static SchemaShape SchemaShapeOf(IEnumerable<SchemaShape.Column> columns) => new(columns);
}
