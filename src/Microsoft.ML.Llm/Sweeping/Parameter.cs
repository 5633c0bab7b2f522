using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Microsoft.ML.Llm.Sweeping;

/// <summary>
/// One point of a <see cref="SearchSpace"/>: a value (number, string, Boolean) or named values, nested as the search
/// space is. The shape of ML.NET AutoML's <c>Microsoft.ML.SearchSpace.Parameter</c>: read a value with
/// <c>parameter["LearningRate"].AsType&lt;double&gt;()</c>, or the whole point as an options class with
/// <see cref="AsType{T}"/> (properties matched by name, nested classes for nested spaces).
/// </summary>
/// <remarks>Its canonical form is JSON (<see cref="ToString"/>, <see cref="FromJson"/>): the sweep directory records
/// each trial's parameter in it, and two parameters are equal when their JSON is.</remarks>
public sealed class Parameter : IEquatable<Parameter>
{
    private readonly object? _value;                                 // double, long, string or bool; null for a nested parameter
    private readonly List<KeyValuePair<string, Parameter>>? _items;  // in the order of the search space

    private Parameter(object value) => _value = value;

    private Parameter(List<KeyValuePair<string, Parameter>> items) => _items = items;

    /// <summary>A floating-point value.</summary>
    public static Parameter FromDouble(double value) => new(value);

    /// <summary>An integer value.</summary>
    public static Parameter FromInt(long value) => new(value);

    /// <summary>A string value (also how enum values are held: by name).</summary>
    public static Parameter FromString(string value) => new(value ?? throw new ArgumentNullException(nameof(value)));

    /// <summary>A Boolean value.</summary>
    public static Parameter FromBool(bool value) => new(value);

    /// <summary>Named values, in the given order.</summary>
    public static Parameter CreateNestedParameter(params (string Name, Parameter Value)[] items)
    {
        ArgumentNullException.ThrowIfNull(items);
        var list = new List<KeyValuePair<string, Parameter>>();
        foreach (var (name, value) in items)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            ArgumentNullException.ThrowIfNull(value);
            if (list.Any(kv => kv.Key == name))
                throw new ArgumentException($"Parameter name '{name}' appears twice.", nameof(items));
            list.Add(new(name, value));
        }

