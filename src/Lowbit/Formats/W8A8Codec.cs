using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// Marks a codec whose format includes quantized activations (W8A8): an engine running it with
/// quantized activations must quantize every activation row through <see cref="TensorCodec.VecDotCodec"/>
/// and use <see cref="TensorCodec.DotRowQuantized"/> for many-token products too, not only for decode,
/// so that prefill, perplexity and KLD measure what W8A8 inference computes.
/// </summary>
public interface IQuantizedActivationCodec;

/// <summary>
/// W8A8 row layout shared by weights and activations: each row is one FP32 scale (little-endian)
/// followed by one 8-bit code per value, symmetric (no zero point). For weights a row is an output
/// channel (per-channel scales); for activations a row is a token, quantized on the fly (per-token
/// dynamic scales). The activation format is the codec itself, so <see cref="VecDotCodec"/> is this.
/// <see cref="TensorCodec.DotRow"/> multiplies the dequantized weight row with float activations
/// (the weight-only reference); <see cref="DotRowQuantized"/> is the W8A8 product.
/// </summary>
public abstract class W8A8Codec : TensorCodec, IQuantizedActivationCodec
{
    public const int ScaleBytes = 4;

    public override int BlockSize => 1;
    public override int BlockBytes => 1;

    /// <summary>One scale plus one byte per value.</summary>
    public override long RowBytes(long cols)
    {
        if (!CanEncodeRow(cols)) throw new ArgumentException($"{Name}: row length {cols} must be positive.");
        return ScaleBytes + cols;
    }

    public override TensorCodec? VecDotCodec => this;

    /// <summary>Largest code magnitude (127 for INT8, 448 for E4M3): the row's max |x| maps to it.</summary>
    protected abstract float MaxCode { get; }

    protected abstract void EncodeRow(ReadOnlySpan<float> x, float inverseScale, Span<byte> codes);

    protected abstract void DecodeRow(ReadOnlySpan<byte> codes, float scale, Span<float> dst);

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
    {
        int rowBytes = checked((int)RowBytes(cols));
        if (src.Length % cols != 0) throw new LowbitException($"{Name}: {src.Length} values do not form rows of {cols}.");
        int rows = src.Length / cols;
        if (dst.Length < (long)rows * rowBytes) throw new LowbitException($"{Name}: {rows} rows need {(long)rows * rowBytes} bytes, got {dst.Length}.");
        for (int r = 0; r < rows; r++)
        {
            var x = src.Slice(r * cols, cols);
            var row = dst.Slice(r * rowBytes, rowBytes);
            float amax = TensorPrimitives.MaxMagnitude(x);
            amax = Math.Abs(amax);
            float scale = amax > 0 && float.IsFinite(amax) ? amax / MaxCode : 0f;
            BinaryPrimitives.WriteSingleLittleEndian(row, scale);
            EncodeRow(x, scale == 0 ? 0f : 1f / scale, row.Slice(ScaleBytes));
        }
    }

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
    {
        int rowBytes = checked((int)RowBytes(cols));
        int rows = dst.Length / cols;
        if (src.Length < (long)rows * rowBytes) throw new LowbitException($"{Name}: {rows} rows need {(long)rows * rowBytes} bytes, got {src.Length}.");
        for (int r = 0; r < rows; r++)
        {
            var row = src.Slice(r * rowBytes, rowBytes);
            DecodeRow(row.Slice(ScaleBytes), BinaryPrimitives.ReadSingleLittleEndian(row), dst.Slice(r * cols, cols));
        }
    }

    public override float DotRow(ReadOnlySpan<byte> row, ReadOnlySpan<float> x)
    {
        int cols = x.Length;
        float[] tmp = System.Buffers.ArrayPool<float>.Shared.Rent(cols);
        try
        {
            DequantizeRows(row.Slice(0, ScaleBytes + cols), tmp.AsSpan(0, cols), cols);
            return TensorPrimitives.Dot(tmp.AsSpan(0, cols), x);
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(tmp); }
    }

    protected static float Scale(ReadOnlySpan<byte> row) => BinaryPrimitives.ReadSingleLittleEndian(row);
}

/// <summary>The symmetric INT8 row (codes in [−127, 127], max |x| → 127) shared by w8a8-int8 and llm-int8 weights.</summary>
public abstract class Int8RowCodec : W8A8Codec
{
    protected sealed override float MaxCode => 127f;

