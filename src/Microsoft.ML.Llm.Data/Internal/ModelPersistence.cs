// The one place where Microsoft.ML.Llm touches ML.NET's internal persistence API (docs/ARCHITECTURE.md §3).
// ML.NET's model zips are written through ModelSaveContext and read through ModelLoadContext; both, plus
// VersionInfo and the LoadableClass registration, are internal to Microsoft.ML.Core. The build compiles this
// layer against publicized copies of Microsoft.ML.Core/Data and declares IgnoresAccessChecksTo, so these
// wrappers run against the real, unmodified assemblies. Components see only ComponentWriter/ComponentReader
// (plain BinaryWriter/BinaryReader plus named side entries) and register through ComponentLoader<T>.
//
// Integrity (format versions from ComponentVersion.FirstChecksummedVersion on): the main stream ends with an XxHash64
// of its content and of the component's header fields (signature, versions, loader); every side entry ends with a
// 16-byte footer, its content length and the XxHash64 of its content. Both are checked before the component parses a
// byte, so a flipped or truncated entry raises one FormatException naming the entry, the component and the model zip.
using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.Hashing;
using System.Reflection;
using System.Runtime.CompilerServices;

namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>Identifies one persisted component: a model signature, the format version and the loader.</summary>
/// <param name="ModelSignature">Eight ASCII characters written at the head of the component's entry.</param>
/// <param name="Version">Current format version (written).</param>
/// <param name="MinReadableVersion">Oldest format version this build can still read.</param>
/// <param name="LoaderSignature">Registered loader name (at most 24 characters).</param>
/// <param name="LoaderAssembly">The assembly whose <c>LoadableClass</c> attribute registers the loader.</param>
internal sealed record ComponentVersion(string ModelSignature, uint Version, uint MinReadableVersion, string LoaderSignature, Assembly LoaderAssembly)
{
    /// <summary>
    /// The first format version whose main stream and side entries carry XxHash64 checksums (every component's
    /// 0x00010002). Older versions load without checks.
    /// </summary>
    public uint FirstChecksummedVersion { get; init; } = 0x00010002;

    /// <summary>Whether a component written with <paramref name="version"/> carries checksums.</summary>
    internal bool HasChecksums(uint version) => version >= FirstChecksummedVersion;

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
    private readonly ComponentVersion _version;
    private readonly long _start;

    internal ComponentWriter(ModelSaveContext ctx, ComponentVersion version)
    {
        _ctx = ctx;
        _version = version;
        _start = ctx.Writer.BaseStream.Position;
    }

    /// <summary>The component's main stream.</summary>
    public BinaryWriter Writer => _ctx.Writer;

    /// <summary>Adds a named binary entry next to the component (e.g. model weights), followed by its checksum footer.</summary>
    public void WriteStream(string name, Action<BinaryWriter> write)
    {
        if (!_version.HasChecksums(_version.Version))
        {
            _ctx.SaveBinaryStream(name, write);
            return;
        }
        _ctx.SaveBinaryStream(name, w =>
        {
            long start = w.BaseStream.Position;
            write(w);
            w.Flush();
            long length = w.BaseStream.Position - start;
            ulong hash = EntryChecksum.Hash(w.BaseStream, start, length, null);
            w.Write(length);
            w.Write(hash);
        });
    }

    /// <summary>Saves a nested component (e.g. a tokenizer inside a model) under <paramref name="name"/>.</summary>
    public void WriteComponent(string name, ICanSaveModel component) => _ctx.SaveModel(component, name);

    /// <summary>
    /// Saves a nested component that may also be saved elsewhere in the same model zip (a language model that is both
    /// an element of a <c>TransformerChain</c> and the generator appended to it): when this very instance has already
    /// been written to the zip, the main stream records its entry's directory instead of a second copy; otherwise it is
    /// written under <paramref name="name"/>. Read back with <see cref="ComponentReader.ReadSharedComponent{T}"/>.
    /// Main-stream layout: bool shared, then (if shared) the directory string.
    /// </summary>
    public void WriteSharedComponent(string name, ICanSaveModel component)
    {
        if (SharedComponents.DirectoryOf(_ctx, component) is { } directory)
        {
            Writer.Write(true);
            Writer.Write(directory);
            return;
        }

        Writer.Write(false);
        WriteComponent(name, component);
    }

