using Lowbit.Formats;

namespace Lowbit.Model;

/// <summary>
/// One tensor of a loaded model under its canonical (GGUF) name, e.g. "blk.3.attn_q.weight".
/// <see cref="Rows"/> × <see cref="Cols"/> is the row-major matrix view (HF [out, in]; a 1-D tensor
/// has Rows = 1). Data is either a view into a memory-mapped file (free to read, no copy) or, for
/// tensors that need a transformation on load (the q/k RoPE row permutation), materialized by a
/// factory on every access of <see cref="Data"/>: callers hold the result instead of re-reading it,
/// so that streaming over a large model never keeps more than the tensor in hand.
/// </summary>
public sealed class ModelTensor
{
    private readonly ReadOnlyMemory<byte> _data;
    private readonly Func<ReadOnlyMemory<byte>>? _materialize;

    public ModelTensor(string name, long[] shape, TensorCodec codec, ReadOnlyMemory<byte> data)
    {
        Name = name;
        Shape = shape;
        Codec = codec;
        _data = data;
        long expected = codec.TensorBytes(Rows, Cols);
        if (data.Length != expected)
            throw new ArgumentException($"tensor '{name}': {data.Length} bytes given, {expected} expected for {codec.Name} [{string.Join(", ", shape)}]");
    }

    public ModelTensor(string name, long[] shape, TensorCodec codec, Func<ReadOnlyMemory<byte>> materialize)
    {
        Name = name;
        Shape = shape;
        Codec = codec;
        _materialize = materialize;
    }

    public string Name { get; }
    /// <summary>Shape in row-major order, outermost first (HF/PyTorch order; GGUF stores it reversed).</summary>
    public long[] Shape { get; }
    public TensorCodec Codec { get; }

    /// <summary>The encoded bytes (see the class remarks on materialized tensors).</summary>
    public ReadOnlyMemory<byte> Data => _materialize is null ? _data : _materialize();

    /// <summary>Encoded size in bytes, known without materializing.</summary>
    public long ByteCount => Codec.TensorBytes(Rows, Cols);

    public long Cols => Shape.Length == 0 ? 1 : Shape[^1];
    public long Rows => Cols == 0 ? 0 : ElementCount / Cols;
    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (var d in Shape) n *= d;
            return n;
        }
    }

    /// <summary>Dequantizes the whole tensor (tests, small tensors, conversions that stream one tensor).</summary>
    public float[] ToFloat()
    {
        var dst = new float[ElementCount];
        Codec.DequantizeTensorRows(Data.Span, Rows, checked((int)Cols), 0, checked((int)Rows), dst);
        return dst;
    }
}
