using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>The two OCP 8-bit floating-point element formats.</summary>
public enum Fp8Kind
{
    /// <summary>E4M3 ("e4m3fn"): bias 7, no infinities, NaN = S.1111.111, max ±448, min subnormal 2^-9.</summary>
    E4M3,
    /// <summary>E5M2: bias 15, IEEE-like (Inf = S.11111.00, NaN = S.11111.xx), max ±57344, min subnormal 2^-16.</summary>
    E5M2,
}

/// <summary>
/// Scalar and vector conversions for the OCP FP8 formats (OCP 8-bit Floating Point Specification
/// v1.0). Encoding rounds to nearest, ties to even, and SATURATES: finite values (and ±Inf)
/// beyond the largest finite value become ±max; NaN stays NaN. Also ggml's unsigned E4M3 scale
/// helpers (UE4M3) used by its NVFP4 blocks, whose rounding differs (see there).
/// </summary>
public static class Fp8
{
    public const float E4M3Max = 448f;
    public const float E5M2Max = 57344f;

    private static readonly float Pow2_120 = BitConverter.UInt32BitsToSingle((127u + 120u) << 23);
    private static readonly float Pow2_112 = BitConverter.UInt32BitsToSingle((127u + 112u) << 23);

    private static readonly float[] E4M3Table = BuildTable(Fp8Kind.E4M3);
    private static readonly float[] E5M2Table = BuildTable(Fp8Kind.E5M2);

    public static float Max(Fp8Kind kind) => kind == Fp8Kind.E4M3 ? E4M3Max : E5M2Max;

    /// <summary>All 256 decoded values of a format, indexed by code.</summary>
    public static ReadOnlySpan<float> Table(Fp8Kind kind) => kind == Fp8Kind.E4M3 ? E4M3Table : E5M2Table;

    public static float Decode(byte code, Fp8Kind kind) => Table(kind)[code];

    private static (int ManBits, int Bias) Params(Fp8Kind kind) => kind == Fp8Kind.E4M3 ? (3, 7) : (2, 15);

    /// <summary>Bit-level decode from the format definition (builds the tables; the tests check it).</summary>
    public static float DecodeFromBits(byte code, Fp8Kind kind)
    {
        var (mb, bias) = Params(kind);
        int eb = 7 - mb;
        bool neg = (code & 0x80) != 0;
        int e = (code >> mb) & ((1 << eb) - 1);
        int m = code & ((1 << mb) - 1);
        double v;
        if (kind == Fp8Kind.E4M3 && e == 15 && m == 7) return neg ? -float.NaN : float.NaN;
        if (kind == Fp8Kind.E5M2 && e == 31)
            return m == 0 ? (neg ? float.NegativeInfinity : float.PositiveInfinity) : (neg ? -float.NaN : float.NaN);
        if (e == 0) v = Math.ScaleB(m, 1 - bias - mb);
        else v = Math.ScaleB((1 << mb) + m, e - bias - mb);
        return (float)(neg ? -v : v);
    }

    private static float[] BuildTable(Fp8Kind kind)
    {
        var t = new float[256];
        for (int c = 0; c < 256; c++) t[c] = DecodeFromBits((byte)c, kind);
        return t;
    }

    /// <summary>Round-to-nearest-even, saturating F32 → FP8.</summary>
    public static byte Encode(float x, Fp8Kind kind)
    {
        var (mb, bias) = Params(kind);
        byte sign = (byte)(float.IsNegative(x) ? 0x80 : 0);
        if (float.IsNaN(x)) return (byte)(sign | (kind == Fp8Kind.E4M3 ? 0x7F : 0x7E));
        double a = Math.Abs((double)x);
        double max = Max(kind);
        byte maxCode = kind == Fp8Kind.E4M3 ? (byte)0x7E : (byte)0x7B;
        if (a >= max) return (byte)(sign | maxCode);
        int emin = 1 - bias;
        int exp = a == 0 ? emin : Math.Max(emin, Math.ILogB(a));
        // Quantum of the binade (or of the subnormal range); a / quantum is exact in double.
        double q = Math.Round(Math.ScaleB(a, mb - exp), MidpointRounding.ToEven);
        // q in [0, 2^(mb+1)]: q == 2^(mb+1) carries into the next binade, which the code layout
        // absorbs because (exponent field, mantissa) concatenate monotonically.
        int code;
        if (exp == emin && q < (1 << mb)) code = (int)q; // subnormal (or zero)
        else code = ((exp - emin + 1) << mb) + (int)q - (1 << mb);
        if (code > maxCode) code = maxCode; // rounding up past max saturates
        return (byte)(sign | code);
    }

