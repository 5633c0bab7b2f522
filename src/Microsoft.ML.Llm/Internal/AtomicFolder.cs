namespace Microsoft.ML.Llm.Internal;

/// <summary>
/// Writes a folder of files all or nothing: into a hidden temporary sibling, renamed to the target at the end, removed
/// if anything fails. Used by the Hugging Face, PEFT and ONNX exports.
/// </summary>
internal static class AtomicFolder
{
    /// <summary>
    /// The full path of <paramref name="folder"/>, checked to be a new or empty folder; <paramref name="what"/> names the
    /// export in messages ("export", "ONNX export").
    /// </summary>
    public static string CheckTarget(string folder, string what)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string target = Path.GetFullPath(folder.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        if (File.Exists(target))
            throw new IOException($"The {what} path '{target}' is a file; choose a new folder (nothing was written).");
        if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"The {what} folder '{target}' exists and is not empty; choose a new folder (nothing was written).");
        return target;
    }

    /// <summary>Runs <paramref name="write"/> on a temporary folder beside <paramref name="target"/> (from
    /// <see cref="CheckTarget"/>), then renames it to the target.</summary>
    public static void Write(string target, string what, Action<string> write)
    {
        string parent = Path.GetDirectoryName(target)!;
        string temp = Path.Combine(parent, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(temp);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw e is UnauthorizedAccessException
                ? new UnauthorizedAccessException($"Cannot write the {what} '{target}': creating '{temp}' was denied ({e.Message}). Choose a writable folder.", e)
                : new IOException($"Cannot write the {what} '{target}': creating '{temp}' failed ({e.Message}). Choose a writable folder.", e);
        }

        try
        {
            write(temp);
            if (Directory.Exists(target))
                Directory.Delete(target);   // empty (checked by CheckTarget)
            Directory.Move(temp, target);
        }
        finally
        {
            if (Directory.Exists(temp))
                Directory.Delete(temp, recursive: true);
        }
    }
}
