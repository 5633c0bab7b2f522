// Build-time helper for Microsoft.ML.Llm. One command, idempotent and writing atomically
// (temporary file + rename), so an interrupted build never leaves a half-written assembly or library:
//
//   publicize <outDir> <assembly.dll>...
//       Writes a copy of each assembly with every type, method and field made public. The library compiles
//       against these copies and declares [IgnoresAccessChecksTo] so CoreCLR lets it use ML.NET's internal
//       persistence types (ModelSaveContext/ModelLoadContext, LoadableClass, VersionInfo) at run time.
//
// The GLIBCXX fix of TorchSharp's native library is build/LlmNativePatch (it also ships in the package).
using Mono.Cecil;

return args switch
{
    ["publicize", var outDir, .. var assemblies] when assemblies.Length > 0 => Publicizer.Run(outDir, assemblies),
    _ => Usage(),
};

static int Usage()
{
    Console.Error.WriteLine("usage: LlmBuildTool publicize <outDir> <assembly.dll>...");
    return 2;
}

static class Publicizer
{
    public static int Run(string outDir, string[] assemblies)
    {
        Directory.CreateDirectory(outDir);
        var resolver = new DefaultAssemblyResolver();
        foreach (var dir in assemblies.Select(Path.GetDirectoryName).Distinct())
            resolver.AddSearchDirectory(dir);
        foreach (var path in assemblies)
        {
            var target = Path.Combine(outDir, Path.GetFileName(path));
            using (var asm = AssemblyDefinition.ReadAssembly(path, new ReaderParameters { AssemblyResolver = resolver }))
            {
                foreach (var type in asm.MainModule.GetTypes())
                    Publicize(type);
                var tmp = target + ".tmp";
                asm.Write(tmp);
                File.Move(tmp, target, overwrite: true);
            }
            Console.WriteLine($"LlmBuildTool: publicized {Path.GetFileName(path)} -> {target}");
        }
        return 0;
    }

    static void Publicize(TypeDefinition type)
    {
        if (type.IsNested)
            type.IsNestedPublic = true;
        else
            type.IsPublic = true;
        foreach (var method in type.Methods)
        {
            // Leave compiler-generated accessors of explicit interface implementations alone: making them
            // public adds nothing and can create ambiguities.
            if (method.IsPrivate && method.Overrides.Count > 0)
                continue;
            method.IsPublic = true;
        }
        foreach (var field in type.Fields)
        {
            // A public backing field would collide with its event/property name in C# (CS0229).
            if (type.Events.Any(e => e.Name == field.Name) || type.Properties.Any(p => p.Name == field.Name))
                continue;
            if (field.Name.Contains('<'))
                continue;
            field.IsPublic = true;
        }
    }
}