    public static byte EncodeE4M3(float x) => Encode(x, Fp8Kind.E4M3);
    public static byte EncodeE5M2(float x) => Encode(x, Fp8Kind.E5M2);

    /// <summary>
    /// Decodes 8 FP8 codes (the low 8 bytes) to floats with integer tricks: the code's exponent and
    /// mantissa bits are placed at the top of a binary32 mantissa/exponent and the result rebiased by
    /// one exact multiply (which also handles subnormals); NaN/Inf lanes are patched afterwards.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Decode8(Vector128<byte> codes, Fp8Kind kind)
    {
        Vector256<uint> c = Avx2.IsSupported
            ? Avx2.ConvertToVector256Int32(codes).AsUInt32()
            : WidenLow8(codes);
        var sign = (c & Vector256.Create(0x80u)) << 24;
        var mag = c & Vector256.Create(0x7Fu);
        if (kind == Fp8Kind.E4M3)
        {
            var v = Vector256.AsSingle(mag << 20) * Vector256.Create(Pow2_120);
            var isNaN = Vector256.Equals(mag, Vector256.Create(0x7Fu));
            v = Vector256.ConditionalSelect(isNaN.AsSingle(), Vector256.Create(float.NaN), v);
            return Vector256.AsSingle(v.AsUInt32() | sign);
        }
        else
        {
            var v = Vector256.AsSingle(mag << 21) * Vector256.Create(Pow2_112);
            var special = Vector256.Equals(mag & Vector256.Create(0x7Cu), Vector256.Create(0x7Cu));
            var infNaN = Vector256.Create(0x7F800000u) | ((mag & Vector256.Create(3u)) << 21);
            v = Vector256.ConditionalSelect(special.AsSingle(), infNaN.AsSingle(), v);
            return Vector256.AsSingle(v.AsUInt32() | sign);
        }
    }

    private static Vector256<uint> WidenLow8(Vector128<byte> codes)
    {
        var s = Vector128.WidenLower(codes);
        return Vector256.Create(Vector128.WidenLower(s), Vector128.WidenUpper(s));
    }

