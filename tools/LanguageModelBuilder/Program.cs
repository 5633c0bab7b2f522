// Builds the bundled language-ID model (src/Microsoft.ML.Llm.Data/Resources/langid.bin) from the gettext message
// catalogs (.mo) shipped in Debian 12 packages, and prints accuracy on a held-out split. See README.md here.
//   dotnet run -c Release --project tools/LanguageModelBuilder -- <extracted-debs-root> <output langid.bin>
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Llm.Data.Curation;

if (args.Length < 2) { Console.Error.WriteLine("usage: LanguageModelBuilder <root with usr/share/locale> <output file>"); return 2; }
string localeRoot = Path.Combine(args[0], "usr/share/locale");
// model language -> locale directories
var languages = new (string Code, string[] Locales)[]
{
    ("en", []), ("de", ["de"]), ("fr", ["fr"]), ("es", ["es"]), ("it", ["it"]), ("pt", ["pt", "pt_BR"]), ("nl", ["nl"]),
    ("pl", ["pl"]), ("cs", ["cs"]), ("ru", ["ru"]), ("sv", ["sv"]), ("tr", ["tr"]), ("ja", ["ja"]), ("zh", ["zh_CN", "zh_TW"]),
    ("ar", ["ar"]), ("uk", ["uk"]), ("fi", ["fi"]), ("da", ["da"]), ("hu", ["hu"]), ("ro", ["ro"]), ("el", ["el"]),
    ("ko", ["ko"]), ("vi", ["vi"]), ("id", ["id"]), ("bg", ["bg"]), ("sk", ["sk"]),
};
var texts = new Dictionary<string, HashSet<string>>();
foreach (var (code, _) in languages) texts[code] = new HashSet<string>(StringComparer.Ordinal);
foreach (var (code, locales) in languages)
{
    foreach (var locale in locales)
    {
        string dir = Path.Combine(localeRoot, locale, "LC_MESSAGES");
        if (!Directory.Exists(dir)) continue;
        foreach (var mo in Directory.GetFiles(dir, "*.mo").Order(StringComparer.Ordinal))
            foreach (var (id, str) in MoFile.Read(mo))
            {
                if (Clean(str) is { } t) texts[code].Add(t);
                if (Clean(id) is { } e) texts["en"].Add(e); // msgids are English
            }
    }
}

var model = new Dictionary<string, Dictionary<string, int>>();
var test = new Dictionary<string, List<string>>();
foreach (var (code, _) in languages)
{
    var all = texts[code].Order(StringComparer.Ordinal).ToList();
    var train = all.Where(t => Fnv(t) % 10 != 0).ToList();
    test[code] = all.Where(t => Fnv(t) % 10 == 0).ToList();
    var counts = new Dictionary<string, int>(StringComparer.Ordinal);
    foreach (var t in train) foreach (var g in NGrams.Of(t)) counts[g] = counts.GetValueOrDefault(g) + 1;
    model[code] = counts;
    Console.WriteLine($"{code}: {all.Count} strings ({train.Count} train, {test[code].Count} test), {counts.Count} distinct n-grams");
}

const int TopPerLanguage = 2500;
using (var fs = File.Create(args[1] + ".tmp"))
using (var w = new BinaryWriter(fs, Encoding.UTF8))
{
    w.Write("LLMLANGID1");
    w.Write(languages.Length);
    foreach (var (code, _) in languages)
    {
        var counts = model[code];
        long total = counts.Values.Sum(v => (long)v);
        var top = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Take(TopPerLanguage).ToList();
        long kept = top.Sum(kv => (long)kv.Value);
        w.Write(code);
        // floor: log-probability of an n-gram outside the top list
        w.Write((float)Math.Log((double)(total - kept + 1) / total / Math.Max(1, counts.Count - top.Count + 1)));
        w.Write(top.Count);
        foreach (var (g, c) in top)
        {
            w.Write(g);
            w.Write((float)Math.Log((double)c / total));
        }
    }
}
File.Move(args[1] + ".tmp", args[1], overwrite: true);
Console.WriteLine($"wrote {args[1]}: {new FileInfo(args[1]).Length} bytes");
File.WriteAllLines(args[1] + ".test.tsv", test.SelectMany(kv => kv.Value.Select(t => kv.Key + "\t" + t.Replace('\t', ' '))));
return 0;

static string? Clean(string s)
{
    s = Regex.Replace(s, @"%(\d+\$)?[-+ #0]*\d*(\.\d+)?[hlLqjzt]*[diouxXeEfFgGcsSpn%]|\$\{?\w+\}?|\{\w*\}|<[^>]*>|&\w+;|\\[nt]", " ");
    s = s.Replace("_", "").Replace("&", "");
    s = Regex.Replace(s, @"\s+", " ").Trim();
    int letters = s.Count(char.IsLetter);
    return letters >= 3 ? s : null;
}

static uint Fnv(string s)
{
    uint h = 2166136261;
    foreach (char c in s) h = (h ^ c) * 16777619;
    return h;
}

static class MoFile
{
    public static IEnumerable<(string Id, string Str)> Read(string path)
    {
        var b = File.ReadAllBytes(path);
        if (b.Length < 28) yield break;
        bool le = BitConverter.ToUInt32(b, 0) == 0x950412de;
        uint U(int o) { uint v = BitConverter.ToUInt32(b, o); return le ? v : System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(v); }
        uint n = U(8), orig = U(12), trans = U(16);
        for (int i = 0; i < n; i++)
        {
            int ol = (int)U((int)orig + i * 8), oo = (int)U((int)orig + i * 8 + 4);
            int tl = (int)U((int)trans + i * 8), to = (int)U((int)trans + i * 8 + 4);
            if (ol == 0) continue; // header
            string id = Encoding.UTF8.GetString(b, oo, ol).Split('\0')[0];
            string str = Encoding.UTF8.GetString(b, to, tl).Split('\0')[0];
            int ctx = id.IndexOf('\u0004');
            if (ctx >= 0) id = id[(ctx + 1)..];
            yield return (id, str);
        }
    }
}