    /// <summary>Ends the main stream with its checksum (content plus the header fields ML.NET writes for the component).</summary>
    internal void Complete()
    {
        if (!_version.HasChecksums(_version.Version))
            return;
        var w = _ctx.Writer;
        w.Flush();
        var info = _version.ToVersionInfo();
        var header = EntryChecksum.HeaderBytes(info.ModelSignature, info.VerWrittenCur, info.VerReadableCur,
            info.LoaderAssemblyName, info.LoaderSignature);
        w.Write(EntryChecksum.Hash(w.BaseStream, _start, w.BaseStream.Position - _start, header));
    }
}

/// <summary>What a component reads back: the main stream, the version it was written with, side entries.</summary>
internal sealed class ComponentReader
{
    private readonly ModelLoadContext _ctx;
    private readonly IHostEnvironment _env;
    private readonly ComponentVersion _component;

    internal ComponentReader(IHostEnvironment env, ModelLoadContext ctx, ComponentVersion component, uint version)
    {
        _env = env;
        _ctx = ctx;
        _component = component;
        Version = version;
    }

    /// <summary>The component's main stream.</summary>
    public BinaryReader Reader => _ctx.Reader;

    /// <summary>The format version the component was written with.</summary>
    public uint Version { get; }

    /// <summary>
    /// Reads a named binary entry written with <see cref="ComponentWriter.WriteStream"/>; its checksum (when the
    /// version has one) is checked before <paramref name="read"/> sees a byte, and <paramref name="read"/> must consume
    /// the entry's whole content.
    /// </summary>
    public void ReadStream(string name, Action<BinaryReader> read)
    {
        bool found = _ctx.TryLoadBinaryStream(name, br =>
        {
            var stream = br.BaseStream;
            long start = stream.Position;
            long length = stream.Length - start;
            if (_component.HasChecksums(Version))
                length = EntryChecksum.VerifyFooter(stream, start, Corrupt(name));
            read(br);
            long consumed = stream.Position - start;
            if (consumed != length)
                throw Corrupt(name)($"its content is {length} bytes but the component read {consumed}");
        });
        if (!found)
            throw new FormatException($"The model zip is missing entry '{name}' of component '{ModelHeader.GetLoaderSig(ref _ctx.Header)}'.");
    }

    /// <summary>Loads a nested component written with <see cref="ComponentWriter.WriteComponent"/>.</summary>
    public T ReadComponent<T>(string name) where T : class, ITransformer
    {
        _ctx.LoadModel<ITransformer, SignatureLoadModel>(_env, out var component, name);
        return component as T ?? throw new FormatException($"The model zip entry '{name}' holds a {component.GetType().Name}, expected {typeof(T).Name}.");
    }

    /// <summary>
    /// Loads a nested component written with <see cref="ComponentWriter.WriteSharedComponent"/>: the same instance as the
    /// zip's other reference to it when that one has been loaded already (a chain loads its elements in order),
    /// otherwise loaded from its entry.
    /// </summary>
    public T ReadSharedComponent<T>(string name) where T : class, ITransformer
    {
        if (!Reader.ReadBoolean())
            return ReadComponent<T>(name);
        string directory = Reader.ReadString();
        object? component = SharedComponents.Loaded(_ctx, directory);
        if (component is null)
        {
            if (!ModelLoadContext.LoadModelOrNull<ITransformer, SignatureLoadModel>(_env, out var loaded, _ctx.Repository, directory))
                throw new FormatException($"The model zip has no entry '{directory}', which component '{ModelHeader.GetLoaderSig(ref _ctx.Header)}' shares; the zip is incomplete.");
            component = loaded;
        }

        return component as T ?? throw new FormatException($"The model zip entry '{directory}' holds a {component.GetType().Name}, expected {typeof(T).Name}.");
    }

