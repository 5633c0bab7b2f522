namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>Counts of one pass over a filter's output: rows in, rows out, rows rejected per rule.</summary>
public sealed class FilterReport
{
    internal FilterReport(long rowsIn, long rowsOut, IReadOnlyDictionary<string, long> rejectedByRule)
    {
        RowsIn = rowsIn;
        RowsOut = rowsOut;
        RejectedByRule = rejectedByRule;
    }

    /// <summary>Rows read from the input.</summary>
    public long RowsIn { get; }

    /// <summary>Rows that passed every enabled rule.</summary>
    public long RowsOut { get; }

    /// <summary>Number of rows rejected by each rule (the first failing rule of each row).</summary>
    public IReadOnlyDictionary<string, long> RejectedByRule { get; }

    /// <inheritdoc/>
    public override string ToString() =>
        $"rows in {RowsIn}, rows out {RowsOut}" + string.Concat(RejectedByRule.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $", {kv.Key} {kv.Value}"));
}

/// <summary>Gathers the counts of the cursors of one pass and publishes a report when all of them reach the end.</summary>
internal sealed class PassCounter
{
    private readonly Action<FilterReport> _publish;
    private readonly object _gate = new();
    private readonly Dictionary<string, long> _rejected = new(StringComparer.Ordinal);
    private int _pending;
    private long _in, _out;

    public PassCounter(int cursors, Action<FilterReport> publish)
    {
        _pending = cursors;
        _publish = publish;
    }

    public void Complete(long rowsIn, long rowsOut, Dictionary<string, long> rejected)
    {
        FilterReport? report = null;
        lock (_gate)
        {
            _in += rowsIn;
            _out += rowsOut;
            foreach (var kv in rejected)
                _rejected[kv.Key] = _rejected.GetValueOrDefault(kv.Key) + kv.Value;
            if (--_pending == 0)
                report = new FilterReport(_in, _out, new Dictionary<string, long>(_rejected, StringComparer.Ordinal));
        }
        if (report != null)
            _publish(report);
    }
}
