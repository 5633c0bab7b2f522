using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Microsoft.ML.Llm.Data;

/// <summary>Options of <see cref="PiiRedactorEstimator"/> (<c>mlContext.Transforms.Text.RedactPii</c>).</summary>
/// <remarks>
/// The defaults are datatrove's <c>PIIFormatter</c>: e-mail addresses and public IP addresses are replaced by fake ones
/// (example.com addresses, and six addresses that answered no ping when datatrove chose them), so the text keeps its
/// shape and a model does not learn a placeholder token. This transform adds IPv6 addresses (replaced by addresses in
/// the documentation prefix 2001:db8::/32, RFC 3849) and phone numbers (replaced by numbers in the fictional
/// 555-0100…0199 range). A replacement is chosen from its list by a hash of the matched text, so the same address is
/// always replaced by the same fake one, whatever the cursor order.
/// </remarks>
public sealed class PiiRedactorOptions
{
    /// <summary>Default values of the options, written once.</summary>
    public static class Defaults
    {
        /// <summary>Replace e-mail addresses.</summary>
        public const bool RedactEmails = true;

        /// <summary>Replace IPv4 and IPv6 addresses.</summary>
        public const bool RedactIPAddresses = true;

        /// <summary>Replace only public addresses: private, loopback, link-local, documentation and reserved ranges are
        /// not personal data (datatrove's <c>only_remove_public_ips</c>).</summary>
        public const bool OnlyPublicIPAddresses = true;

        /// <summary>Replace phone-number-like strings.</summary>
        public const bool RedactPhoneNumbers = true;

        /// <summary>datatrove's e-mail replacements.</summary>
        public static IReadOnlyList<string> EmailReplacements { get; } = ["email@example.com", "firstname.lastname@example.org"];

        /// <summary>datatrove's IPv4 replacements.</summary>
        public static IReadOnlyList<string> IPv4Replacements { get; } =
            ["22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168"];

        /// <summary>Addresses in the IPv6 documentation prefix (RFC 3849).</summary>
        public static IReadOnlyList<string> IPv6Replacements { get; } = ["2001:db8::1", "2001:db8:85a3::8a2e:370:7334"];

        /// <summary>Numbers in the range reserved for fiction (555-0100 to 555-0199).</summary>
        public static IReadOnlyList<string> PhoneReplacements { get; } = ["555-0100", "555-0142", "555-0199"];
    }

    /// <summary>Replace e-mail addresses (default true).</summary>
    public bool RedactEmails { get; set; } = Defaults.RedactEmails;

    /// <summary>Replace IPv4 and IPv6 addresses (default true).</summary>
    public bool RedactIPAddresses { get; set; } = Defaults.RedactIPAddresses;

    /// <summary>Replace only public IP addresses (default true).</summary>
    public bool OnlyPublicIPAddresses { get; set; } = Defaults.OnlyPublicIPAddresses;

    /// <summary>Replace phone-number-like strings (default true): 7 to 15 digits in groups, with an optional
    /// <c>+</c> country code or a parenthesised area code; dates, year ranges and version numbers are not phones.</summary>
    public bool RedactPhoneNumbers { get; set; } = Defaults.RedactPhoneNumbers;

    /// <summary>What e-mail addresses become; one entry such as <c>"&lt;EMAIL&gt;"</c> for a placeholder.</summary>
    public IList<string> EmailReplacements { get; set; } = [.. Defaults.EmailReplacements];

    /// <summary>What IPv4 addresses become.</summary>
    public IList<string> IPv4Replacements { get; set; } = [.. Defaults.IPv4Replacements];

    /// <summary>What IPv6 addresses become.</summary>
    public IList<string> IPv6Replacements { get; set; } = [.. Defaults.IPv6Replacements];

    /// <summary>What phone numbers become.</summary>
    public IList<string> PhoneReplacements { get; set; } = [.. Defaults.PhoneReplacements];

    internal PiiRedactorOptions Clone() => new()
    {
        RedactEmails = RedactEmails,
        RedactIPAddresses = RedactIPAddresses,
        OnlyPublicIPAddresses = OnlyPublicIPAddresses,
        RedactPhoneNumbers = RedactPhoneNumbers,
        EmailReplacements = [.. EmailReplacements ?? []],
        IPv4Replacements = [.. IPv4Replacements ?? []],
        IPv6Replacements = [.. IPv6Replacements ?? []],
        PhoneReplacements = [.. PhoneReplacements ?? []],
    };

