using Microsoft.ML.Data;
using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class PiiRedactorTests
{
    private static readonly PiiRedactorOptions s_placeholders = new()
    {
        EmailReplacements = ["<EMAIL>"],
        IPv4Replacements = ["<IP>"],
        IPv6Replacements = ["<IP6>"],
        PhoneReplacements = ["<PHONE>"],
    };

    [Theory]
    [InlineData("Write to john.doe+news@mail.example-host.co.uk today.", "Write to <EMAIL> today.")]
    [InlineData("a@b.io, x_y@[192.168.0.1]", "<EMAIL>, <EMAIL>")]
    [InlineData("Server 81.2.69.160 and 51.15.12.200:443 answered.", "Server <IP> and <IP>:443 answered.")]
    [InlineData("v6 at 2606:4700:4700::1111 and [2a00:1450:4001:82b::200e]:80", "v6 at <IP6> and [<IP6>]:80")]
    [InlineData("Call +1 415 555 2671 or (030) 1234-5678 or 555.123.4567 or 0171-2345678.", "Call <PHONE> or <PHONE> or <PHONE> or <PHONE>.")]
    public void PositiveExamplesAreReplaced(string input, string expected)
    {
        Assert.Equal(expected, PiiRedactor.Redact(input, s_placeholders));
    }

    [Theory]
    [InlineData("Released 2024-01-15, also written 15.01.2024 or 01-15-24.")]
    [InlineData("Version 1.2.3.4 and 10.0.12 and 4.19.0-21-amd64 and 3.11.4.")]
    [InlineData("One digit per part reads as a version, as in datatrove: 8.8.8.8 and 1.1.1.1 are kept.")]
    [InlineData("Private 10.0.0.1, 192.168.1.20, loopback 127.0.0.1, docs 192.0.2.7, link ::1 and fe80::1 and 2001:db8::5.")]
    [InlineData("From 1990-2000, in 2019 2020; the time was 12:30:45 and the ratio 3:2.")]
    [InlineData("Population 1234567; ISBN 978-3-16; score 1,234,567.89; 1.2.3.4.5 is no address.")]
    [InlineData("Not an address: user@localhost has no dot, and @handle is no e-mail.")]
    public void NegativeExamplesAreKept(string input)
    {
        Assert.Equal(input, PiiRedactor.Redact(input, s_placeholders));
    }

    [Fact]
    public void DefaultsAreDatatrovesFakeAddressesChosenByHash()
    {
        string once = PiiRedactor.Redact("mail a@b.io and a@b.io, ip 81.2.69.160");
        var parts = once.Split(' ');
        Assert.Contains(parts[1], PiiRedactorOptions.Defaults.EmailReplacements);
        Assert.Equal(parts[1], parts[3].TrimEnd(','));   // the same address, the same replacement
        Assert.Contains(parts[5], PiiRedactorOptions.Defaults.IPv4Replacements);
        Assert.Equal(once, PiiRedactor.Redact("mail a@b.io and a@b.io, ip 81.2.69.160"));
        Assert.Equal("ip 10.1.2.3", PiiRedactor.Redact("ip 10.1.2.3"));
        Assert.Equal("ip <IP>", PiiRedactor.Redact("ip 10.1.2.3", new PiiRedactorOptions { OnlyPublicIPAddresses = false, IPv4Replacements = ["<IP>"] }));
    }

    [Fact]
    public void PipelineCountsSavesLoadsAndPredicts()
    {
        var ml = new MLContext(seed: 1);
        var data = Load(ml, "mail bob@corp.com or call +44 20 7946 0958", "nothing here", "ips 81.2.69.160 2606:4700::6810:84e5 51.15.12.200");
        var model = ml.Transforms.Text.RedactPii("Clean", "Text", s_placeholders).Fit(data);
        var expected = new[] { "mail <EMAIL> or call <PHONE>", "nothing here", "ips <IP> <IP6> <IP>" };
        Assert.Equal(expected, Column(model.Transform(data), "Clean"));
        Assert.Equal(new PiiReport(Rows: 3, RowsChanged: 2, Emails: 1, IPv4Addresses: 2, IPv6Addresses: 1, PhoneNumbers: 1), model.Report);
        Assert.Equal("rows 3, changed 2: e-mails 1, IPv4 2, IPv6 1, phones 1", model.Report.ToString());
        model.ResetReport();
        Assert.Equal(0, model.Report.Rows);

        string path = TempPath("pii.zip");
        try
        {
            ml.Model.Save(model, data.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            Assert.Equal(expected, Column(loaded.Transform(data), "Clean"));
            var engine = ml.Model.CreatePredictionEngine<TextRow, CleanRow>(loaded);
            Assert.Equal("ask <EMAIL>", engine.Predict(new TextRow { Text = "ask x@y.org" }).Clean);
            // Each prediction is a new value (the per-row memo must not serve the previous one).
            Assert.Equal("call <PHONE>", engine.Predict(new TextRow { Text = "call +44 20 7946 0958" }).Clean);
            Assert.Equal("plain", engine.Predict(new TextRow { Text = "plain" }).Clean);
        }
        finally
        {
            File.Delete(path);
        }
    }

    public sealed class CleanRow
    {
        public string Clean { get; set; } = "";
    }

    [Fact]
    public void BadInputGetsClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable([new { Number = 1f }]);
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RedactPii("Out", "Text").Fit(data));
        Assert.StartsWith("Could not find input column 'Text'", missing.Message);
        var wrongType = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.RedactPii("Out", "Number").Fit(data));
        Assert.StartsWith("Schema mismatch for input column 'Number': expected String, got Single", wrongType.Message);
        var empty = Assert.Throws<ArgumentException>(() => ml.Transforms.Text.RedactPii("Out", "Text", new PiiRedactorOptions { PhoneReplacements = [] }));
        Assert.StartsWith("Option 'PhoneReplacements' must hold at least one replacement text; got none.", empty.Message);
    }
}