    /// <summary>Makes the exception for a damaged entry <paramref name="name"/> of this component (null: the main stream).</summary>
    internal Func<string, FormatException> Corrupt(string? name) => detail => ModelPersistence.CorruptEntry(_ctx, _component, name, detail);
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
        var component = T.PersistenceVersion;
        uint version = ModelPersistence.CheckHeader(ctx, component);
        var reader = new ComponentReader(env, ctx, component, version);
        var stream = ctx.Reader.BaseStream;
        long start = stream.Position;
        long length = ctx.Header.CbModel;
        if (component.HasChecksums(version))
            length = ModelPersistence.VerifyMainStream(ctx, start, reader.Corrupt(null));
        var loaded = T.Load(env, reader);
        long consumed = stream.Position - start;
        if (consumed != length)
        {
            (loaded as IDisposable)?.Dispose();
            throw reader.Corrupt(null)($"its content is {length} bytes but the component read {consumed}");
        }
        stream.Position = start + ctx.Header.CbModel;   // past the checksum: ML.NET checks the model region was read to its end
        SharedComponents.RecordLoaded(ctx, loaded);
        return loaded;
    }
}

/// <summary>
/// Which of this library's components each model zip being written or read holds, by instance and directory, so a
/// component referenced twice (<see cref="ComponentWriter.WriteSharedComponent"/>) is stored once and loads as one
/// instance. Keyed weakly by ML.NET's repository objects, so nothing outlives the save or load.
/// </summary>
internal static class SharedComponents
{
    private static readonly ConditionalWeakTable<RepositoryWriter, Dictionary<object, string>> Written = new();
    private static readonly ConditionalWeakTable<RepositoryReader, Dictionary<string, object>> Read = new();

    /// <summary>Notes that <paramref name="component"/> was written to <paramref name="ctx"/>'s directory.</summary>
    public static void RecordWritten(ModelSaveContext ctx, object component)
    {
        if (ctx.Repository is null)
            return;
        lock (Written)
            Written.GetOrCreateValue(ctx.Repository).TryAdd(component, ctx.Directory ?? "");
    }

    /// <summary>The directory <paramref name="component"/> was written to in this zip, or null.</summary>
    public static string? DirectoryOf(ModelSaveContext ctx, object component)
    {
        if (ctx.Repository is null)
            return null;
        lock (Written)
            return Written.TryGetValue(ctx.Repository, out var map) && map.TryGetValue(component, out var directory) ? directory : null;
    }

    /// <summary>Notes the instance loaded from <paramref name="ctx"/>'s directory.</summary>
    public static void RecordLoaded(ModelLoadContext ctx, object component)
    {
        if (ctx.Repository is null)
            return;
        lock (Read)
            Read.GetOrCreateValue(ctx.Repository).TryAdd(ctx.Directory ?? "", component);
    }

    /// <summary>The instance already loaded from <paramref name="directory"/> of this zip, or null.</summary>
    public static object? Loaded(ModelLoadContext ctx, string directory)
    {
        lock (Read)
            return Read.TryGetValue(ctx.Repository, out var map) && map.TryGetValue(directory, out var component) ? component : null;
    }
}

/// <summary>Thin wrappers over ML.NET's <see cref="ModelSaveContext"/> and <see cref="ModelLoadContext"/>.</summary>
internal static class ModelPersistence
{
    /// <summary>
    /// Writes the header of <paramref name="version"/>, then the component's state at the current position of
    /// <paramref name="ctx"/>, then the main stream's checksum.
    /// </summary>
    public static void Save(ModelSaveContext ctx, ComponentVersion version, Action<ComponentWriter> saveState)
    {
        ArgumentNullException.ThrowIfNull(ctx);
        ctx.CheckAtModel();
        ctx.SetVersionInfo(version.ToVersionInfo());
        var writer = new ComponentWriter(ctx, version);
        saveState(writer);
        writer.Complete();
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
        {
            throw new FormatException(
                $"The model zip entry loaded as '{version.LoaderSignature}' has model signature 0x{header.ModelSignature:X16}, " +
                $"expected 0x{expected.ModelSignature:X16} ('{version.ModelSignature}'). The file is not a model of this component or is corrupt.");
        }

        if (header.ModelVerReadable > version.Version)
        {
            throw new FormatException(
                $"The model zip holds '{version.LoaderSignature}' format version 0x{header.ModelVerWritten:X8}, readable from 0x{header.ModelVerReadable:X8}; " +
                $"this build of {library} reads versions 0x{version.MinReadableVersion:X8} to 0x{version.Version:X8}. Update the package to load it.");
        }

        if (header.ModelVerWritten < version.MinReadableVersion)
        {
            throw new FormatException(
                $"The model zip holds '{version.LoaderSignature}' format version 0x{header.ModelVerWritten:X8}; " +
                $"this build of {library} reads versions 0x{version.MinReadableVersion:X8} to 0x{version.Version:X8}.");
        }

        return header.ModelVerWritten;
    }

