using System.Buffers;
using Lowbit.Formats;

namespace Lowbit.Engine;

/// <summary>
/// Many-token products for codecs whose format quantizes activations (<see cref="IQuantizedActivationCodec"/>,
/// W8A8): every activation row is quantized once through the codec's VecDotCodec (per-token dynamic
/// scale) and each weight row is dotted with every quantized token by the codec's integer/FP8 kernel,
/// so prefill, perplexity and KLD measure the W8A8 arithmetic rather than weight-only dequantization.
/// </summary>
internal sealed partial class WeightMatrix
{
    private bool QuantizesActivationRows => _useQuantizedActivations && Codec is IQuantizedActivationCodec;

    private void MatMulQuantizedActivations(float[] x, int xOffset, int n, float[] y, int yOffset, ParallelRunner par)
    {
        var vc = Codec.VecDotCodec!;
        int xqRow = checked((int)vc.RowBytes(Cols));
        byte[] xq = ArrayPool<byte>.Shared.Rent(checked(n * xqRow));
        try
        {
            par.For(n, (long)n * Cols < SerialWorkThreshold, t =>
                vc.QuantizeRows(x.AsSpan(xOffset + t * Cols, Cols), xq.AsSpan(t * xqRow, xqRow), Cols, default));
            int chunkRows = par.ChunkSize(Rows, (long)Rows * Cols * n, 4);
            int chunks = (Rows + chunkRows - 1) / chunkRows;
            int rb = checked((int)_rowBytes);
            par.For(chunks, (long)Rows * Cols * n < SerialWorkThreshold, c =>
            {
                var data = Data.Span;
                var q = xq.AsSpan(0, n * xqRow);
                int r0 = c * chunkRows, r1 = Math.Min(Rows, r0 + chunkRows);
                for (int r = r0; r < r1; r++)
                {
                    var row = data.Slice(r * rb, rb);
                    for (int t = 0; t < n; t++) y[yOffset + t * Rows + r] = Codec.DotRowQuantized(row, q.Slice(t * xqRow, xqRow));
                }
            });
        }
        finally { ArrayPool<byte>.Shared.Return(xq); }
    }
}