    protected sealed override void EncodeRow(ReadOnlySpan<float> x, float inverseScale, Span<byte> codes) =>
        W8A8Kernels.EncodeInt8(x, inverseScale, codes);

    protected sealed override void DecodeRow(ReadOnlySpan<byte> codes, float scale, Span<float> dst) =>
        W8A8Kernels.DecodeInt8(codes, scale, dst);
}

/// <summary>
/// "w8a8-int8": INT8 weights with one symmetric scale per output channel, INT8 activations with one
/// dynamic symmetric scale per token (SmoothQuant's W8A8 per-channel/per-token setting). Codes are
/// in [−127, 127]; the product is an exact integer dot times the two scales.
/// </summary>
public sealed class W8A8Int8Codec : Int8RowCodec
{
    public override string Name => "w8a8-int8";

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        if (row.Length != xq.Length || row.Length < ScaleBytes)
            throw new LowbitException($"{Name}: weight row of {row.Length} bytes and activation row of {xq.Length} bytes differ.");
        int dot = W8A8Kernels.DotInt8(row.Slice(ScaleBytes), xq.Slice(ScaleBytes));
        return Scale(row) * Scale(xq) * dot;
    }
}

/// <summary>
/// "w8a8-fp8": FP8 E4M3 weights with one FP32 scale per output channel (max |w| → 448) and E4M3
/// activations with one dynamic scale per token, the FP8 W8A8 scheme of vLLM/TensorRT-LLM
/// (per-channel weights, per-token dynamic activations). The product accumulates in FP32.
/// </summary>
public sealed class W8A8Fp8Codec : W8A8Codec
{
    public override string Name => "w8a8-fp8";
    protected override float MaxCode => Fp8.E4M3Max;

    protected override void EncodeRow(ReadOnlySpan<float> x, float inverseScale, Span<byte> codes)
    {
        for (int i = 0; i < x.Length; i++) codes[i] = Fp8.EncodeE4M3(x[i] * inverseScale);
    }

    protected override void DecodeRow(ReadOnlySpan<byte> codes, float scale, Span<float> dst) =>
        Fp8.DecodeSpan(codes, dst, Fp8Kind.E4M3, scale);

    public override float DotRowQuantized(ReadOnlySpan<byte> row, ReadOnlySpan<byte> xq)
    {
        if (row.Length != xq.Length || row.Length < ScaleBytes)
            throw new LowbitException($"{Name}: weight row of {row.Length} bytes and activation row of {xq.Length} bytes differ.");
        return Scale(row) * Scale(xq) * W8A8Kernels.DotE4M3(row.Slice(ScaleBytes), xq.Slice(ScaleBytes));
    }
}

/// <summary>Dot products of 8-bit code rows: SIMD paths and the scalar references they are tested against.</summary>
internal static class W8A8Kernels
{
    /// <summary>Symmetric INT8 codes: round half away from zero, clamped to [−127, 127] (no −128, so the VNNI sign trick stays exact).</summary>
    public static void EncodeInt8(ReadOnlySpan<float> x, float inverseScale, Span<byte> codes)
    {
        for (int i = 0; i < x.Length; i++)
            codes[i] = (byte)(sbyte)Math.Clamp(MathF.Round(x[i] * inverseScale, MidpointRounding.AwayFromZero), -127f, 127f);
    }

    public static void DecodeInt8(ReadOnlySpan<byte> codes, float scale, Span<float> dst)
    {
        for (int i = 0; i < dst.Length; i++) dst[i] = (sbyte)codes[i] * scale;
    }

    /// <summary>Σ a[i]·b[i] over signed bytes, exact in int32 (|sum| ≤ 128²·n fits for n &lt; 131072).</summary>
    public static int DotInt8(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (AvxVnni.IsSupported && a.Length >= 32) return DotInt8AvxVnni(a, b);
        if (Avx2.IsSupported && a.Length >= 32) return DotInt8Avx2(a, b);
        return DotInt8Scalar(a, b);
    }

    public static int DotInt8Scalar(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int sum = 0;
        for (int i = 0; i < a.Length; i++) sum += (sbyte)a[i] * (sbyte)b[i];
        return sum;
    }

