// Builds the bundled language-ID model (src/Microsoft.ML.Llm.Data/Resources/langid.bin) from the gettext message
// catalogs (.mo) shipped in Debian 12 packages, and prints accuracy on a held-out split. See README.md here.
//   dotnet run -c Release --project tools/LanguageModelBuilder -- <extracted-debs-root> <output langid.bin>
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Llm.Data.Curation;

if (args.Length < 2) { Console.Error.WriteLine("usage: LanguageModelBuilder <root with usr/share/locale> <output file>"); return 2; }
string localeRoot = Path.Combine(args[0], "usr/share/locale");
Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);
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

// n-grams kept per language: alphabetic scripts need few; Chinese, Japanese and Korean have far more distinct ones.
static int TopPerLanguage(string code) => code is "zh" or "ja" or "ko" ? 12_000 : 2_500;
var tops = new Dictionary<string, List<(string Gram, float LogP)>>();
foreach (var (code, _) in languages)
{
    var counts = model[code];
    double total = counts.Values.Sum(v => (double)v);
    tops[code] = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Take(TopPerLanguage(code))
        .Select(kv => (kv.Key, (float)Math.Log(kv.Value / total))).ToList();
}
// One floor for every language: an n-gram missing from a language's list scores below the least frequent n-gram
// of any list, the same for all languages, so only the n-grams a language does know move its score (a language with
// a small list, e.g. Arabic, does not win texts of a script it has never seen).
float floor = tops.Values.Min(t => t[^1].LogP) - (float)Math.Log(2);
using (var fs = File.Create(args[1] + ".tmp"))
using (var w = new BinaryWriter(fs, Encoding.UTF8))
{
    w.Write("LLMLANGID1");
    w.Write(languages.Length);
    foreach (var (code, _) in languages)
    {
        w.Write(code);
        w.Write(floor);
        w.Write(tops[code].Count);
        foreach (var (g, logp) in tops[code])
        {
            w.Write(g);
            w.Write(logp);
        }
    }
}
File.Move(args[1] + ".tmp", args[1], overwrite: true);
Console.WriteLine($"wrote {args[1]}: {new FileInfo(args[1]).Length} bytes");

// Held-out accuracy with the library's identifier: sentence-length texts (>= 40 characters) and 20-character snippets.
using (var stream = File.OpenRead(args[1]))
{
    var identifier = Microsoft.ML.Llm.Data.LanguageIdentifier.Load(stream);
    Console.WriteLine();
    Console.WriteLine("| language | sentences (>= 40 chars) | accuracy | 20-char snippets | accuracy | snippets with score > 0.65 |");
    Console.WriteLine("|---|---:|---:|---:|---:|---:|");
    long sn = 0, sok = 0, cn = 0, cok = 0;
    foreach (var (code, _) in languages)
    {
        var sentences = test[code].Where(t => t.Length >= 40).ToList();
        var snippets = test[code].Where(t => t.Length >= 20).Select(t => t[..20]).Where(t => !char.IsHighSurrogate(t[^1])).ToList();
        int s1 = sentences.Count(t => identifier.Detect(t).Language == code);
        int s2 = snippets.Count(t => identifier.Detect(t).Language == code);
        int s3 = snippets.Count(t => identifier.Detect(t) is var r && r.Language == code && r.Score > 0.65f);
        sn += sentences.Count; sok += s1; cn += snippets.Count; cok += s2;
        if (Environment.GetEnvironmentVariable("LANGID_SHOW_ERRORS") == "1")
            foreach (var t in sentences.Where(t => identifier.Detect(t).Language != code).Take(6))
                Console.Error.WriteLine($"  {code} -> {identifier.Detect(t).Language}: {t}");
        Console.WriteLine($"| {code} | {sentences.Count} | {100.0 * s1 / Math.Max(1, sentences.Count):F1}% | {snippets.Count} | {100.0 * s2 / Math.Max(1, snippets.Count):F1}% | {100.0 * s3 / Math.Max(1, snippets.Count):F1}% |");
    }
    Console.WriteLine($"| all | {sn} | {100.0 * sok / sn:F1}% | {cn} | {100.0 * cok / cn:F1}% | |");
}
return 0;

static string? Clean(string s)
{
    s = Regex.Replace(s, @"%(\d+\$)?[-+ #0]*\d*(\.\d+)?[hlLqjzt]*[diouxXeEfFgGcsSpn%]|\$\{?\w+\}?|\{\w*\}|<[^>]*>|&\w+;|\\[nt]", " ");
    // command-line options (--foo=BAR, -x), ALL-CAPS placeholders (FILE, NUMBER) and URLs are not language
    s = Regex.Replace(s, @"(^|\s)--?[\w-]+(=\S*)?|\b[A-Z][A-Z0-9_.]{2,}\b|\w+://\S+", " ");
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
        // The header (translation of the empty msgid) declares the charset; a few old catalogs are not UTF-8 (EUC-JP, GB2312...).
        var encoding = Encoding.UTF8;
        for (int i = 0; i < n; i++)
        {
            if (U((int)orig + i * 8) != 0) continue;
            int hl = (int)U((int)trans + i * 8), ho = (int)U((int)trans + i * 8 + 4);
            var m = Regex.Match(Encoding.ASCII.GetString(b, ho, hl), @"charset=([-\w]+)");
            if (m.Success && !m.Groups[1].Value.Equals("CHARSET", StringComparison.OrdinalIgnoreCase))
            {
                try { encoding = Encoding.GetEncoding(m.Groups[1].Value); } catch (ArgumentException) { yield break; }
            }
            break;
        }
        for (int i = 0; i < n; i++)
        {
            int ol = (int)U((int)orig + i * 8), oo = (int)U((int)orig + i * 8 + 4);
            int tl = (int)U((int)trans + i * 8), to = (int)U((int)trans + i * 8 + 4);
            if (ol == 0) continue; // header
            string id = encoding.GetString(b, oo, ol).Split('\0')[0];
            string str = encoding.GetString(b, to, tl).Split('\0')[0];
            int ctx = id.IndexOf('\u0004');
            if (ctx >= 0) id = id[(ctx + 1)..];
            yield return (id, str);
        }
    }
}
