using System.Buffers.Binary;

namespace Lowbit.Formats;

/// <summary>
/// NVFP4 with the per-tensor FP32 second-level scale of NVIDIA ModelOpt / compressed-tensors
/// ("nvfp4-ts"): global g = amax(tensor) / (448·6); each 16-value sub-block gets an OCP E4M3 scale
/// s = RNE(amax(sub-block) / 6 / g); each value the RNE E2M1 code of x / (s·g).
/// Value = E2M1(code) · E4M3(s) · g.
/// Layout: header = FP32 g (4 bytes, LE); payload = ggml block_nvfp4 blocks of 64 values (4 scale
/// bytes, 32 code bytes, sub-block byte j = value j low nibble | value j+8 high nibble), so rows
/// decode and dot with the same kernels as <see cref="NvFp4Codec"/> times g. Only the element
/// packing differs from ModelOpt's checkpoint tensors (which keep scales in a separate tensor).
/// </summary>
public sealed class NvFp4TensorScaledCodec : TensorLevelCodec
{
    public override string Name => "nvfp4-ts";
    public override int BlockSize => NvFp4Codec.QK;
    public override int BlockBytes => 36;

    public override long HeaderBytes(long rows, int cols) => 4;

    /// <summary>The per-tensor (decode) scale g of an encoded tensor.</summary>
    public static float GlobalScale(ReadOnlySpan<byte> tensor) => BinaryPrimitives.ReadSingleLittleEndian(tensor);

    public override void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance)
    {
        CheckShape(src.Length, cols);
        CheckEncoded(dst.Length, rows, cols);
        float amax = 0;
        foreach (float v in src) if (MathF.Abs(v) > amax) amax = MathF.Abs(v);
        if (!float.IsFinite(amax)) throw new LowbitException($"{Name}: cannot quantize a tensor holding non-finite values.");
        float g = amax / (448f * 6f);
        BinaryPrimitives.WriteSingleLittleEndian(dst, g);
        var payload = dst.Slice(4);
        int nb = src.Length / NvFp4Codec.QK;
        for (int b = 0; b < nb; b++)
        {
            var y = payload.Slice(b * 36, 36);
            for (int s = 0; s < 4; s++)
            {
                var x = src.Slice(b * NvFp4Codec.QK + s * 16, 16);
                float bmax = 0;
                foreach (float v in x) if (MathF.Abs(v) > bmax) bmax = MathF.Abs(v);
                byte sc = g > 0 ? Fp8.EncodeE4M3(bmax / 6f / g) : (byte)0;
                y[s] = sc;
                float d = Fp8.Decode(sc, Fp8Kind.E4M3) * g;
                for (int j = 0; j < 8; j++)
                {
                    byte lo = d > 0 ? E2M1.Encode(x[j] / d) : (byte)0;
                    byte hi = d > 0 ? E2M1.Encode(x[j + 8] / d) : (byte)0;
                    y[4 + s * 8 + j] = (byte)(lo | (hi << 4));
                }
            }
        }
    }

    public override void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst)
    {
        CheckEncoded(tensor.Length, rows, cols);
        long rb = RowBytes(cols);
        NvFp4Codec.DequantizeBlocks(tensor.Slice(checked((int)RowOffset(rows, cols, rowStart)), checked((int)(rowCount * rb))),
            dst.Slice(0, rowCount * cols), GlobalScale(tensor));
    }

    public override float DotTensorRow(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x)
        => GlobalScale(tensor) * NvFp4Codec.DotBlocks(tensor.Slice(checked((int)RowOffset(rows, cols, row)), checked((int)RowBytes(cols))), x);
}
