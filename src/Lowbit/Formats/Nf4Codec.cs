using System.Buffers.Binary;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// NF4 (QLoRA / bitsandbytes 4-bit NormalFloat) with blocks of 64 along the flattened tensor
/// (rows × cols, cols a multiple of 64, so blocks never straddle rows). Each value is divided by
/// its block's absmax (multiplied by the float reciprocal, as bitsandbytes' kernel does) and mapped
/// to the nearest of the 16 NF4 levels through bitsandbytes' threshold tree; two codes per byte,
/// the FIRST value in the HIGH nibble (bitsandbytes' packing).
/// <para>"nf4-nodq": header = one FP32 absmax per 64-block (block k = row·cols/64 + column/64).</para>
/// <para>"nf4" (double quantization, bnb_4bit_use_double_quant): the absmax values minus their mean
/// (the "offset") are quantized to 8 bits blockwise in blocks of 256 with bitsandbytes' signed
/// dynamic map (<see cref="DynamicMap"/>), each 256-block keeping an FP32 absmax. Header =
/// FP32 offset, ⌈nb/256⌉ × FP32 second-level absmax, nb × u8 quantized absmax. A block's absmax
/// decodes as DynamicMap[q]·absmax2[k/256] + offset. NF4 codes are chosen against the exact absmax
/// and decoded with the double-quantized one, as bitsandbytes does.</para>
/// Payload (both): rows × cols/2 bytes. The mean is taken in double precision (torch's float
/// reduction order is not reproduced); everything else follows bitsandbytes' arithmetic.
/// </summary>
public sealed class Nf4Codec(bool doubleQuant) : TensorLevelCodec
{
    public const int QK = 64;
    public const int DqBlock = 256;

    public bool DoubleQuant { get; } = doubleQuant;
    public override string Name => DoubleQuant ? "nf4" : "nf4-nodq";
    public override int BlockSize => QK;
    public override int BlockBytes => QK / 2;

    /// <summary>
    /// Codes plus the per-block statistics kept in the header (they grow with the weight count):
    /// 4 + 32/64 = 4.5 without double quantization; 4 + 8/64 + 32/(64·256) ≈ 4.127 with it.
    /// The FP32 offset is per tensor and excluded; <see cref="TensorLevelCodec.EffectiveBitsPerWeight"/> is exact.
    /// </summary>
    public override double BitsPerWeight => DoubleQuant ? 4 + 8.0 / QK + 32.0 / (QK * DqBlock) : 4 + 32.0 / QK;

    /// <summary>bitsandbytes' NF4 levels (nf4_dequantization_lut), index = code.</summary>
    public static ReadOnlySpan<float> Levels =>
    [
        -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
        -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
        0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
        0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
    ];

    /// <summary>bitsandbytes' dQuantizeNF4 decision thresholds (midpoints between levels), ascending.</summary>
    private static ReadOnlySpan<float> Thresholds =>
    [
        -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
        -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
        0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
        0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
    ];

    private static readonly float[] DynamicMapTable = BuildDynamicMap();

    /// <summary>
    /// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
    /// i = 0..6, the means of adjacent points of linspace(0.1, 1, 2^i + 1) times ±10^(i−6), plus 0
    /// and 1, sorted (256 entries). Computed in float as torch does (linspace from both ends).
    /// </summary>
    public static ReadOnlySpan<float> DynamicMap => DynamicMapTable;

    private static float[] BuildDynamicMap()
    {
        var data = new List<float>(256);
        for (int i = 0; i < 7; i++)
        {
            int n = (1 << i) + 1;
            var b = TorchLinspace(0.1f, 1f, n);
            float factor = (float)Math.Pow(10, i - 6);
            for (int k = 0; k + 1 < n; k++)
            {
                float mean = (b[k] + b[k + 1]) / 2f;
                data.Add(factor * mean);
                data.Add(-factor * mean);
            }
        }
        data.Add(0f);
        data.Add(1f);
        data.Sort();
        return data.ToArray();
    }

    /// <summary>torch.linspace in float32: the first half counts up from start, the rest down from end.</summary>
    private static float[] TorchLinspace(float start, float end, int steps)
    {
        var r = new float[steps];
        if (steps == 1) { r[0] = start; return r; }
        float step = (end - start) / (steps - 1);
        int halfway = steps / 2;
        for (int i = 0; i < steps; i++)
            r[i] = i < halfway ? start + step * i : end - step * (steps - i - 1);
        return r;
    }

