using Microsoft.ML.Llm.Sweeping;

namespace Microsoft.ML.Llm;

/// <summary>
/// Tree-structured Parzen estimator (TPE; Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization"; the
/// defaults of hyperopt and Optuna): after <c>startupTrials</c> random trials, the trials seen so far are split into
/// the best γ (at least one, at most 25) and the rest; each part becomes a density over the feature space — per
/// coordinate, a mixture of truncated Gaussians at the observed points plus a wide prior at the centre, each with the
/// distance to its farther neighbour as bandwidth (hyperopt's adaptive Parzen estimator), or smoothed counts for a
/// choice — and the next trial is the one of <c>candidates</c> draws from the good density l(x) that maximises
/// l(x)/g(x), the expected-improvement criterion of the paper. Failed trials count as the worst. Seeded.
/// </summary>
public sealed class TreeParzenTuner : ITuner
{
    private const int MaxBelow = 25;
    private const double PriorWeight = 1.0;

    private readonly Sweeping.SearchSpace _space;
    private readonly (string Name, int? Categories)[] _dims;
    private readonly Random _random;
    private readonly int _startupTrials;
    private readonly int _candidates;
    private readonly double _gamma;
    private readonly List<(double[] X, double Loss)> _observations = [];

    /// <summary>TPE over <paramref name="searchSpace"/>.</summary>
    /// <param name="searchSpace">The space (not empty).</param>
    /// <param name="seed">Seed of the draws.</param>
    /// <param name="startupTrials">Random trials before the model is used (at least 1; Optuna's default 10).</param>
    /// <param name="candidates">Draws from l(x) scored per proposal (Optuna's default 24).</param>
    /// <param name="gamma">Fraction of the trials counted as good (hyperopt's 0.25).</param>
    public TreeParzenTuner(Sweeping.SearchSpace searchSpace, int seed = 0, int startupTrials = 10, int candidates = 24, double gamma = 0.25)
    {
        ArgumentNullException.ThrowIfNull(searchSpace);
        searchSpace.CheckNotEmpty(nameof(TreeParzenTuner));
        if (startupTrials < 1)
            throw new ArgumentOutOfRangeException(nameof(startupTrials), startupTrials, $"Parameter 'startupTrials' must be at least 1; got {startupTrials}.");
        if (candidates < 1)
            throw new ArgumentOutOfRangeException(nameof(candidates), candidates, $"Parameter 'candidates' must be at least 1; got {candidates}.");
        if (!(gamma > 0 && gamma < 1))
            throw new ArgumentOutOfRangeException(nameof(gamma), gamma, $"Parameter 'gamma' must be in (0, 1); got {gamma.ToString(CultureInfo.InvariantCulture)}.");
        _space = searchSpace;
        _dims = searchSpace.FeatureDimensions().ToArray();
        _random = new Random(seed);
        _startupTrials = startupTrials;
        _candidates = candidates;
        _gamma = gamma;
    }

    /// <inheritdoc/>
    public Parameter? Propose(TrialSettings settings)
    {
        if (_observations.Count < _startupTrials)
        {
            var x = new double[_dims.Length];
            for (int i = 0; i < x.Length; i++)
                x[i] = _random.NextDouble();
            return _space.SampleFromFeatureSpace(x);
        }

        return _space.SampleFromFeatureSpace(ProposeFeatures());
    }

    /// <inheritdoc/>
    public void Update(TrialResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (result.TrialSettings.Parameter is not { } p)
            return;
        double loss = result.Status == TrialStatus.Failed || double.IsNaN(result.Loss) ? double.PositiveInfinity : result.Loss;
        _observations.Add((_space.MappingToFeatureSpace(p), loss));
    }

    /// <summary>The TPE step in the feature space (exposed to tests through <see cref="Propose"/>).</summary>
    private double[] ProposeFeatures()
    {
        // Stable order: by loss, ties by arrival, so the split is deterministic.
        var ordered = _observations.Select((o, i) => (o.X, o.Loss, i)).OrderBy(o => o.Loss).ThenBy(o => o.i).ToArray();
        int below = Math.Clamp((int)Math.Ceiling(_gamma * ordered.Length), 1, MaxBelow);
        var good = ordered.Take(below).Select(o => o.X).ToArray();
        var bad = ordered.Skip(below).Select(o => o.X).ToArray();

        var l = new Density[_dims.Length];
        var g = new Density[_dims.Length];
        for (int d = 0; d < _dims.Length; d++)
        {
            l[d] = Density.Fit(good.Select(x => x[d]).ToArray(), _dims[d].Categories);
            g[d] = Density.Fit(bad.Select(x => x[d]).ToArray(), _dims[d].Categories);
        }

        double[]? best = null;
        double bestScore = double.NegativeInfinity;
        for (int c = 0; c < _candidates; c++)
        {
            var x = new double[_dims.Length];
            double score = 0;
            for (int d = 0; d < _dims.Length; d++)
            {
                x[d] = l[d].Sample(_random);
                score += l[d].LogPdf(x[d]) - g[d].LogPdf(x[d]);
            }

            if (score > bestScore)
            {
                bestScore = score;
                best = x;
            }
        }

        return best!;
    }