    /// <summary>Decodes a span of FP8 codes (vectorized where possible).</summary>
    public static void DecodeSpan(ReadOnlySpan<byte> src, Span<float> dst, Fp8Kind kind, float scale = 1f)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            var s = Vector256.Create(scale);
            for (; i + 8 <= src.Length; i += 8)
            {
                var c = Vector128.CreateScalar(BinaryPrimitives.ReadUInt64LittleEndian(src.Slice(i))).AsByte();
                (Decode8(c, kind) * s).CopyTo(dst.Slice(i, 8));
            }
        }
        var t = Table(kind);
        for (; i < src.Length; i++) dst[i] = t[src[i]] * scale;
    }

    /// <summary>Scalar dot of FP8 codes with x (table decode).</summary>
    public static float DotScalar(ReadOnlySpan<byte> codes, ReadOnlySpan<float> x, Fp8Kind kind)
    {
        var t = Table(kind);
        float sum = 0;
        for (int i = 0; i < x.Length; i++) sum += t[codes[i]] * x[i];
        return sum;
    }

    /// <summary>
    /// Decodes 8 codes known to be finite (no NaN/Inf patterns): sign and magnitude bits placed in a
    /// binary32 and rebiased by one exact multiply — no special-value patching.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> DecodeFinite8(Vector128<byte> codes, Fp8Kind kind)
    {
        Vector256<uint> c = Avx2.IsSupported ? Avx2.ConvertToVector256Int32(codes).AsUInt32() : WidenLow8(codes);
        var sign = (c & Vector256.Create(0x80u)) << 24;
        return kind == Fp8Kind.E4M3
            ? Vector256.AsSingle(((c & Vector256.Create(0x7Fu)) << 20) | sign) * Vector256.Create(Pow2_120)
            : Vector256.AsSingle(((c & Vector256.Create(0x7Fu)) << 21) | sign) * Vector256.Create(Pow2_112);
    }

    /// <summary>
    /// Vector dot of FP8 codes with x. Each 16-code chunk is screened for NaN/Inf codes with one
    /// byte compare; clean chunks take the fast finite decode, others the table.
    /// </summary>
    public static float Dot(ReadOnlySpan<byte> codes, ReadOnlySpan<float> x, Fp8Kind kind)
    {
        if (!Vector256.IsHardwareAccelerated || x.Length < 16) return DotScalar(codes, x, kind);
        var acc0 = Vector256<float>.Zero;
        var acc1 = Vector256<float>.Zero;
        var t = Table(kind);
        // E4M3 specials: S.1111.111; E5M2 specials: S.11111.xx.
        var specialMask = Vector128.Create(kind == Fp8Kind.E4M3 ? (byte)0x7F : (byte)0x7C);
        var upperHalf = Vector128.Create((byte)8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
        float tail = 0;
        int i = 0;
        for (; i + 16 <= x.Length; i += 16)
        {
            var c = Vector128.Create(codes.Slice(i, 16));
            if (Vector128.EqualsAny(c & specialMask, specialMask))
            {
                for (int k = i; k < i + 16; k++) tail += t[codes[k]] * x[k];
                continue;
            }
            acc0 += DecodeFinite8(c, kind) * Vector256.Create(x.Slice(i, 8));
            acc1 += DecodeFinite8(Vector128.Shuffle(c, upperHalf), kind) * Vector256.Create(x.Slice(i + 8, 8));
        }
        float sum = Vector256.Sum(acc0 + acc1) + tail;
        for (; i < x.Length; i++) sum += t[codes[i]] * x[i];
        return sum;
    }

    // ---- ggml's unsigned E4M3 block scale (NVFP4) ----

    /// <summary>
    /// ggml_ue4m3_to_fp32: the UE4M3 value times 0.5 (ggml keeps E2M1 values doubled); codes 0 and
    /// 0x7F decode to 0; the sign bit is ignored.
    /// </summary>
    public static float GgmlUE4M3ToFloatHalf(byte x)
    {
        if (x == 0 || x == 0x7F) return 0f;
        int exp = (x >> 3) & 0xF;
        int man = x & 0x7;
        float raw = exp == 0 ? MathF.ScaleB(man, -9) : MathF.ScaleB(1f + man / 8f, exp - 7);
        return raw * 0.5f;
    }

    /// <summary>
    /// ggml_fp32_to_ue4m3: non-positive → 0; clamps at 448; normal values round half-UP on the
    /// first dropped mantissa bit (not to even); subnormals round (int)(x·512 + 0.5) capped at 7.
    /// </summary>
    public static byte GgmlFloatToUE4M3(float x)
    {
        if (!(x > 0f)) return 0;
        if (x > 448f) x = 448f;
        uint bits = BitConverter.SingleToUInt32Bits(x);
        int fexp = (int)((bits >> 23) & 0xFF) - 127;
        int fman = (int)((bits >> 20) & 0x7);
        int e = fexp + 7;
        if (e <= 0)
        {
            int man = (int)(x * 512f + 0.5f);
            if (man > 7) man = 7;
            return man < 1 ? (byte)0 : (byte)man;
        }
        if (e >= 15) return 0x7E;
        int m = fman + (int)((bits >> 19) & 1);
        if (m > 7)
        {
            m = 0;
            e++;
            if (e >= 15) return 0x7E;
        }
        return (byte)((e << 3) | m);
    }
}
