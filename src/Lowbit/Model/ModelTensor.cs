using Lowbit.Formats;

namespace Lowbit.Model;

/// <summary>
/// One tensor of a loaded model under its canonical (GGUF) name, e.g. "blk.3.attn_q.weight".
/// <see cref="Rows"/> × <see cref="Cols"/> is the row-major matrix view (HF [out, in]; a 1-D tensor
/// has Rows = 1). Data is usually a view into a memory-mapped file: reading it costs no copy.
/// </summary>
public sealed class ModelTensor
{
    public required string Name { get; init; }
    /// <summary>Shape in row-major order, outermost first (HF/PyTorch order; GGUF stores it reversed).</summary>
    public required long[] Shape { get; init; }
    public required TensorCodec Codec { get; init; }
    public required ReadOnlyMemory<byte> Data { get; init; }

    public long Cols => Shape[^1];
    public long Rows => Shape.Length == 0 ? 1 : ElementCount / Cols;
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