    /// <summary>
    /// Checks the checksum at the end of the main stream (content plus header fields) before the component reads it;
    /// returns the content length and leaves the stream at <paramref name="start"/>.
    /// </summary>
    internal static long VerifyMainStream(ModelLoadContext ctx, long start, Func<string, FormatException> corrupt)
    {
        var stream = ctx.Reader.BaseStream;
        // ML.NET validates its header fields but not the header's unused bytes (zeros as written, up to the model
        // region): compare them with the parsed header written back, so a flip there cannot pass silently either.
        var written = new byte[Math.Max(ModelHeader.Size, ctx.Header.FpModel)];
        ModelHeader.MarshalToBytes(ref ctx.Header, written);
        var stored = new byte[written.Length];
        stream.Position = ctx.FpMin;
        stream.ReadExactly(stored);
        if (!written.AsSpan().SequenceEqual(stored) || HasStrayHeaderBytes(stored))
            throw corrupt("its ML.NET model header holds bytes that no writer puts there");
        long total = ctx.Header.CbModel;
        if (total < sizeof(ulong))
            throw corrupt($"it holds {total} bytes, too few for its {sizeof(ulong)}-byte checksum");
        long length = total - sizeof(ulong);
        stream.Position = start + length;
        ulong storedHash = ctx.Reader.ReadUInt64();
        var h = ctx.Header;
        var header = EntryChecksum.HeaderBytes(h.ModelSignature, h.ModelVerWritten, h.ModelVerReadable,
            ctx.LoaderAssemblyName, ModelHeader.GetLoaderSig(ref ctx.Header));
        ulong computed = EntryChecksum.Hash(stream, start, length, header);
        if (computed != storedHash)
            throw corrupt(EntryChecksum.MismatchDetail(storedHash, computed));
        stream.Position = start;
        return length;
    }

    /// <summary>
    /// Whether ML.NET's model header (Microsoft.ML 5.x layout) has non-zero bytes where its writer leaves zeros: after the
    /// loader signature's terminating zero (its 24-byte field at 0x50) and after the last field (0xA0) up to the model.
    /// </summary>
    private static bool HasStrayHeaderBytes(ReadOnlySpan<byte> header)
    {
        const int signatureStart = 0x50;
        const int signatureEnd = 0x80;
        const int fieldsEnd = 0xA0;
        if (header.Length < fieldsEnd)
            return false;
        var signature = header[signatureStart..signatureEnd];
        int end = signature.IndexOf((byte)0);
        if (end >= 0 && signature[end..].ContainsAnyExcept((byte)0))
            return true;
        return header[fieldsEnd..].ContainsAnyExcept((byte)0);
    }

    /// <summary>
    /// The exception for a damaged entry: names the entry's path inside the zip, the component's loader and the model
    /// zip file (when ML.NET read it from a file).
    /// </summary>
    /// <param name="ctx">The component's load context.</param>
    /// <param name="component">The component.</param>
    /// <param name="name">The side entry's name; null for the component's main stream.</param>
    /// <param name="detail">What is wrong.</param>
    internal static FormatException CorruptEntry(ModelLoadContext ctx, ComponentVersion component, string? name, string detail)
    {
        string dir = (ctx.Directory ?? "").Replace('\\', '/').Trim('/');
        string entry = name ?? "Model.key";   // ML.NET's ModelFileUtils.ModelStreamName
        string path = dir.Length == 0 ? entry : dir + "/" + entry;
        string? zip = ModelFileName(ctx);
        string where = zip is null ? "the model zip" : $"model zip '{zip}'";
        return new FormatException(
            $"Entry '{path}' of component '{component.LoaderSignature}' in {where} is corrupt: {detail}. " +
            "The file was damaged after it was saved; save the model again or restore a good copy.");
    }