    internal void Validate()
    {
        Check(EmailReplacements, RedactEmails, nameof(EmailReplacements));
        Check(IPv4Replacements, RedactIPAddresses, nameof(IPv4Replacements));
        Check(IPv6Replacements, RedactIPAddresses, nameof(IPv6Replacements));
        Check(PhoneReplacements, RedactPhoneNumbers, nameof(PhoneReplacements));

        static void Check(IList<string>? list, bool used, string option)
        {
            if (used && (list is null || list.Count == 0))
                throw new ArgumentException($"Option '{option}' must hold at least one replacement text; got none.", option);
            if (list is not null && list.Any(s => s is null))
                throw new ArgumentException($"Option '{option}' holds a null replacement; give strings (an empty string removes the match).", option);
        }
    }
}

/// <summary>Counts of what <see cref="PiiRedactorTransformer"/> has replaced.</summary>
/// <param name="Rows">Values read.</param>
/// <param name="RowsChanged">Values in which something was replaced.</param>
/// <param name="Emails">E-mail addresses replaced.</param>
/// <param name="IPv4Addresses">IPv4 addresses replaced.</param>
/// <param name="IPv6Addresses">IPv6 addresses replaced.</param>
/// <param name="PhoneNumbers">Phone numbers replaced.</param>
public sealed record PiiReport(long Rows, long RowsChanged, long Emails, long IPv4Addresses, long IPv6Addresses, long PhoneNumbers)
{
    /// <inheritdoc/>
    public override string ToString() =>
        $"rows {Rows}, changed {RowsChanged}: e-mails {Emails}, IPv4 {IPv4Addresses}, IPv6 {IPv6Addresses}, phones {PhoneNumbers}";
}

/// <summary>
/// Finds and replaces personal data in text: e-mail addresses, IPv4 and IPv6 addresses and phone numbers (see
/// <see cref="PiiRedactorOptions"/>). Thread-safe.
/// </summary>
public static partial class PiiRedactor
{
    // datatrove's e-mail expression (RFC 5322 local part, dotted host or bracketed IP literal).
    [GeneratedRegex(@"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)\])", RegexOptions.CultureInvariant)]
    private static partial Regex EmailPattern();

    // datatrove's IPv4 expression, bounded so that "1.2.3.4.5" or "v10.0.0.1x" are not cut into an address.
    [GeneratedRegex(@"(?<![\w.])(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)(?![\w]|\.\d)", RegexOptions.CultureInvariant)]
    private static partial Regex IPv4Pattern();

    // Candidates: hex groups joined by colons (at least two), optionally ending in a dotted IPv4; IPAddress.TryParse decides.
    [GeneratedRegex(@"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])", RegexOptions.CultureInvariant)]
    private static partial Regex IPv6Pattern();

    // An optional +country code or (area code), then 2 to 5 groups of 2 to 8 digits joined by one space, dot or hyphen.
    [GeneratedRegex(@"(?<![\w+.\-/])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?\d{2,8}(?:[ .\-]\d{2,8}){1,4}(?![\w\-/]|[.,]\d)", RegexOptions.CultureInvariant)]
    private static partial Regex PhonePattern();

    // Dates are not phones: 2024-01-15, 15.01.2024, 01-15-24.
    [GeneratedRegex(@"^(?:\d{4}[.\-]\d{1,2}[.\-]\d{1,2}|\d{1,2}[.\-]\d{1,2}[.\-]\d{2,4})$", RegexOptions.CultureInvariant)]
    private static partial Regex DatePattern();

    /// <summary>Replaces the personal data in <paramref name="text"/>; returns the text itself when there is none.</summary>
    public static string Redact(string text, PiiRedactorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(text);
        options ??= new PiiRedactorOptions();
        options.Validate();
        return Redact(text, options, counts: null);
    }

