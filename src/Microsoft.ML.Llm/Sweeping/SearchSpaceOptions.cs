namespace Microsoft.ML.Llm.Sweeping;

/// <summary>
/// One searchable option of a <see cref="SearchSpace"/> (AutoML's <c>OptionBase</c>). Tuners see every option as
/// coordinates in [0, 1] (its feature space, <see cref="FeatureSpaceDim"/> of them) and map them to values with
/// <see cref="SampleFromFeatureSpace"/>; <see cref="MappingToFeatureSpace"/> is the inverse.
/// </summary>
public abstract class OptionBase
{
    private protected OptionBase()
    {
    }

    /// <summary>Coordinates this option takes in the feature space.</summary>
    public abstract int FeatureSpaceDim { get; }

    /// <summary>The value used when a tuner starts from the defaults (and by the grid's first point).</summary>
    public abstract Parameter Default { get; }

    /// <summary>The value at <paramref name="feature"/> (coordinates in [0, 1], clamped).</summary>
    public abstract Parameter SampleFromFeatureSpace(double[] feature);

    /// <summary>The coordinates of <paramref name="parameter"/>.</summary>
    public abstract double[] MappingToFeatureSpace(Parameter parameter);

    /// <summary>Checks the option; <paramref name="name"/> is its path in the search space (for messages).</summary>
    internal abstract void Validate(string name);

    /// <summary>The feature-space dimensions: for each, its path and the number of categories (null = continuous).</summary>
    internal abstract IEnumerable<(string Name, int? Categories)> Dimensions(string name);

    /// <summary>The coordinates a grid visits in each dimension (<paramref name="gridSize"/> points for a continuous one).</summary>
    internal abstract IEnumerable<double[]> GridCoordinates(int gridSize);

    private protected static double Clamp01(double x) => double.IsNaN(x) ? 0.5 : Math.Clamp(x, 0, 1);

    private protected static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Checks that a feature vector has this option's <paramref name="length"/> coordinates.</summary>
    private protected static void CheckLength(double[] feature, int length)
    {
        ArgumentNullException.ThrowIfNull(feature);
        if (feature.Length != length)
            throw new ArgumentException($"The feature vector has {feature.Length} coordinates; this option takes {length}.", nameof(feature));
    }
}

/// <summary>A floating-point range, uniform on a linear or a logarithmic scale (AutoML's <c>UniformDoubleOption</c>).</summary>
public sealed class UniformDoubleOption : OptionBase
{
    /// <summary>A range [<paramref name="min"/>, <paramref name="max"/>].</summary>
    /// <param name="min">Smallest value.</param>
    /// <param name="max">Largest value.</param>
    /// <param name="logBase">Uniform in log(value): for learning rates and other scale parameters; needs min &gt; 0.</param>
    /// <param name="defaultValue">The starting value; null = the middle of the range (geometric for a log range).</param>
    public UniformDoubleOption(double min, double max, bool logBase = false, double? defaultValue = null)
    {
        Min = min;
        Max = max;
        LogBase = logBase;
        DefaultValue = defaultValue;
    }

    /// <summary>Smallest value.</summary>
    public double Min { get; }

    /// <summary>Largest value.</summary>
    public double Max { get; }

    /// <summary>Uniform on a log scale.</summary>
    public bool LogBase { get; }

    /// <summary>The starting value (null = the middle).</summary>
    public double? DefaultValue { get; }

    /// <inheritdoc/>
    public override int FeatureSpaceDim => 1;

    /// <inheritdoc/>
    public override Parameter Default => Parameter.FromDouble(DefaultValue ?? ValueAt(0.5));

    /// <inheritdoc/>
    public override Parameter SampleFromFeatureSpace(double[] feature)
    {
        CheckLength(feature, 1);
        return Parameter.FromDouble(ValueAt(Clamp01(feature[0])));
    }

    /// <inheritdoc/>
    public override double[] MappingToFeatureSpace(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        double v = parameter.AsDouble("value");
        if (Max == Min)
            return [0.5];
        double x = LogBase ? (Math.Log(v) - Math.Log(Min)) / (Math.Log(Max) - Math.Log(Min)) : (v - Min) / (Max - Min);
        return [Clamp01(x)];
    }