    /// <summary>bitsandbytes' dQuantizeNF4: the number of thresholds x exceeds (NaN → 0).</summary>
    public static byte QuantizeNf4(float x)
    {
        byte c = 0;
        foreach (float t in Thresholds) if (x > t) c++;
        return c;
    }

    /// <summary>
    /// bitsandbytes' dQuantize&lt;0&gt; over the sorted 256-entry dynamic map: a 7-step binary search
    /// from index 127, then the final pivot or the bracketing neighbour, split at float midpoints.
    /// </summary>
    public static byte QuantizeDynamic(float x)
    {
        var code = DynamicMap;
        int pivot = 127, upperPivot = 255, lowerPivot = 0;
        float lower = -1f, upper = 1f;
        float val = code[pivot];
        for (int i = 64; i > 0; i >>= 1)
        {
            if (x > val) { lowerPivot = pivot; lower = val; pivot += i; }
            else { upperPivot = pivot; upper = val; pivot -= i; }
            val = code[pivot];
        }
        if (upperPivot == 255) upper = code[upperPivot];
        if (lowerPivot == 0) lower = code[lowerPivot];
        if (x > val) return x > (upper + val) * 0.5f ? (byte)upperPivot : (byte)pivot;
        return x < (lower + val) * 0.5f ? (byte)lowerPivot : (byte)pivot;
    }

    private static long Blocks(long rows, int cols) => rows * (cols / QK);

    public override long HeaderBytes(long rows, int cols)
    {
        long nb = Blocks(rows, cols);
        return DoubleQuant ? 4 + 4 * ((nb + DqBlock - 1) / DqBlock) + nb : 4 * nb;
    }

    public override void QuantizeTensor(ReadOnlySpan<float> src, Span<byte> dst, long rows, int cols, ReadOnlySpan<float> importance)
    {
        CheckShape(src.Length, cols);
        CheckEncoded(dst.Length, rows, cols);
        int nb = checked((int)Blocks(rows, cols));
        var absmax = new float[nb];
        var payload = dst.Slice(checked((int)HeaderBytes(rows, cols)));
        for (int k = 0; k < nb; k++)
        {
            var x = src.Slice(k * QK, QK);
            float amax = 0;
            foreach (float v in x) if (MathF.Abs(v) > amax) amax = MathF.Abs(v); // fmaxf: NaN never wins
            absmax[k] = amax;
            float inv = 1f / amax; // bitsandbytes multiplies by the reciprocal (inf for a zero block → code 0)
            for (int j = 0; j < QK / 2; j++)
                payload[k * (QK / 2) + j] = (byte)((QuantizeNf4(x[2 * j] * inv) << 4) | QuantizeNf4(x[2 * j + 1] * inv));
        }
        if (!DoubleQuant)
        {
            for (int k = 0; k < nb; k++) BinaryPrimitives.WriteSingleLittleEndian(dst.Slice(4 * k), absmax[k]);
            return;
        }
        double mean = 0;
        foreach (float a in absmax) mean += a;
        float offset = (float)(mean / nb);
        BinaryPrimitives.WriteSingleLittleEndian(dst, offset);
        int nb2 = (nb + DqBlock - 1) / DqBlock;
        var qabs = dst.Slice(4 + 4 * nb2, nb);
        for (int b2 = 0; b2 < nb2; b2++)
        {
            int start = b2 * DqBlock, len = Math.Min(DqBlock, nb - start);
            float amax2 = 0;
            for (int k = start; k < start + len; k++) if (MathF.Abs(absmax[k] - offset) > amax2) amax2 = MathF.Abs(absmax[k] - offset);
            BinaryPrimitives.WriteSingleLittleEndian(dst.Slice(4 + 4 * b2), amax2);
            float inv = 1f / amax2;
            for (int k = start; k < start + len; k++) qabs[k] = QuantizeDynamic((absmax[k] - offset) * inv);
        }
    }