    /// <summary>The path of the model zip behind <paramref name="ctx"/> when it was opened from a file; otherwise null.</summary>
    internal static string? ModelFileName(ModelLoadContext ctx)
    {
        // RepositoryReader keeps the ZipArchive; the archive keeps the stream it reads (a FileStream for
        // mlContext.Model.Load(path)) in a private field of System.IO.Compression, read by reflection.
        ZipArchive? archive = ctx.Repository?._archive;
        if (archive is null)
            return null;
        try
        {
            var field = typeof(ZipArchive).GetField("_archiveStream", BindingFlags.Instance | BindingFlags.NonPublic);
            return (field?.GetValue(archive) as FileStream)?.Name;
        }
        catch (Exception e) when (e is FieldAccessException or TargetException or ArgumentException)
        {
            return null;
        }
    }

    /// <summary>Creates a <see cref="SchemaShape.Column"/> (its constructor is internal to ML.NET).</summary>
    public static SchemaShape.Column SchemaColumn(string name, SchemaShape.Column.VectorKind kind, DataViewType itemType, bool isKey, SchemaShape? annotations = null)
        => new(name, kind, itemType, isKey, annotations);

    /// <summary>Builds a <see cref="SchemaShape"/> from columns (its constructor is internal to ML.NET).</summary>
    public static SchemaShape SchemaShapeOf(IEnumerable<SchemaShape.Column> columns) => new(columns);
}

/// <summary>XxHash64 checksums of persisted entries (see the file header).</summary>
internal static class EntryChecksum
{
    /// <summary>Bytes of a side entry's footer: the content length (Int64) and its XxHash64 (UInt64).</summary>
    public const int FooterSize = 16;

    /// <summary>
    /// XxHash64 of <paramref name="length"/> bytes of <paramref name="stream"/> from <paramref name="start"/>, then of
    /// <paramref name="suffix"/>; leaves the stream at the end of the hashed range.
    /// </summary>
    public static ulong Hash(Stream stream, long start, long length, byte[]? suffix)
    {
        var hash = new XxHash64();
        byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 16);
        try
        {
            stream.Position = start;
            long left = length;
            while (left > 0)
            {
                int n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (n <= 0)
                    throw new EndOfStreamException();
                hash.Append(buffer.AsSpan(0, n));
                left -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (suffix is not null)
            hash.Append(suffix);
        return hash.GetCurrentHashAsUInt64();
    }

    /// <summary>
    /// Checks a side entry's footer and checksum; returns the content length and leaves the stream at
    /// <paramref name="start"/>.
    /// </summary>
    public static long VerifyFooter(Stream stream, long start, Func<string, FormatException> corrupt)
    {
        long total = stream.Length - start;
        if (total < FooterSize)
            throw corrupt($"it holds {total} bytes, too few for its {FooterSize}-byte checksum footer (truncated)");
        Span<byte> footer = stackalloc byte[FooterSize];
        stream.Position = start + total - FooterSize;
        stream.ReadExactly(footer);
        long length = BinaryPrimitives.ReadInt64LittleEndian(footer);
        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(footer[8..]);
        if (length != total - FooterSize)
            throw corrupt($"it holds {total} bytes, but its footer records {length} bytes of content and a {FooterSize}-byte footer (truncated or damaged)");
        ulong computed = Hash(stream, start, length, null);
        if (computed != stored)
            throw corrupt(MismatchDetail(stored, computed));
        stream.Position = start;
        return length;
    }

    /// <summary>The detail of a checksum mismatch.</summary>
    public static string MismatchDetail(ulong stored, ulong computed) =>
        $"its XxHash64 checksum 0x{stored:X16} does not match its content (0x{computed:X16})";

    /// <summary>The component header fields covered by the main stream's checksum, as bytes.</summary>
    public static byte[] HeaderBytes(ulong modelSignature, uint written, uint readable, string? loaderAssembly, string? loaderSignature)
    {
        using var ms = new MemoryStream();
        using (var w = new BinaryWriter(ms, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(modelSignature);
            w.Write(written);
            w.Write(readable);
            w.Write(loaderAssembly ?? "");
            w.Write(loaderSignature ?? "");
        }
        return ms.ToArray();
    }
}