    internal double ValueAt(double x)
    {
        double v = LogBase ? Math.Exp(Math.Log(Min) + x * (Math.Log(Max) - Math.Log(Min))) : Min + x * (Max - Min);
        return Math.Clamp(v, Min, Max);
    }

    internal override void Validate(string name) => NumericRange.Check(name, Min, Max, LogBase, DefaultValue);

    internal override IEnumerable<(string Name, int? Categories)> Dimensions(string name) => [(name, null)];

    internal override IEnumerable<double[]> GridCoordinates(int gridSize) =>
        [gridSize == 1 || Max == Min ? [0.5] : Enumerable.Range(0, gridSize).Select(i => (double)i / (gridSize - 1)).ToArray()];
}

/// <summary>An integer range, uniform on a linear or a logarithmic scale (AutoML's <c>UniformIntOption</c>).</summary>
public sealed class UniformIntOption : OptionBase
{
    /// <summary>A range of integers [<paramref name="min"/>, <paramref name="max"/>].</summary>
    /// <param name="min">Smallest value.</param>
    /// <param name="max">Largest value.</param>
    /// <param name="logBase">Uniform in log(value) (sizes: widths, vocabularies, batch sizes); needs min &gt; 0.</param>
    /// <param name="defaultValue">The starting value; null = the middle of the range.</param>
    public UniformIntOption(int min, int max, bool logBase = false, int? defaultValue = null)
    {
        Min = min;
        Max = max;
        LogBase = logBase;
        DefaultValue = defaultValue;
    }

    /// <summary>Smallest value.</summary>
    public int Min { get; }

    /// <summary>Largest value.</summary>
    public int Max { get; }

    /// <summary>Uniform on a log scale.</summary>
    public bool LogBase { get; }

    /// <summary>The starting value (null = the middle).</summary>
    public int? DefaultValue { get; }

    /// <inheritdoc/>
    public override int FeatureSpaceDim => 1;

    /// <inheritdoc/>
    public override Parameter Default => Parameter.FromInt(DefaultValue ?? ValueAt(0.5));

    /// <inheritdoc/>
    public override Parameter SampleFromFeatureSpace(double[] feature)
    {
        CheckLength(feature, 1);
        return Parameter.FromInt(ValueAt(Clamp01(feature[0])));
    }

    /// <inheritdoc/>
    public override double[] MappingToFeatureSpace(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        double v = parameter.AsDouble("value");
        if (Max == Min)
            return [0.5];
        if (LogBase)
            return [Clamp01((Math.Log(v) - Math.Log(Min)) / (Math.Log(Max) - Math.Log(Min)))];
        // The middle of the value's cell: ValueAt maps [min, max] in max - min + 1 equal cells.
        return [Clamp01((v - Min + 0.5) / ((double)Max - Min + 1))];
    }

    internal int ValueAt(double x)
    {
        if (LogBase)
            return (int)Math.Clamp(Math.Round(Math.Exp(Math.Log(Min) + x * (Math.Log(Max) - Math.Log(Min)))), Min, Max);
        return (int)Math.Clamp(Min + Math.Floor(x * ((double)Max - Min + 1)), Min, Max);
    }

    internal override void Validate(string name) => NumericRange.Check(name, Min, Max, LogBase, DefaultValue);

    internal override IEnumerable<(string Name, int? Categories)> Dimensions(string name) => [(name, null)];

    internal override IEnumerable<double[]> GridCoordinates(int gridSize)
    {
        // At most gridSize distinct integers, spread over the range on its scale; a short range gives every integer.
        var values = new SortedSet<int>();
        if (gridSize == 1 || Max == Min)
        {
            values.Add(ValueAt(0.5));
        }
        else
        {
            for (int i = 0; i < gridSize; i++)
            {
                double x = (double)i / (gridSize - 1);
                values.Add(LogBase ? ValueAt(x) : (int)Math.Round(Min + x * ((double)Max - Min)));
            }
        }

        return [values.Select(v => MappingToFeatureSpace(Parameter.FromInt(v))[0]).ToArray()];
    }
}

