namespace Microsoft.ML.Llm.Data.Internal;

/// <summary>Union-find whose root is the smallest member (so "keep the first row" is "keep the roots").</summary>
internal sealed class UnionFind
{
    private readonly int[] _parent;

    public UnionFind(int n)
    {
        _parent = new int[n];
        for (int i = 0; i < n; i++)
            _parent[i] = i;
    }

    public int Find(int x)
    {
        int root = x;
        while (_parent[root] != root)
            root = _parent[root];
        while (_parent[x] != root)
            (x, _parent[x]) = (_parent[x], root);
        return root;
    }

    public void Union(int x, int y)
    {
        int rx = Find(x), ry = Find(y);
        if (rx == ry)
            return;
        if (rx < ry)
            _parent[ry] = rx;
        else
            _parent[rx] = ry;
    }
}
