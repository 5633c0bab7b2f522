using System.Collections;
using System.Reflection;

namespace Microsoft.ML.Llm.Sweeping;

/// <summary>
/// A search space: named options (<see cref="UniformDoubleOption"/>, <see cref="UniformIntOption"/>,
/// <see cref="ChoiceOption"/>) and nested search spaces, built with the indexer
/// (<c>space["LearningRate"] = new UniformDoubleOption(1e-4, 1e-2, logBase: true)</c>) or from the attributes of an
/// options class (<see cref="SearchSpace{T}"/>). The shape of ML.NET AutoML's <c>Microsoft.ML.SearchSpace.SearchSpace</c>
/// (a package our registry does not serve), with AutoML's names in our own namespace <c>Microsoft.ML.Llm.Sweeping</c>, so
/// switching to AutoML is a change of <c>using</c>.
/// </summary>
/// <remarks>
/// Every option is checked when it is added, with a message naming the parameter and the value: min &gt; max, a log
/// range with min ≤ 0, an initial value outside the range, a choice with no values. A space with no options is
/// rejected where it is used (<see cref="LlmExperiment"/>, the tuners).
/// </remarks>
public class SearchSpace : OptionBase, IEnumerable<KeyValuePair<string, OptionBase>>
{
    private readonly List<KeyValuePair<string, OptionBase>> _options = [];
    private string _path = "";

    /// <summary>An empty search space; add options with the indexer.</summary>
    public SearchSpace()
    {
    }

    /// <summary>The option named <paramref name="key"/>; setting adds (or replaces) it after checking it.</summary>
    public OptionBase this[string key]
    {
        get
        {
            foreach (var kv in _options)
            {
                if (kv.Key == key)
                    return kv.Value;
            }

            throw new KeyNotFoundException($"The search space has no option named '{key}'; it has {string.Join(", ", Keys.Select(k => $"'{k}'"))}.");
        }
        set => Add(key, value);
    }

    /// <summary>The options' names, in the order they were added.</summary>
    public IEnumerable<string> Keys => _options.Select(kv => kv.Key);

    /// <summary>Number of options (a nested space counts as one).</summary>
    public int Count => _options.Count;