    /// <summary>The (decoded) absmax of 64-block k of an encoded tensor.</summary>
    public float BlockAbsmax(ReadOnlySpan<byte> tensor, long rows, int cols, long k)
    {
        if (!DoubleQuant) return BinaryPrimitives.ReadSingleLittleEndian(tensor.Slice(checked((int)(4 * k))));
        long nb = Blocks(rows, cols);
        long nb2 = (nb + DqBlock - 1) / DqBlock;
        float offset = BinaryPrimitives.ReadSingleLittleEndian(tensor);
        float amax2 = BinaryPrimitives.ReadSingleLittleEndian(tensor.Slice(checked((int)(4 + 4 * (k / DqBlock)))));
        byte q = tensor[checked((int)(4 + 4 * nb2 + k))];
        return DynamicMap[q] * amax2 + offset;
    }

    public override void DequantizeTensorRows(ReadOnlySpan<byte> tensor, long rows, int cols, long rowStart, int rowCount, Span<float> dst)
    {
        CheckEncoded(tensor.Length, rows, cols);
        var lv = Levels;
        int bpr = cols / QK;
        for (int i = 0; i < rowCount; i++)
        {
            long r = rowStart + i;
            var payload = tensor.Slice(checked((int)RowOffset(rows, cols, r)), cols / 2);
            for (int b = 0; b < bpr; b++)
            {
                float a = BlockAbsmax(tensor, rows, cols, r * bpr + b);
                var y = dst.Slice(i * cols + b * QK, QK);
                for (int j = 0; j < QK / 2; j++)
                {
                    byte c = payload[b * (QK / 2) + j];
                    y[2 * j] = lv[c >> 4] * a;
                    y[2 * j + 1] = lv[c & 0x0F] * a;
                }
            }
        }
    }

    public override float DotTensorRow(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x)
        => DotRowCore(tensor, rows, cols, row, x, Avx2.IsSupported);

    /// <summary>Scalar reference of <see cref="DotTensorRow"/>.</summary>
    public float DotTensorRowScalar(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x)
        => DotRowCore(tensor, rows, cols, row, x, vector: false);

    private float DotRowCore(ReadOnlySpan<byte> tensor, long rows, int cols, long row, ReadOnlySpan<float> x, bool vector)
    {
        int bpr = cols / QK;
        var payload = tensor.Slice(checked((int)RowOffset(rows, cols, row)), cols / 2);
        float sum = 0;
        var lv = Levels;
        Vector256<float> lo8 = default, hi8 = default;
        if (vector)
        {
            lo8 = Vector256.Create(lv.Slice(0, 8));
            hi8 = Vector256.Create(lv.Slice(8, 8));
        }
        for (int b = 0; b < bpr; b++)
        {
            var q = payload.Slice(b * (QK / 2), QK / 2);
            var xs = x.Slice(b * QK, QK);
            float s;
            if (vector)
            {
                var acc = Vector256<float>.Zero;
                var mask = Vector128.Create((byte)0x0F);
                for (int j = 0; j < QK / 2; j += 8)
                {
                    var bytes = Vector128.CreateScalar(BinaryPrimitives.ReadUInt64LittleEndian(q.Slice(j))).AsByte();
                    // First value of each pair is the high nibble: interleave (high, low).
                    var codes = Sse2.UnpackLow(Vector128.ShiftRightLogical(bytes, 4), bytes & mask);
                    acc += Lookup(Avx2.ConvertToVector256Int32(codes), lo8, hi8) * Vector256.Create(xs.Slice(2 * j, 8));
                    acc += Lookup(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(codes, 8)), lo8, hi8)
                         * Vector256.Create(xs.Slice(2 * j + 8, 8));
                }
                s = Vector256.Sum(acc);
            }
            else
            {
                s = 0;
                for (int j = 0; j < QK / 2; j++) s += lv[q[j] >> 4] * xs[2 * j] + lv[q[j] & 0x0F] * xs[2 * j + 1];
            }
            sum += s * BlockAbsmax(tensor, rows, cols, row * bpr + b);
        }
        return sum;
    }

    private static Vector256<float> Lookup(Vector256<int> idx, Vector256<float> lo8, Vector256<float> hi8)
    {
        var fromLo = Avx2.PermuteVar8x32(lo8, idx);
        var fromHi = Avx2.PermuteVar8x32(hi8, idx);
        var useHi = Vector256.GreaterThan(idx, Vector256.Create(7)).AsSingle();
        return Vector256.ConditionalSelect(useHi, fromHi, fromLo);
    }
}