    /// <summary>AVX2: sign-extend 16 bytes to int16, pmaddwd pairs into int32 lanes (exact for all byte values).</summary>
    public static int DotInt8Avx2(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (!Avx2.IsSupported) return DotInt8Scalar(a, b);
        int n = Math.Min(a.Length, b.Length);
        ref byte pa = ref MemoryMarshal.GetReference(a);
        ref byte pb = ref MemoryMarshal.GetReference(b);
        var acc0 = Vector256<int>.Zero;
        var acc1 = Vector256<int>.Zero;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var va = Vector256.LoadUnsafe(ref pa, (nuint)i).AsSByte();
            var vb = Vector256.LoadUnsafe(ref pb, (nuint)i).AsSByte();
            acc0 = Avx2.Add(acc0, Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(va.GetLower()), Avx2.ConvertToVector256Int16(vb.GetLower())));
            acc1 = Avx2.Add(acc1, Avx2.MultiplyAddAdjacent(Avx2.ConvertToVector256Int16(va.GetUpper()), Avx2.ConvertToVector256Int16(vb.GetUpper())));
        }
        int sum = Vector256.Sum(Avx2.Add(acc0, acc1));
        for (; i < n; i++) sum += (sbyte)a[i] * (sbyte)b[i];
        return sum;
    }

    /// <summary>
    /// AVX-VNNI vpdpbusd (u8 × s8 → int32, no saturation) with ggml's sign trick: |a| as unsigned,
    /// b carrying a's sign. Exact when b has no −128 code (the W8A8 codecs write codes in [−127, 127]);
    /// a −128 in b is routed to the AVX2 path.
    /// </summary>
    public static int DotInt8AvxVnni(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        if (!AvxVnni.IsSupported) return DotInt8Avx2(a, b);
        int n = Math.Min(a.Length, b.Length);
        ref byte pa = ref MemoryMarshal.GetReference(a);
        ref byte pb = ref MemoryMarshal.GetReference(b);
        var acc = Vector256<int>.Zero;
        var minCode = Vector256.Create((sbyte)-128);
        var sawMin = Vector256<sbyte>.Zero;
        int i = 0;
        for (; i + 32 <= n; i += 32)
        {
            var va = Vector256.LoadUnsafe(ref pa, (nuint)i).AsSByte();
            var vb = Vector256.LoadUnsafe(ref pb, (nuint)i).AsSByte();
            sawMin |= Vector256.Equals(vb, minCode);
            acc = AvxVnni.MultiplyWideningAndAdd(acc, Avx2.Abs(va), Avx2.Sign(vb, va));
        }
        if (sawMin != Vector256<sbyte>.Zero) return DotInt8Avx2(a, b);
        int sum = Vector256.Sum(acc);
        for (; i < n; i++) sum += (sbyte)a[i] * (sbyte)b[i];
        return sum;
    }

    /// <summary>Σ e4m3(a[i])·e4m3(b[i]) in FP32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static float DotE4M3(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        int n = Math.Min(a.Length, b.Length);
        int i = 0;
        float sum = 0;
        if (Avx2.IsSupported && Fma.IsSupported && n >= 8)
        {
            ref byte pa = ref MemoryMarshal.GetReference(a);
            ref byte pb = ref MemoryMarshal.GetReference(b);
            var acc = Vector256<float>.Zero;
            for (; i + 8 <= n; i += 8)
            {
                var va = Fp8.Decode8(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref pa, i))).AsByte(), Fp8Kind.E4M3);
                var vb = Fp8.Decode8(Vector128.CreateScalar(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref pb, i))).AsByte(), Fp8Kind.E4M3);
                acc = Fma.MultiplyAdd(va, vb, acc);
            }
            sum = Vector256.Sum(acc);
        }
        var table = Fp8.Table(Fp8Kind.E4M3);
        for (; i < n; i++) sum += table[a[i]] * table[b[i]];
        return sum;
    }

    /// <summary>Scalar reference of <see cref="DotE4M3"/> (double accumulation).</summary>
    public static double DotE4M3Scalar(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b)
    {
        var table = Fp8.Table(Fp8Kind.E4M3);
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += (double)table[a[i]] * table[b[i]];
        return sum;
    }
}