    /// <summary>Adds (or replaces) the option named <paramref name="key"/> after checking it.</summary>
    /// <exception cref="ArgumentException">The option is invalid (the message names it and the value).</exception>
    public void Add(string key, OptionBase option)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(key);
        ArgumentNullException.ThrowIfNull(option);
        if (ReferenceEquals(option, this))
            throw new ArgumentException($"Option '{key}' is the search space itself.", nameof(option));
        string path = _path.Length == 0 ? key : _path + "." + key;
        if (option is SearchSpace nested)
            nested.SetPath(path);
        option.Validate(path);
        int i = _options.FindIndex(kv => kv.Key == key);
        if (i >= 0)
            _options[i] = new(key, option);
        else
            _options.Add(new(key, option));
    }

    /// <inheritdoc/>
    public override int FeatureSpaceDim => _options.Sum(kv => kv.Value.FeatureSpaceDim);

    /// <inheritdoc/>
    public override Parameter Default => Parameter.CreateNestedParameter(_options.Select(kv => (kv.Key, kv.Value.Default)).ToArray());

    /// <inheritdoc/>
    public override Parameter SampleFromFeatureSpace(double[] feature)
    {
        ArgumentNullException.ThrowIfNull(feature);
        if (feature.Length != FeatureSpaceDim)
            throw new ArgumentException($"The feature vector has {feature.Length} coordinates; the search space has {FeatureSpaceDim}.", nameof(feature));
        var items = new List<(string, Parameter)>();
        int offset = 0;
        foreach (var (key, option) in _options)
        {
            int n = option.FeatureSpaceDim;
            items.Add((key, option.SampleFromFeatureSpace(feature[offset..(offset + n)])));
            offset += n;
        }

        return Parameter.CreateNestedParameter(items.ToArray());
    }

    /// <inheritdoc/>
    public override double[] MappingToFeatureSpace(Parameter parameter)
    {
        ArgumentNullException.ThrowIfNull(parameter);
        return _options.SelectMany(kv => kv.Value.MappingToFeatureSpace(parameter[kv.Key])).ToArray();
    }

    /// <inheritdoc/>
    public IEnumerator<KeyValuePair<string, OptionBase>> GetEnumerator() => _options.GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Throws when the space has nothing to search.</summary>
    internal void CheckNotEmpty(string what)
    {
        if (FeatureSpaceDim == 0)
            throw new ArgumentException($"The search space{(_path.Length == 0 ? "" : $" '{_path}'")} given to {what} is empty: it has no [Range] or [Choice] option. Add options (space[\"LearningRate\"] = new UniformDoubleOption(...)) or attributes to the options class.");
    }

    internal override void Validate(string name)
    {
        // Options were checked as they were added; a nested space only needs something in it.
        if (FeatureSpaceDim == 0)
            throw new ArgumentException($"Nested search space '{name}' is empty: it has no [Range] or [Choice] option.", name);
    }

    internal override IEnumerable<(string Name, int? Categories)> Dimensions(string name) =>
        _options.SelectMany(kv => kv.Value.Dimensions(name.Length == 0 ? kv.Key : name + "." + kv.Key));

    /// <summary>Every dimension of the feature space, in order.</summary>
    internal IReadOnlyList<(string Name, int? Categories)> FeatureDimensions() => Dimensions("").ToArray();

    internal override IEnumerable<double[]> GridCoordinates(int gridSize) => _options.SelectMany(kv => kv.Value.GridCoordinates(gridSize));

    private void SetPath(string path)
    {
        _path = path;
        foreach (var (key, option) in _options)
        {
            if (option is SearchSpace nested)
                nested.SetPath(path + "." + key);
        }
    }

    /// <summary>
    /// Builds the options of <paramref name="type"/> from ML.NET's search-space attributes on its public properties
    /// (<c>Microsoft.ML.SearchSpace.RangeAttribute</c>, <c>ChoiceAttribute</c>, <c>BooleanChoiceAttribute</c>,
    /// <c>NestOptionAttribute</c>, which Microsoft.ML.Core ships), so an options class written for AutoML works here.
    /// </summary>
    private protected void AddFromAttributes(Type type, string path)
    {
        _path = path;
        foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            string name = path.Length == 0 ? property.Name : path + "." + property.Name;
            Attribute[] attributes;
            try
            {
                attributes = property.GetCustomAttributes(inherit: false).OfType<Attribute>()
                    .Where(a => a is Microsoft.ML.SearchSpace.RangeAttribute or Microsoft.ML.SearchSpace.ChoiceAttribute
                        or Microsoft.ML.SearchSpace.BooleanChoiceAttribute or Microsoft.ML.SearchSpace.NestOptionAttribute)
                    .ToArray();
            }
            catch (Exception e) when (e is NullReferenceException or CustomAttributeFormatException)
            {
                throw new ArgumentException($"The search-space attribute on property '{name}' of {type.Name} cannot be read ({e.Message}); a [Choice] value may be null.", name, e);
            }

            if (attributes.Length == 0)
                continue;
            if (attributes.Length > 1)
                throw new ArgumentException($"Property '{name}' of {type.Name} has more than one of [Range], [Choice], [BooleanChoice], [NestOption]; give one.", name);
            if (!property.CanWrite)
                throw new ArgumentException($"Property '{name}' of {type.Name} is searched but has no public setter.", name);
            OptionBase option = attributes[0] switch
            {
                Microsoft.ML.SearchSpace.RangeAttribute { Min: int min, Max: int max } r =>
                    new UniformIntOption(min, max, r.LogBase, r.Init is int i ? i : null),
                Microsoft.ML.SearchSpace.RangeAttribute r =>
                    new UniformDoubleOption(Convert.ToDouble(r.Min, CultureInfo.InvariantCulture), Convert.ToDouble(r.Max, CultureInfo.InvariantCulture), r.LogBase,
                        r.Init is null ? null : Convert.ToDouble(r.Init, CultureInfo.InvariantCulture)),
                Microsoft.ML.SearchSpace.ChoiceAttribute c => new ChoiceOption(c.Candidates ?? [], c.DefaultValue),
                Microsoft.ML.SearchSpace.BooleanChoiceAttribute b => new ChoiceOption([true, false], b.DefaultValue),
                _ => Nested(property.PropertyType, name),
            };
            Add(property.Name, option);
        }
    }

    private static SearchSpace Nested(Type type, string path)
    {
        var nested = new SearchSpace();
        nested.AddFromAttributes(type, path);
        return nested;
    }
}

/// <summary>
/// The search space of an options class <typeparamref name="T"/>, read from ML.NET's search-space attributes
/// (namespace <c>Microsoft.ML.SearchSpace</c>, in Microsoft.ML.Core: <c>[Range(1e-4, 1e-2, init: 1e-3, logBase: true)]</c>,
/// <c>[Range(64, 512, 128)]</c>, <c>[Choice(2, 4)]</c>, <c>[BooleanChoice]</c>, <c>[NestOption]</c>), as AutoML's
/// <c>SearchSpace&lt;T&gt;</c> reads them: the same options class serves both. A trial's <see cref="Parameter"/> turns back into a <typeparamref name="T"/> with
/// <c>parameter.AsType&lt;T&gt;()</c>.
/// </summary>
/// <typeparam name="T">The options class (public parameterless constructor).</typeparam>
public sealed class SearchSpace<T> : SearchSpace
    where T : class, new()
{
    /// <summary>Reads the attributes of <typeparamref name="T"/>.</summary>
    /// <exception cref="ArgumentException"><typeparamref name="T"/> has no searchable property, or an attribute is invalid.</exception>
    public SearchSpace()
    {
        AddFromAttributes(typeof(T), "");
        if (FeatureSpaceDim == 0)
            throw new ArgumentException($"The search space of {typeof(T).Name} is empty: none of its public properties has [Range], [Choice], [BooleanChoice] or [NestOption].");
    }
}
