// Character n-grams of the language-ID model. Shared, as source, by the library and by
// tools/LanguageModelBuilder, so the model is built and applied with the same features.

namespace Microsoft.ML.Llm.Data.Curation;

/// <summary>Lowercased letter 1- to 3-grams of a text, words padded with one space on each side.</summary>
internal static class NGrams
{
    public const int MaxN = 3;

    /// <summary>Writes the feature text (letters lowercased, every other run of characters one space) into <paramref name="sb"/>.</summary>
    public static void Features(ReadOnlySpan<char> text, StringBuilder sb)
    {
        sb.Clear();
        sb.Append(' ');
        foreach (char c in text)
        {
            if (char.IsLetter(c) || char.GetUnicodeCategory(c) is System.Globalization.UnicodeCategory.NonSpacingMark or System.Globalization.UnicodeCategory.SpacingCombiningMark)
                sb.Append(char.ToLowerInvariant(c));
            else if (sb[^1] != ' ')
                sb.Append(' ');
        }
        if (sb[^1] != ' ')
            sb.Append(' ');
    }

    /// <summary>Calls the visitors with every n-gram (n = 1..3) that is not only spaces.</summary>
    public static void Visit(ReadOnlySpan<char> features, Action<string>? visitString, SpanVisitor? visitSpan)
    {
        for (int i = 0; i < features.Length; i++)
        {
            for (int n = 1; n <= MaxN && i + n <= features.Length; n++)
            {
                var g = features.Slice(i, n);
                if (n == 1 && g[0] == ' ')
                    continue;
                if (n == 2 && g[0] == ' ' && g[1] == ' ')
                    continue;
                if (visitString != null)
                    visitString(g.ToString());
                visitSpan?.Invoke(g);
            }
        }
    }

    public delegate void SpanVisitor(ReadOnlySpan<char> gram);

    /// <summary>All n-grams of <paramref name="text"/> as strings (used by the model builder).</summary>
    public static List<string> Of(string text)
    {
        var sb = new StringBuilder();
        Features(text, sb);
        var list = new List<string>();
        Visit(sb.ToString(), list.Add, null);
        return list;
    }
}
