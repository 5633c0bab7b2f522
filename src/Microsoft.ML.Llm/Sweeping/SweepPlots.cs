using ScottPlot;

namespace Microsoft.ML.Llm;

/// <summary>The sweep's picture: every trial's objective against training tokens.</summary>
public static class SweepPlots
{
    /// <summary>
    /// Draws each trial's learning curve (its objective at each evaluation against training tokens) and saves a PNG
    /// (temporary name, then renamed). Completed trials are solid lines, the best one thick; trials stopped early are
    /// dashed and end in a + where they were cut; failed trials that reported something are dotted. A final phase
    /// (<see cref="LlmExperiment.SetFinalTraining"/>) continues the curve of the trial it trained further, in that
    /// trial's colour, thick, from the trial's last point.
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
                var color = palette.GetColor((t.TrialSettings.ContinuesTrial ?? t.TrialId) - 1);
                if (t.TrialSettings.ContinuesTrial is { } from && result.Trials.FirstOrDefault(b => b.TrialId == from) is { Curve.Count: > 0 } continued)
                    points = [continued.Curve[^1], .. points];   // joined to where the trial's own curve ended
                var line = plot.Add.Scatter(points.Select(p => (double)p.Tokens).ToArray(), points.Select(p => p.Value).ToArray());
                line.Color = color;
                line.MarkerSize = 4;
                line.LineWidth = t == best ? 3.5f : 1.5f;
                line.LegendText = (t.TrialSettings.ContinuesTrial is { } f ? $"final phase (trial {f} continued)" : $"trial {t.TrialId}") +
                    (t == best ? " (best)" : t.Status == TrialStatus.Completed ? "" : $" ({t.Status.ToString().ToLowerInvariant()})");
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
            int stopped = result.Trials.Count(t => t.Status == TrialStatus.Stopped && !t.IsFinalPhase);
            int failed = result.Trials.Count(t => t.Status == TrialStatus.Failed);
            plot.Title($"{result.Trials.Count(t => !t.IsFinalPhase)} trials ({stopped} stopped early, cut at +; {failed} failed)" +
                (best is null ? "" : FormattableString.Invariant($"; {(best.IsFinalPhase ? "final" : "best")} {best.Metric:G5} (trial {best.TrialSettings.ContinuesTrial ?? best.TrialId}{(best.IsFinalPhase ? " continued" : "")})")));
            plot.ShowLegend(Alignment.UpperRight);
            TrainingPlots.SavePng(plot, path, width, height);
        }
        finally
        {
            plot.Dispose();
        }
    }
}
