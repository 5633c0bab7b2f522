namespace Microsoft.ML.Llm;

/// <summary>
/// The text of one completion as its tokens arrive: decoded whole each time (a byte-level token may end in the middle
/// of a UTF-8 sequence, so a trailing replacement character is held back) and cut at the first stop string.
/// </summary>
internal sealed class CompletionText(LmTokenizer tokenizer, IList<string> stops)
{
    private readonly List<int> _tokens = [];
    private string _decoded = "";
    private int _emitted;

    public bool Stopped { get; private set; }

    /// <summary>Adds a token; returns the new complete text (up to a stop string, after which <see cref="Stopped"/> is set).</summary>
    public string Add(int token)
    {
        _tokens.Add(token);
        _decoded = tokenizer.Decode(_tokens.ToArray());
        int safe = _decoded.Length;
        while (safe > _emitted && _decoded[safe - 1] == '\uFFFD')
        {
            safe--;
        }

        int stop = FindStop(_decoded, stops, _emitted);
        if (stop >= 0)
        {
            Stopped = true;
            string last = stop > _emitted ? _decoded[_emitted..stop] : "";
            _emitted = _decoded.Length;
            return last;
        }

        // Hold back an ending that may be the start of a stop string ("\nUs" of "\nUser:"): if the stop completes,
        // none of it may have been returned.
        safe -= PossibleStopStart(_decoded.AsSpan(_emitted, safe - _emitted));
        if (safe <= _emitted)
        {
            return "";
        }

        string piece = _decoded[_emitted..safe];
        _emitted = safe;
        return piece;
    }

    /// <summary>What is left at the end (an incomplete character decodes as the replacement character).</summary>
    public string Flush()
    {
        string rest = _decoded.Length > _emitted ? _decoded[_emitted..] : "";
        _emitted = _decoded.Length;
        return rest;
    }

    /// <summary>The length of the longest ending of <paramref name="text"/> that is a proper prefix of a stop string.</summary>
    private int PossibleStopStart(ReadOnlySpan<char> text)
    {
        int longest = 0;
        foreach (var s in stops)
        {
            if (string.IsNullOrEmpty(s))
            {
                continue;
            }

            for (int k = Math.Min(s.Length - 1, text.Length); k > longest; k--)
            {
                if (text[^k..].SequenceEqual(s.AsSpan(0, k)))
                {
                    longest = k;
                    break;
                }
            }
        }

        return longest;
    }

    /// <summary>Whether <paramref name="text"/> contains one of the stop strings.</summary>
    public static bool ContainsStop(string text, IList<string> stops) => FindStop(text, stops, 0) >= 0;

    private static int FindStop(string text, IList<string> stops, int from)
    {
        int best = -1;
        foreach (var s in stops)
        {
            if (string.IsNullOrEmpty(s))
            {
                continue;
            }

            int at = text.IndexOf(s, Math.Max(0, from - s.Length + 1), StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
            }
        }

        return best;
    }
}
