using System.Runtime.CompilerServices;

namespace Lowbit.Formats;

/// <summary>
/// The quantization grid of one group of a k-quant super-block: the values sharing one
/// (scale, min) pair. Code u ∈ [0, <see cref="MaxCode"/>] stands for
/// <c>Scale·(u − CodeOffset) − Min</c>; symmetric types (Q3_K, Q6_K) have Min = 0 and a code
/// offset, asymmetric ones (Q2_K, Q4_K, Q5_K) have CodeOffset = 0.
/// </summary>
internal readonly record struct KQuantGroupGrid(float Scale, float Min, int CodeOffset, int MaxCode)
{
    /// <summary>
    /// The code ggml's requantization step picks for <paramref name="x"/>:
    /// clamp(nearest_int((x + Min)/Scale) + CodeOffset). When Scale is 0 every code decodes to
    /// −Min and ggml keeps the code found by the scale search; this returns CodeOffset then.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Quantize(float x)
    {
        if (Scale == 0) return CodeOffset;
        int l = KQuantMath.NearestInt((x + Min) / Scale) + CodeOffset;
        return Math.Clamp(l, 0, MaxCode);
    }

    /// <summary>The value code <paramref name="code"/> decodes to (same float expression as the dequantizer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Dequantize(int code) => Scale * (code - CodeOffset) - Min;
}

/// <summary>
/// Common frame of the ggml k-quant weight codecs (Q2_K … Q6_K): super-blocks of 256 values
/// split into groups of 16 or 32 values with their own quantized scale (and min).
/// <para>
/// Besides the row codec API this exposes the building blocks that importance-aware methods
/// (imatrix, GPTQ on the k-quant grid) need, all bit-compatible with ggml:
/// <list type="bullet">
/// <item><see cref="QuantizeBlock"/> — ggml's full quantizer for one super-block (reference
/// quantizer when the importance span is empty, else quantize_row_*_impl with imatrix weights);
/// it fixes the super-block's scales/mins and the codes.</item>
/// <item><see cref="GetGroupGrid"/> — the decoded per-group grid of an encoded block, and
/// <see cref="KQuantGroupGrid.Quantize"/> — the code ggml's final requantization gives one value
/// under fixed scales.</item>
/// <item><see cref="GetCode"/>/<see cref="SetCode"/> — read or overwrite one value's code.</item>
/// </list>
/// A GPTQ-style method calls QuantizeBlock on the original weights to choose the scales, then walks
/// the columns: code = GetGroupGrid(block, i / GroupSize).Quantize(updated w[i]); SetCode(block, i, code);
/// error = w[i] − grid.Dequantize(code).
/// </para>
/// <para>
/// Dot products: every codec overrides DotRow (float activations) and DotRowQuantized (Q8_K
/// activations, ggml's integer scheme) with fused AVX2(+FMA) kernels; the generic kernels in
/// <see cref="KQuantDot"/> are their scalar references and portable fallbacks. The Q8_K kernels are
/// bit-identical to the scalar reference.
/// </para>
/// </summary>
public abstract class KQuantCodec : TensorCodec
{
    public sealed override int BlockSize => KQuantMath.SuperBlock;

    public override bool UsesImportance => true;

    /// <summary>Q8_K, as in ggml (the registry's instance).</summary>
    public override TensorCodec? VecDotCodec => CodecRegistry.Get(GgmlType.Q8_K);

    /// <summary>Values per group sharing one (scale, min): 16 or 32.</summary>
    internal abstract int GroupSize { get; }

    /// <summary>Largest code; codes run 0..MaxCode.</summary>
    internal abstract int MaxCode { get; }

    /// <summary>
    /// Quantizes one super-block of 256 values into <see cref="TensorCodec.BlockBytes"/> bytes exactly as ggml
    /// does. <paramref name="importance"/> is empty (ggml's reference quantizer) or holds 256 weights
    /// (the imatrix quantizer quantize_row_*_impl).
    /// </summary>
    internal abstract void QuantizeBlock(ReadOnlySpan<float> x, ReadOnlySpan<float> importance, Span<byte> block);