    /// <summary>The redaction core; adds what it replaced to <paramref name="counts"/> (emails, IPv4, IPv6, phones).</summary>
    internal static string Redact(string text, PiiRedactorOptions options, long[]? counts)
    {
        if (text.Length == 0)
            return text;
        // E-mail first (its host may be an IP literal), then IPv6 (may embed IPv4), then IPv4, then phones (a leftover
        // dotted quad would otherwise look like digit groups).
        if (options.RedactEmails && text.Contains('@'))
            text = Replace(EmailPattern(), text, options.EmailReplacements, static _ => true, counts, 0);
        if (options.RedactIPAddresses)
        {
            bool onlyPublic = options.OnlyPublicIPAddresses;
            if (text.Contains(':'))
                text = Replace(IPv6Pattern(), text, options.IPv6Replacements, m => IsIPv6ToRedact(m, onlyPublic), counts, 2);
            if (text.Contains('.'))
                text = Replace(IPv4Pattern(), text, options.IPv4Replacements, m => IsIPv4ToRedact(m, onlyPublic), counts, 1);
        }
        if (options.RedactPhoneNumbers)
            text = Replace(PhonePattern(), text, options.PhoneReplacements, IsPhoneNumber, counts, 3);
        return text;
    }

    private static string Replace(Regex pattern, string text, IList<string> replacements, Func<string, bool> accept, long[]? counts, int kind)
    {
        return pattern.Replace(text, match =>
        {
            string value = match.Value;
            if (!accept(value))
                return value;
            if (counts is not null)
                counts[kind]++;
            // The same text always maps to the same replacement (a stable hash, not a running counter as datatrove's),
            // so the output does not depend on the order in which cursors visit rows.
            ulong hash = System.IO.Hashing.XxHash64.HashToUInt64(MemoryMarshalBytes(value));
            return replacements[(int)(hash % (ulong)replacements.Count)];
        });
    }

    private static ReadOnlySpan<byte> MemoryMarshalBytes(string s) => System.Runtime.InteropServices.MemoryMarshal.AsBytes(s.AsSpan());

    /// <summary>Whether <paramref name="candidate"/> is an IPv4 address to replace.</summary>
    internal static bool IsIPv4ToRedact(string candidate, bool onlyPublic)
    {
        // One digit per part (1.2.3.4) is a version number far more often than an address (datatrove's later filter).
        if (candidate.Length == 7)
            return false;
        if (!IPAddress.TryParse(candidate, out var address) || address.AddressFamily != AddressFamily.InterNetwork)
            return false;
        return !onlyPublic || IsPublicIPv4(address);
    }

    /// <summary>Whether <paramref name="candidate"/> is an IPv6 address to replace.</summary>
    internal static bool IsIPv6ToRedact(string candidate, bool onlyPublic)
    {
        if (candidate.Count(c => c == ':') < 2 || !candidate.Any(char.IsAsciiHexDigit))
            return false;
        if (!IPAddress.TryParse(candidate, out var address) || address.AddressFamily != AddressFamily.InterNetworkV6)
            return false;
        if (!onlyPublic)
            return true;
        if (address.IsIPv4MappedToIPv6)
            return IsPublicIPv4(address.MapToIPv4());
        if (IPAddress.IsLoopback(address) || address.Equals(IPAddress.IPv6None) || address.IsIPv6LinkLocal || address.IsIPv6SiteLocal
            || address.IsIPv6UniqueLocal || address.IsIPv6Multicast)
        {
            return false;
        }
        var bytes = address.GetAddressBytes();
        bool documentation = bytes[0] == 0x20 && bytes[1] == 0x01 && bytes[2] == 0x0d && bytes[3] == 0xb8; // 2001:db8::/32
        return !documentation;
    }

    // Python's ipaddress.IPv4Address.is_global: outside the IANA special-purpose ranges that are not globally reachable.
    private static bool IsPublicIPv4(IPAddress address)
    {
        var b = address.GetAddressBytes();
        return !(b[0] == 0                                   // 0.0.0.0/8 "this network"
            || b[0] == 10                                     // 10/8 private
            || (b[0] == 100 && (b[1] & 0xC0) == 64)           // 100.64/10 shared (carrier-grade NAT)
            || b[0] == 127                                    // loopback
            || (b[0] == 169 && b[1] == 254)                   // link-local
            || (b[0] == 172 && (b[1] & 0xF0) == 16)           // 172.16/12 private
            || (b[0] == 192 && b[1] == 0 && b[2] is 0 or 2)   // 192.0.0/24 protocol assignments, 192.0.2/24 TEST-NET-1
            || (b[0] == 192 && b[1] == 168)                   // 192.168/16 private
            || (b[0] == 198 && (b[1] & 0xFE) == 18)           // 198.18/15 benchmarking
            || (b[0] == 198 && b[1] == 51 && b[2] == 100)     // TEST-NET-2
            || (b[0] == 203 && b[1] == 0 && b[2] == 113)      // TEST-NET-3
            || b[0] >= 240);                                  // 240/4 reserved and the broadcast address
    }

