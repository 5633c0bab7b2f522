using ScottPlot;

namespace Microsoft.ML.Llm;

/// <summary>The sweep's picture: every trial's objective against training tokens.</summary>
public static class SweepPlots
{
    /// <summary>
    /// Draws each trial's learning curve (its objective at each evaluation against training tokens) and saves a PNG
    /// (temporary name, then renamed). Completed trials are solid lines, the best one thick; trials stopped early are
    /// dashed and end in a + where they were cut; failed trials that reported something are dotted.
    /// </summary>
    /// <exception cref="ArgumentException">No trial reported any value.</exception>
    public static void SaveLearningCurves(SweepResult result, string path, int width = TrainingPlots.DefaultWidth, int height = TrainingPlots.DefaultHeight)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (width is < 16 or > 16384)
            throw new ArgumentOutOfRangeException(nameof(width), width, $"The plot width must be between 16 and 16384 pixels; got {width}.");
        if (height is < 16 or > 16384)
            throw new ArgumentOutOfRangeException(nameof(height), height, $"The plot height must be between 16 and 16384 pixels; got {height}.");
        var drawn = result.Trials.Where(t => t.Curve.Any(p => double.IsFinite(p.Value))).ToArray();
        if (drawn.Length == 0)
            throw new ArgumentException($"None of the sweep's {result.Trials.Count} trials reported a value of '{result.ObjectiveName}'; there is nothing to draw.", nameof(result));

        var best = result.BestTrial;
        var plot = new Plot();
        try
        {
            TrainingPlots.UseBundledFont(plot);
            var palette = new ScottPlot.Palettes.Category10();
            foreach (var t in drawn)
            {
                var points = t.Curve.Where(p => double.IsFinite(p.Value)).ToArray();
                var color = palette.GetColor(t.TrialId - 1);
                var line = plot.Add.Scatter(points.Select(p => (double)p.Tokens).ToArray(), points.Select(p => p.Value).ToArray());
                line.Color = color;
                line.MarkerSize = 4;
                line.LineWidth = t == best ? 3.5f : 1.5f;
                line.LegendText = $"trial {t.TrialId}" + (t == best ? " (best)" : t.Status == TrialStatus.Completed ? "" : $" ({t.Status.ToString().ToLowerInvariant()})");
                if (t.Status == TrialStatus.Stopped)
                {
                    line.LinePattern = LinePattern.Dashed;
                    var cut = plot.Add.Marker(points[^1].Tokens, points[^1].Value, MarkerShape.Cross, 14, color);
                    cut.LineWidth = 2.5f;
                }
                else if (t.Status == TrialStatus.Failed)
                {
                    line.LinePattern = LinePattern.Dotted;
                }
            }

            plot.XLabel("training tokens");
            plot.YLabel(result.ObjectiveName);
            int stopped = result.Trials.Count(t => t.Status == TrialStatus.Stopped);
            int failed = result.Trials.Count(t => t.Status == TrialStatus.Failed);
            plot.Title($"{result.Trials.Count} trials ({stopped} stopped early, cut at +; {failed} failed)" +
                (best is null ? "" : FormattableString.Invariant($"; best {best.Metric:G5} (trial {best.TrialId})")));
            plot.ShowLegend(Alignment.UpperRight);
            TrainingPlots.SavePng(plot, path, width, height);
        }
        finally
        {
            plot.Dispose();
        }
    }
}