    /// <summary>One coordinate's density: a truncated-Gaussian mixture on [0, 1], or smoothed counts for a choice.</summary>
    private sealed class Density
    {
        private double[] _mus = [];
        private double[] _sigmas = [];
        private double[] _weights = [];       // normalised
        private double[] _mass = [];          // each component's mass inside [0, 1]
        private int _categories;

        public static Density Fit(double[] points, int? categories)
        {
            var density = new Density();
            if (categories is { } k)
            {
                // p(category) ∝ count + prior weight / k: every value keeps a chance.
                density._categories = k;
                var w = Enumerable.Repeat(PriorWeight / k, k).ToArray();
                foreach (var x in points)
                    w[Math.Min(k - 1, (int)Math.Floor(x * k))] += 1;
                double sum = w.Sum();
                density._weights = w.Select(v => v / sum).ToArray();
                return density;
            }

            // hyperopt's adaptive Parzen estimator: the prior (centre 0.5, σ = the range) among the sorted points; each
            // point's σ = the larger gap to its neighbours, clipped to [range / min(100, n + 1), range].
            var mus = points.Append(0.5).Order().ToArray();
            int priorIndex = Array.IndexOf(mus, 0.5);
            int n = mus.Length;
            var sigmas = new double[n];
            for (int i = 0; i < n; i++)
            {
                double left = i > 0 ? mus[i] - mus[i - 1] : mus[i];
                double right = i < n - 1 ? mus[i + 1] - mus[i] : 1 - mus[i];
                sigmas[i] = Math.Max(left, right);
            }

            double minSigma = 1.0 / Math.Min(100, n + 1);
            for (int i = 0; i < n; i++)
                sigmas[i] = Math.Clamp(sigmas[i], minSigma, 1.0);
            sigmas[priorIndex] = 1.0;
            var weights = Enumerable.Repeat(1.0, n).ToArray();
            weights[priorIndex] = PriorWeight;
            double total = weights.Sum();
            density._mus = mus;
            density._sigmas = sigmas;
            density._weights = weights.Select(v => v / total).ToArray();
            density._mass = mus.Select((m, i) => Phi((1 - m) / sigmas[i]) - Phi((0 - m) / sigmas[i])).ToArray();
            return density;
        }

        public double Sample(Random random)
        {
            int c = Pick(random);
            if (_categories > 0)
                return (c + 0.5) / _categories;
            for (int attempt = 0; attempt < 100; attempt++)
            {
                double x = _mus[c] + _sigmas[c] * Gaussian(random);
                if (x >= 0 && x <= 1)
                    return x;
            }

            return Math.Clamp(_mus[c], 0, 1);
        }

        public double LogPdf(double x)
        {
            if (_categories > 0)
                return Math.Log(_weights[Math.Min(_categories - 1, (int)Math.Floor(x * _categories))]);
            double p = 0;
            for (int i = 0; i < _mus.Length; i++)
            {
                double z = (x - _mus[i]) / _sigmas[i];
                p += _weights[i] * Math.Exp(-0.5 * z * z) / (_sigmas[i] * Math.Sqrt(2 * Math.PI) * Math.Max(_mass[i], 1e-12));
            }

            return Math.Log(Math.Max(p, 1e-300));
        }

        private int Pick(Random random)
        {
            double u = random.NextDouble();
            for (int i = 0; i < _weights.Length; i++)
            {
                u -= _weights[i];
                if (u < 0)
                    return i;
            }

            return _weights.Length - 1;
        }

        private static double Gaussian(Random random)
        {
            // Box–Muller.
            double u1 = 1.0 - random.NextDouble();
            double u2 = random.NextDouble();
            return Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        }

        /// <summary>The standard normal CDF, through erf (Abramowitz and Stegun 7.1.26, |error| ≤ 1.5e-7).</summary>
        private static double Phi(double z) => 0.5 * (1 + Erf(z / Math.Sqrt(2)));

        private static double Erf(double x)
        {
            double sign = Math.Sign(x);
            x = Math.Abs(x);
            double t = 1 / (1 + 0.3275911 * x);
            double y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.Exp(-x * x);
            return sign * y;
        }
    }
}
