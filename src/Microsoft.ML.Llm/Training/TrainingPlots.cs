using ScottPlot;
using SkiaSharp;

namespace Microsoft.ML.Llm;

/// <summary>
/// Pictures of a training run, drawn with ScottPlot: the trainer writes <c>loss.png</c> into
/// <see cref="CausalLmTrainerOptions.LogDirectory"/> at every evaluation and at the end; <see cref="SaveLossPlot"/>
/// draws any history (e.g. <see cref="CausalLmTransformer.History"/> of a loaded model).
/// </summary>
public static class TrainingPlots
{
    /// <summary>The default picture width, in pixels.</summary>
    public const int DefaultWidth = 900;

    /// <summary>The default picture height, in pixels.</summary>
    public const int DefaultHeight = 540;

    // The labels use a bundled DejaVu Sans, so the picture is the same on a server without any installed font
    // (a fresh Debian image has none; ScottPlot's Linux native assets do not use fontconfig).
    private const string FontName = "DejaVu Sans (Microsoft.ML.Llm)";
    private static readonly Lazy<bool> s_fontRegistered = new(RegisterFont);

    /// <summary>
    /// Draws the training loss (each step) and the validation loss (each evaluation) against training tokens, with the
    /// learning rate on a second axis, and saves it as a PNG (written under a temporary name, then renamed).
    /// </summary>
    /// <param name="history">The rows to draw; steps whose loss is not known (NaN) are left out.</param>
    /// <param name="path">The PNG file to write.</param>
    /// <param name="width">Width in pixels (16 to 16384).</param>
    /// <param name="height">Height in pixels (16 to 16384).</param>
    /// <exception cref="ArgumentException"><paramref name="history"/> has no row with a loss, or a size is out of range.</exception>
    public static void SaveLossPlot(IReadOnlyList<TrainingMetrics> history, string path, int width = DefaultWidth, int height = DefaultHeight)
    {
        ArgumentNullException.ThrowIfNull(history);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (width is < 16 or > 16384)
            throw new ArgumentOutOfRangeException(nameof(width), width, $"The plot width must be between 16 and 16384 pixels; got {width}.");
        if (height is < 16 or > 16384)
            throw new ArgumentOutOfRangeException(nameof(height), height, $"The plot height must be between 16 and 16384 pixels; got {height}.");
        var train = history.Where(m => double.IsFinite(m.Loss)).ToArray();
        var validation = history.Where(m => m.ValidationLoss is { } v && double.IsFinite(v)).ToArray();
        if (train.Length == 0 && validation.Length == 0)
            throw new ArgumentException($"The history has {history.Count} rows and none holds a training or validation loss; there is nothing to draw.", nameof(history));

        _ = s_fontRegistered.Value;
        var plot = new Plot();
        try
        {
            plot.Font.Set(FontName);
            if (train.Length > 0)
            {
                var loss = plot.Add.ScatterLine(train.Select(m => (double)m.Tokens).ToArray(), train.Select(m => m.Loss).ToArray());
                loss.LegendText = "training loss";
                loss.LineWidth = 1.5f;
            }
            if (validation.Length > 0)
            {
                var val = plot.Add.Scatter(validation.Select(m => (double)m.Tokens).ToArray(), validation.Select(m => m.ValidationLoss!.Value).ToArray());
                val.LegendText = "validation loss";
                val.LineWidth = 2;
                val.MarkerSize = 6;
            }
            var rates = history.Where(m => double.IsFinite(m.LearningRate)).ToArray();
            if (rates.Length > 0)
            {
                var rateAxis = plot.Axes.AddRightAxis();
                rateAxis.LabelText = "learning rate";
                var rate = plot.Add.ScatterLine(rates.Select(m => (double)m.Tokens).ToArray(), rates.Select(m => m.LearningRate).ToArray());
                rate.Axes.YAxis = rateAxis;
                rate.LegendText = "learning rate";
                rate.LinePattern = LinePattern.Dashed;
                rate.Color = Colors.Gray;
            }
            plot.XLabel("training tokens");
            plot.YLabel("loss (nats/token)");
            plot.Title($"step {history[^1].Step}");
            plot.ShowLegend(Alignment.UpperRight);

            SavePng(plot, path, width, height);
        }
        finally
        {
            plot.Dispose();
        }
    }

    /// <summary>Writes <paramref name="plot"/> as a PNG under a temporary name, then renames it over <paramref name="path"/>
    /// (a reader never sees half a picture).</summary>
    internal static void SavePng(Plot plot, string path, int width, int height)
    {
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null)
            Directory.CreateDirectory(folder);
        string temporary = path + ".tmp";
        plot.SavePng(temporary, width, height);
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Sets the bundled font on <paramref name="plot"/> (the sweep's pictures use it too).</summary>
    internal static void UseBundledFont(Plot plot)
    {
        _ = s_fontRegistered.Value;
        plot.Font.Set(FontName);
    }

    private static bool RegisterFont()
    {
        Fonts.FontResolvers.Add(new EmbeddedFontResolver());
        return true;
    }

    /// <summary>Serves the bundled DejaVu Sans under <see cref="FontName"/> (every weight and slant: it has one face).</summary>
    private sealed class EmbeddedFontResolver : IFontResolver
    {
        // A new typeface per request from the font's bytes (read once): ScottPlot may dispose what it is given.
        private readonly Lazy<byte[]?> _font = new(() =>
        {
            using var stream = typeof(TrainingPlots).Assembly.GetManifestResourceStream("Microsoft.ML.Llm.Resources.DejaVuSans.ttf");
            if (stream is null)
                return null;
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        });

        public SKTypeface? CreateTypeface(string fontName, bool bold, bool italic) => Create(fontName);

        public SKTypeface? CreateTypeface(string fontName, FontWeight weight, FontSlant slant, FontSpacing width) => Create(fontName);

        private SKTypeface? Create(string fontName)
        {
            if (fontName != FontName || _font.Value is not { } bytes)
                return null;
            using var data = SKData.CreateCopy(bytes);
            return SKTypeface.FromData(data);
        }
    }
}