    /// <summary>Whether a phone-pattern match is a phone number rather than a date, a year range or a version.</summary>
    internal static bool IsPhoneNumber(string candidate)
    {
        int digits = 0;
        foreach (char c in candidate)
        {
            if (char.IsAsciiDigit(c))
                digits++;
        }
        if (digits is < 7 or > 15)
            return false;
        bool marked = candidate[0] is '+' or '(';
        if (!marked && DatePattern().IsMatch(candidate))
            return false;
        var groups = candidate.Split([' ', '.', '-', '(', ')', '+'], StringSplitOptions.RemoveEmptyEntries);
        if (!marked && groups.Length == 2 && groups.All(g => g.Length == 4 && g[0] is '1' or '2'))
            return false;   // 1990-2000, 2019 2020: a year range
        if (!marked && candidate.Contains('.') && !candidate.Contains(' ') && !candidate.Contains('-') && groups.Any(g => g.Length < 3))
            return false;   // 10.15.1234: a version or a dotted number, not 555.123.4567
        return true;
    }
}

/// <summary>
/// Estimator of <see cref="PiiRedactorTransformer"/>: <c>mlContext.Transforms.Text.RedactPii(output, input, options)</c>.
/// Needs no training; <see cref="TrivialEstimatorBase{T}.Fit"/> only checks the schema.
/// </summary>
public sealed class PiiRedactorEstimator : TrivialEstimatorBase<PiiRedactorTransformer>
{
    private readonly string _outputColumn;
    private readonly PiiRedactorOptions _options;

    internal PiiRedactorEstimator(TransformsCatalog.TextTransforms catalog, string outputColumnName, string? inputColumnName, PiiRedactorOptions? options)
        : base(CurationChecks.ColumnName(inputColumnName ?? outputColumnName, "inputColumnName"))
    {
        ArgumentNullException.ThrowIfNull(catalog);
        _outputColumn = CurationChecks.ColumnName(outputColumnName, "outputColumnName");
        _options = (options ?? new PiiRedactorOptions()).Clone();
        _options.Validate();
    }

    private protected override PiiRedactorTransformer Create() => new(_outputColumn, InputColumnName, _options);

    private protected override IReadOnlyList<(string Name, DataViewType Type)> AddedColumns() => [(_outputColumn, TextDataViewType.Instance)];
}

/// <summary>
/// Adds a column holding the input text with e-mail addresses, IP addresses and phone numbers replaced (see
/// <see cref="PiiRedactor"/>). Row-to-row: works in a <c>PredictionEngine</c>; saves into and loads from an ML.NET model
/// zip. <see cref="Report"/> counts what was replaced in every value computed so far.
/// </summary>
public sealed class PiiRedactorTransformer : AppendColumnsTransformerBase, IPersistentComponent<PiiRedactorTransformer>
{
    internal const string LoaderSignature = "LlmPiiRedactor";

    internal static readonly ComponentVersion Version =
        new("LMPIIRED", 0x00010001, 0x00010001, LoaderSignature, typeof(PiiRedactorTransformer).Assembly);

    static ComponentVersion IPersistentComponent<PiiRedactorTransformer>.PersistenceVersion => Version;

    // rows, rows changed, e-mails, IPv4, IPv6, phones; updated with Interlocked from every cursor.
    private readonly long[] _totals = new long[6];

    internal PiiRedactorTransformer(string outputColumn, string inputColumn, PiiRedactorOptions options)
        : base(Version)
    {
        OutputColumnName = outputColumn;
        InputColumnName = inputColumn;
        Options = options;
    }

    /// <summary>The column written.</summary>
    public string OutputColumnName { get; }

    /// <summary>The text column read.</summary>
    public string InputColumnName { get; }

    internal PiiRedactorOptions Options { get; }

    /// <summary>What was replaced in the rows computed since this transformer was made or <see cref="ResetReport"/>
    /// was called (each row of a cursor once, however often it is read; each pass over the data counts again).</summary>
    public PiiReport Report => new(
        Interlocked.Read(ref _totals[0]), Interlocked.Read(ref _totals[1]), Interlocked.Read(ref _totals[2]),
        Interlocked.Read(ref _totals[3]), Interlocked.Read(ref _totals[4]), Interlocked.Read(ref _totals[5]));

