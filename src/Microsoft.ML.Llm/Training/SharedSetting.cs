namespace Microsoft.ML.Llm;

/// <summary>
/// A process-wide setting that overlapping users share: the first <see cref="Hold"/> applies it, the last handle
/// disposed restores it (<see cref="NativeHeap"/>'s glibc options, <see cref="DecodeThreads"/>' libtorch thread count).
/// </summary>
internal sealed class SharedSetting
{
    private readonly object _gate = new();
    private readonly Func<bool> _apply;
    private readonly Action _restore;
    private int _holders;

    /// <param name="apply">Applies the setting; false when there is nothing to apply (then <see cref="Hold"/> returns null).</param>
    /// <param name="restore">Puts back what <paramref name="apply"/> changed.</param>
    public SharedSetting(Func<bool> apply, Action restore)
    {
        _apply = apply;
        _restore = restore;
    }

    /// <summary>How many handles hold the setting now.</summary>
    public int Holders
    {
        get
        {
            lock (_gate)
                return _holders;
        }
    }

    /// <summary>Holds the setting until the returned handle is disposed (once; later disposals do nothing); null when
    /// it was not held and there was nothing to apply.</summary>
    public IDisposable? Hold()
    {
        lock (_gate)
        {
            if (_holders == 0 && !_apply())
                return null;
            _holders++;
        }

        return new Handle(this);
    }

    private void Release()
    {
        lock (_gate)
        {
            if (--_holders == 0)
                _restore();
        }
    }

    private sealed class Handle(SharedSetting owner) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
                owner.Release();
        }
    }
}
