using System.Runtime.InteropServices;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Methods;

/// <summary>
/// The editable F32 copy of one transformer block's norms and linears that AWQ and SmoothQuant fold
/// per-channel scales into. Every fold is exact in real arithmetic: a channel scaled down at its
/// producer (RMSNorm weight, or the output row of the previous linear) is scaled up by the same
/// factor in the columns of every consumer.
/// </summary>
internal sealed class BlockWeights
{
    private readonly Dictionary<string, float[]> _values = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ModelTensor> _sources = new(StringComparer.Ordinal);
    private readonly HashSet<string> _changed = new(StringComparer.Ordinal);

    public BlockWeights(LoadedModel model, int layer)
    {
        Model = model;
        Layer = layer;
    }

    public LoadedModel Model { get; }
    public int Layer { get; }
    public ModelConfig Config => Model.Config;

    /// <summary>The (mutable) float values of a tensor, dequantized on first use.</summary>
    public float[] Values(string name)
    {
        if (!_values.TryGetValue(name, out var v))
        {
            var t = Model.Get(name);
            _sources[name] = t;
            v = t.ToFloat();
            _values[name] = v;
        }
        return v;
    }

    public LinearWeights Linear(string name)
    {
        var t = Model.Get(name);
        return new LinearWeights(name, Values(name), checked((int)t.Rows), checked((int)t.Cols));
    }

    public void MarkChanged(string name) => _changed.Add(name);

    /// <summary>Producer is an RMSNorm: norm /= s, consumers' columns *= s.</summary>
    public void FoldIntoNorm(string norm, IReadOnlyList<string> consumers, ReadOnlySpan<float> s)
    {
        var g = Values(norm);
        if (g.Length != s.Length) throw new LowbitException($"{norm}: {g.Length} channels, {s.Length} scales");
        for (int c = 0; c < g.Length; c++) g[c] /= s[c];
        MarkChanged(norm);
        foreach (var name in consumers) ScaleColumns(name, s);
    }

    /// <summary>
    /// Producer is a linear whose output rows feed the consumers' input channels through an
    /// elementwise (SwiGLU: silu(gate)·up) or per-channel linear (attention's weighted sum of V) map:
    /// producer row k /= sProducer[k] (and its bias), consumer column j *= sConsumer[j].
    /// </summary>
    public void FoldIntoRows(string producer, string? producerBias, ReadOnlySpan<float> sProducer,
        IReadOnlyList<string> consumers, ReadOnlySpan<float> sConsumer)
    {
        var w = Values(producer);
        var t = Model.Get(producer);
        int rows = checked((int)t.Rows), cols = checked((int)t.Cols);
        if (rows != sProducer.Length) throw new LowbitException($"{producer}: {rows} rows, {sProducer.Length} scales");
        for (int r = 0; r < rows; r++)
        {
            float inv = 1f / sProducer[r];
            var row = w.AsSpan(r * cols, cols);
            for (int c = 0; c < cols; c++) row[c] *= inv;
        }
        MarkChanged(producer);
        if (producerBias is not null && Model.TryGet(producerBias) is not null)
        {
            var b = Values(producerBias);
            for (int r = 0; r < rows; r++) b[r] /= sProducer[r];
            MarkChanged(producerBias);
        }
        foreach (var name in consumers) ScaleColumns(name, sConsumer);
    }

    public void ScaleColumns(string name, ReadOnlySpan<float> s)
    {
        var w = Values(name);
        int cols = checked((int)Model.Get(name).Cols);
        if (cols != s.Length) throw new LowbitException($"{name}: {cols} columns, {s.Length} scales");
        for (int r = 0; r < w.Length / cols; r++)
        {
            var row = w.AsSpan(r * cols, cols);
            for (int c = 0; c < cols; c++) row[c] *= s[c];
        }
        MarkChanged(name);
    }

    public void Replace(string name, float[] values)
    {
        var v = Values(name);
        if (v.Length != values.Length) throw new ArgumentException($"{name}: {values.Length} values, {v.Length} expected");
        values.CopyTo(v, 0);
        MarkChanged(name);
    }

    /// <summary>F32 tensors of everything changed in this block.</summary>
    public IEnumerable<ModelTensor> ChangedTensors()
    {
        var f32 = CodecRegistry.Get("f32");
        foreach (var name in _changed)
        {
            var src = _sources[name];
            yield return new ModelTensor(name, src.Shape, f32, MemoryMarshal.AsBytes(_values[name].AsSpan()).ToArray());
        }
    }

    /// <summary>x[t, c] /= s[c]: the activations the consumers now see.</summary>
    public static void DivideColumns(float[] x, int width, ReadOnlySpan<float> s)
    {
        for (int t = 0; t < x.Length / width; t++)
        {
            var row = x.AsSpan(t * width, width);
            for (int c = 0; c < width; c++) row[c] /= s[c];
        }
    }

    /// <summary>
    /// Under grouped-query attention, attention-output channel j (q head j / headDim) reads value
    /// channel (head / nRep)·headDim + j % headDim: returns that map (identity without GQA).
    /// </summary>
    public static int[] AttentionOutputToValueChannel(ModelConfig c)
    {
        int nRep = c.NumHeads / c.NumKvHeads;
        var map = new int[c.QDim];
        for (int j = 0; j < map.Length; j++) map[j] = j / c.HeadDim / nRep * c.HeadDim + j % c.HeadDim;
        return map;
    }

    /// <summary>Names of the seven linears of block <paramref name="layer"/>.</summary>
    public static string[] LinearNames(int layer) =>
    [
        TensorNames.AttnQ(layer), TensorNames.AttnK(layer), TensorNames.AttnV(layer), TensorNames.AttnOutput(layer),
        TensorNames.FfnGate(layer), TensorNames.FfnUp(layer), TensorNames.FfnDown(layer),
    ];
}