/// <summary>A choice among values — numbers, strings, Booleans or enum values (AutoML's <c>ChoiceOption</c>).</summary>
public sealed class ChoiceOption : OptionBase
{
    private readonly object[] _raw;
    private Parameter[]? _choices;

    /// <summary>A choice among <paramref name="choices"/>; the first is the default.</summary>
    public ChoiceOption(params object[] choices)
        : this(choices, defaultChoice: null)
    {
    }

    /// <summary>A choice among <paramref name="choices"/> starting from <paramref name="defaultChoice"/>.</summary>
    public ChoiceOption(object[] choices, object? defaultChoice)
    {
        _raw = choices ?? [];
        DefaultChoice = defaultChoice;
    }

    /// <summary>The values to choose from.</summary>
    public IReadOnlyList<Parameter> Choices => _choices ??= _raw.Select(c => Parameter.FromObject(c, "choice")).ToArray();

    /// <summary>The starting value (null = the first).</summary>
    public object? DefaultChoice { get; }

    /// <inheritdoc/>
    public override int FeatureSpaceDim => 1;

    /// <inheritdoc/>
    public override Parameter Default => DefaultChoice is null ? Choices[0] : Parameter.FromObject(DefaultChoice, "default");

    /// <inheritdoc/>
    public override Parameter SampleFromFeatureSpace(double[] feature)
    {
        CheckLength(feature, 1);
        var choices = Choices;
        int k = (int)Math.Min(choices.Count - 1, Math.Floor(Clamp01(feature[0]) * choices.Count));
        return choices[k];
    }

    /// <inheritdoc/>
    public override double[] MappingToFeatureSpace(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        var choices = Choices;
        for (int k = 0; k < choices.Count; k++)
        {
            if (choices[k].Equals(parameter))
                return [(k + 0.5) / choices.Count];
        }

        throw new ArgumentException($"{parameter} is not one of the choices {string.Join(", ", choices)}.", nameof(parameter));
    }

    internal override void Validate(string name)
    {
        if (_raw.Length == 0)
            throw new ArgumentException($"Choice parameter '{name}' has no values; give at least one value to choose from.", name);
        for (int i = 0; i < _raw.Length; i++)
        {
            if (_raw[i] is null)
                throw new ArgumentException($"Choice parameter '{name}' has a null value (choice {i + 1} of {_raw.Length}); give numbers, strings, Booleans or enum values.", name);
            _ = Parameter.FromObject(_raw[i], name);
        }

        if (DefaultChoice is not null && !Choices.Contains(Parameter.FromObject(DefaultChoice, name)))
            throw new ArgumentException($"Choice parameter '{name}' has the default {DefaultChoice}, which is not one of its values {string.Join(", ", Choices)}.", name);
    }

    internal override IEnumerable<(string Name, int? Categories)> Dimensions(string name) => [(name, Choices.Count)];

    internal override IEnumerable<double[]> GridCoordinates(int gridSize)
    {
        int n = Choices.Count;
        return [Enumerable.Range(0, n).Select(k => (k + 0.5) / n).ToArray()];
    }
}

/// <summary>The checks every numeric range makes, with messages naming the parameter and the value.</summary>
internal static class NumericRange
{
    public static void Check(string name, double min, double max, bool logBase, double? defaultValue)
    {
        string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);
        if (!double.IsFinite(min) || !double.IsFinite(max))
            throw new ArgumentOutOfRangeException(name, $"Range parameter '{name}' has min {F(min)} and max {F(max)}; both must be finite numbers.");
        if (min > max)
            throw new ArgumentOutOfRangeException(name, min, $"Range parameter '{name}' has min {F(min)} greater than max {F(max)}; give min ≤ max.");
        if (logBase && min <= 0)
            throw new ArgumentOutOfRangeException(name, min, $"Range parameter '{name}' is on a log scale but its min is {F(min)}; a log range needs min > 0 (or set logBase: false).");
        if (defaultValue is { } d && !(d >= min && d <= max))
            throw new ArgumentOutOfRangeException(name, d, $"Range parameter '{name}' has the initial value {F(d)}, outside [{F(min)}, {F(max)}].");
    }
}