    /// <summary>Sets the counts of <see cref="Report"/> to zero.</summary>
    public void ResetReport()
    {
        for (int i = 0; i < _totals.Length; i++)
            Interlocked.Exchange(ref _totals[i], 0);
    }

    private protected override AppendColumnsMapper MakeMapper(DataViewSchema inputSchema)
    {
        int index = SchemaChecks.TextColumn(inputSchema, InputColumnName).Index;
        var options = Options;
        var totals = _totals;
        return new AppendColumnsMapper(inputSchema, index, [new(OutputColumnName, TextDataViewType.Instance)], (row, active) =>
        {
            var source = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[index]);
            ReadOnlyMemory<char> raw = default;
            var counts = new long[4];
            // A row's value is computed once however many consumers read it (a filter and the next stage both read the
            // text), so the report counts rows, not reads.
            long lastPosition = -1;
            ReadOnlyMemory<char> lastRaw = default, lastValue = default;
            ValueGetter<ReadOnlyMemory<char>> getter = (ref ReadOnlyMemory<char> value) =>
            {
                source(ref raw);
                if (row.Position == lastPosition && row.Position >= 0 && raw.Span.SequenceEqual(lastRaw.Span))
                {
                    value = lastValue;
                    return;
                }
                string text = raw.ToString();
                Array.Clear(counts);
                string redacted = PiiRedactor.Redact(text, options, counts);
                Interlocked.Increment(ref totals[0]);
                if (!ReferenceEquals(redacted, text) && redacted != text)
                    Interlocked.Increment(ref totals[1]);
                for (int k = 0; k < counts.Length; k++)
                {
                    if (counts[k] != 0)
                        Interlocked.Add(ref totals[2 + k], counts[k]);
                }
                value = ReferenceEquals(redacted, text) ? raw : redacted.AsMemory();
                lastPosition = row.Position;
                lastRaw = text.AsMemory();
                lastValue = value;
            };
            return [getter];
        });
    }

    // Binary format (version 0x00010001): OutputColumnName, InputColumnName (string each); RedactEmails,
    // RedactIPAddresses, OnlyPublicIPAddresses, RedactPhoneNumbers (bool each); then the e-mail, IPv4, IPv6 and phone
    // replacement lists, each an int32 count followed by its strings. No side entries.
    private protected override void SaveState(ComponentWriter writer)
    {
        var w = writer.Writer;
        w.Write(OutputColumnName);
        w.Write(InputColumnName);
        w.Write(Options.RedactEmails);
        w.Write(Options.RedactIPAddresses);
        w.Write(Options.OnlyPublicIPAddresses);
        w.Write(Options.RedactPhoneNumbers);
        foreach (var list in (IList<string>[])[Options.EmailReplacements, Options.IPv4Replacements, Options.IPv6Replacements, Options.PhoneReplacements])
        {
            w.Write(list.Count);
            foreach (var s in list)
                w.Write(s);
        }
    }

    // Binary format: see SaveState.
    static PiiRedactorTransformer IPersistentComponent<PiiRedactorTransformer>.Load(IHostEnvironment env, ComponentReader reader)
    {
        var r = reader.Reader;
        string output = r.ReadString();
        string input = r.ReadString();
        var options = new PiiRedactorOptions
        {
            RedactEmails = r.ReadBoolean(),
            RedactIPAddresses = r.ReadBoolean(),
            OnlyPublicIPAddresses = r.ReadBoolean(),
            RedactPhoneNumbers = r.ReadBoolean(),
            EmailReplacements = ReadList(r),
            IPv4Replacements = ReadList(r),
            IPv6Replacements = ReadList(r),
            PhoneReplacements = ReadList(r),
        };
        options.Validate();
        return new PiiRedactorTransformer(output, input, options);

        static List<string> ReadList(BinaryReader r)
        {
            int count = r.ReadInt32();
            if (count is < 0 or > 1_000_000)
                throw new InvalidDataException($"The saved PII redactor holds a replacement list of {count} entries; expected 0 to 1000000.");
            var list = new List<string>(count);
            for (int i = 0; i < count; i++)
                list.Add(r.ReadString());
            return list;
        }
    }
}