        return new Parameter(list);
    }

    /// <summary>A value of a supported type (number, string, Boolean, enum) as a parameter.</summary>
    internal static Parameter FromObject(object value, string name) => value switch
    {
        Parameter p => p,
        bool b => FromBool(b),
        string s => FromString(s),
        Enum e => FromString(e.ToString()),
        double d => FromDouble(d),
        float f => FromDouble(f),
        decimal m => FromDouble((double)m),
        sbyte or byte or short or ushort or int or uint or long => FromInt(Convert.ToInt64(value, CultureInfo.InvariantCulture)),
        _ => throw new ArgumentException(
            $"Parameter '{name}' has a value of type {value.GetType().Name} ({value}); expected a number, a string, a Boolean or an enum value.", nameof(value)),
    };

    /// <summary>True when this parameter holds named values rather than one value.</summary>
    public bool IsNested => _items is not null;

    /// <summary>The names of a nested parameter's values, in order (empty for a single value).</summary>
    public IEnumerable<string> Keys => _items?.Select(kv => kv.Key) ?? [];

    /// <summary>The value named <paramref name="key"/> of a nested parameter.</summary>
    /// <exception cref="KeyNotFoundException">No value has that name.</exception>
    public Parameter this[string key]
    {
        get
        {
            if (_items is null)
                throw new InvalidOperationException($"The parameter {this} is a single value; it has no value named '{key}'.");
            foreach (var kv in _items)
            {
                if (kv.Key == key)
                    return kv.Value;
            }

            throw new KeyNotFoundException($"The parameter has no value named '{key}'; it has {string.Join(", ", Keys.Select(k => $"'{k}'"))}.");
        }
    }

    /// <summary>
    /// The value as <typeparamref name="T"/>: a number type, string, bool or enum for a single value; for a nested
    /// parameter a new <typeparamref name="T"/> whose public settable properties named as the values are set
    /// (recursively; properties not in the parameter keep their defaults).
    /// </summary>
    public T AsType<T>() => (T)AsType(typeof(T), "parameter")!;

    /// <summary>Leaves of a nested parameter as dotted paths ("Trainer.LearningRate") and their values, in order.</summary>
    public IEnumerable<KeyValuePair<string, string>> Flatten()
    {
        if (_items is null)
        {
            yield return new("", FormatValue());
            yield break;
        }

        foreach (var (key, value) in _items)
        {
            foreach (var (path, text) in value.Flatten())
                yield return new(path.Length == 0 ? key : key + "." + path, text);
        }
    }

    /// <summary>The canonical JSON form.</summary>
    public override string ToString() => ToJsonNode()!.ToJsonString();

    /// <summary>Reads a parameter from its JSON form (<see cref="ToString"/>).</summary>
    public static Parameter FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        var node = JsonNode.Parse(json) ?? throw new FormatException($"'{json}' is not a parameter: JSON null.");
        return FromJsonNode(node);
    }

    /// <inheritdoc/>
    public bool Equals(Parameter? other) => other is not null && ToString() == other.ToString();

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as Parameter);

    /// <inheritdoc/>
    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(ToString());

    internal JsonNode? ToJsonNode()
    {
        if (_items is not null)
        {
            var o = new JsonObject();
            foreach (var (key, value) in _items)
                o[key] = value.ToJsonNode();
            return o;
        }

        return _value switch
        {
            double d => JsonValue.Create(d),
            long l => JsonValue.Create(l),
            string s => JsonValue.Create(s),
            bool b => JsonValue.Create(b),
            _ => null,
        };
    }

    internal static Parameter FromJsonNode(JsonNode node)
    {
        if (node is JsonObject o)
            return new Parameter(o.Select(kv => new KeyValuePair<string, Parameter>(kv.Key, FromJsonNode(kv.Value ?? throw new FormatException($"Parameter '{kv.Key}' is JSON null.")))).ToList());
        var v = node.AsValue();
        return v.GetValueKind() switch
        {
            JsonValueKind.String => FromString(v.GetValue<string>()),
            JsonValueKind.True => FromBool(true),
            JsonValueKind.False => FromBool(false),
            JsonValueKind.Number when v.TryGetValue(out long l) => FromInt(l),
            JsonValueKind.Number => FromDouble(v.GetValue<double>()),
            _ => throw new FormatException($"'{node.ToJsonString()}' is not a parameter value (expected a number, string, Boolean or object)."),
        };
    }

    internal double AsDouble(string name) => _value switch
    {
        double d => d,
        long l => l,
        _ => throw new InvalidCastException($"Parameter '{name}' is {this}, not a number."),
    };

    private string FormatValue() => _value switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        long l => l.ToString(CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        _ => _value?.ToString() ?? "",
    };

    private object? AsType(Type type, string name)
    {
        var underlying = Nullable.GetUnderlyingType(type) ?? type;
        if (_items is not null)
        {
            if (underlying == typeof(Parameter))
                return this;
            if (underlying.IsPrimitive || underlying == typeof(string) || underlying.IsEnum || underlying.GetConstructor(Type.EmptyTypes) is null)
                throw new InvalidCastException($"Parameter '{name}' holds named values ({string.Join(", ", Keys)}); it cannot become a {type.Name}, which needs a public parameterless constructor.");
            object target = Activator.CreateInstance(underlying)!;
            foreach (var (key, value) in _items)
            {
                var property = underlying.GetProperty(key, BindingFlags.Public | BindingFlags.Instance);
                if (property is null || !property.CanWrite)
                    continue;
                property.SetValue(target, value.AsType(property.PropertyType, key));
            }

            return target;
        }

        if (underlying == typeof(Parameter))
            return this;
        try
        {
            if (underlying.IsEnum)
            {
                return _value switch
                {
                    string s => Enum.Parse(underlying, s),
                    long l => Enum.ToObject(underlying, l),
                    _ => throw new InvalidCastException(),
                };
            }

            if (underlying == typeof(string))
                return FormatValue();
            if (underlying == typeof(bool))
                return _value is bool b ? b : throw new InvalidCastException();
            if (_value is string or bool)
                throw new InvalidCastException();
            if (underlying == typeof(double))
                return AsDouble(name);
            if (underlying == typeof(float))
                return (float)AsDouble(name);
            if (underlying == typeof(decimal))
                return (decimal)AsDouble(name);
            double d = AsDouble(name);
            if (d != Math.Round(d))
                throw new InvalidCastException();
            return Convert.ChangeType((long)d, underlying, CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is InvalidCastException or ArgumentException or OverflowException or FormatException)
        {
            throw new InvalidCastException($"Parameter '{name}' is {this}, which cannot be read as {type.Name}.", e);
        }
    }
}