    /// <summary>Dequantizes one super-block (ggml's dequantize_row_* for 256 values).</summary>
    internal abstract void DequantizeBlock(ReadOnlySpan<byte> block, Span<float> y);

    /// <summary>The grid of group <paramref name="group"/> (0 ≤ group &lt; 256/GroupSize) of an encoded block.</summary>
    internal abstract KQuantGroupGrid GetGroupGrid(ReadOnlySpan<byte> block, int group);

    /// <summary>The code (0..MaxCode) stored for value <paramref name="index"/> of the block.</summary>
    internal abstract int GetCode(ReadOnlySpan<byte> block, int index);

    /// <summary>Overwrites the code of value <paramref name="index"/>; other values are untouched.</summary>
    internal abstract void SetCode(Span<byte> block, int index, int code);

    /// <summary>
    /// Integer form of the block for the dot kernels: the 256 unsigned codes, and for each of the 16 groups of 16
    /// values an integer scale and min such that value = d·scale·u − dmin·min (with the block's float d, dmin).
    /// </summary>
    internal abstract void UnpackForDot(ReadOnlySpan<byte> block, Span<byte> codes, Span<short> scales, Span<short> mins, out float d, out float dmin);

    /// <summary>
    /// The final step shared by all k-quant quantizers: with the stored (fp16-rounded) scales fixed,
    /// every value of a group with a nonzero scale is re-coded on that group's grid; groups whose
    /// scale is zero keep the codes of the scale search (as ggml does).
    /// </summary>
    internal void Requantize(ReadOnlySpan<float> x, ReadOnlySpan<byte> block, Span<byte> codes)
    {
        int groups = KQuantMath.SuperBlock / GroupSize;
        for (int g = 0; g < groups; g++)
        {
            var grid = GetGroupGrid(block, g);
            if (grid.Scale == 0) continue;
            for (int i = g * GroupSize; i < (g + 1) * GroupSize; i++) codes[i] = (byte)grid.Quantize(x[i]);
        }
    }

    /// <summary>Portable code unpacking (one <see cref="GetCode"/> per value) for machines without Vector256.</summary>
    internal void UnpackCodesScalar(ReadOnlySpan<byte> block, Span<byte> codes)
    {
        for (int i = 0; i < KQuantMath.SuperBlock; i++) codes[i] = (byte)GetCode(block, i);
    }

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        long rowBytes = RowBytes(cols);
        if (!importance.IsEmpty && importance.Length != cols)
            throw new LowbitException($"{Name}: importance vector has {importance.Length} entries, expected one per column ({cols}).");
        if (src.Length % cols != 0)
            throw new ArgumentException($"{Name}: source length {src.Length} is not a multiple of the row length {cols}.");
        int rows = src.Length / cols;
        if (dst.Length < rows * rowBytes)
            throw new ArgumentException($"{Name}: destination holds {dst.Length} bytes, {rows * rowBytes} needed.");
        int blocksPerRow = cols / KQuantMath.SuperBlock;
        for (int r = 0; r < rows; r++)
        {
            for (int b = 0; b < blocksPerRow; b++)
            {
                int col = b * KQuantMath.SuperBlock;
                QuantizeBlock(
                    src.Slice(r * cols + col, KQuantMath.SuperBlock),
                    importance.IsEmpty ? default : importance.Slice(col, KQuantMath.SuperBlock),
                    dst.Slice((int)(r * rowBytes) + b * BlockBytes, BlockBytes));
            }
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        int blocks = src.Length / BlockBytes;
        for (int b = 0; b < blocks; b++)
            DequantizeBlock(src.Slice(b * BlockBytes, BlockBytes), dst.Slice(b * KQuantMath.SuperBlock, KQuantMath.SuperBlock));
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x) => KQuantDot.DotFloat(this, row, x);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq) => KQuantDot.DotQ8K(this, row, xq);
}
