using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// FP4 E2M1 (OCP MX element type): sign bit 3, two exponent bits (bias 1), one mantissa bit;
/// magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; no Inf/NaN. Code c and c|8 are ±the same magnitude.
/// ggml works with the values doubled (<see cref="Doubled"/>, its kvalues_mxfp4) so they are
/// integers, and halves the block scale instead.
/// </summary>
public static class E2M1
{
    /// <summary>The 16 code values, doubled (ggml kvalues_mxfp4): exact small integers.</summary>
    public static ReadOnlySpan<sbyte> Doubled => [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

    /// <summary>The 16 code values as floats (code 8 is -0).</summary>
    public static ReadOnlySpan<float> Values => [0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f, -0f, -0.5f, -1f, -1.5f, -2f, -3f, -4f, -6f];

    public const float Max = 6f;

    /// <summary>
    /// ggml's best_index_mxfp4: the code whose doubled value times <paramref name="d"/> is nearest
    /// to <paramref name="x"/>, errors computed in float, the first (lowest) code winning ties.
    /// </summary>
    public static int BestIndexGgml(float x, float d)
    {
        var kv = Doubled;
        int best = 0;
        float bestErr = MathF.Abs(kv[0] * d - x);
        for (int i = 1; i < 16; i++)
        {
            float err = MathF.Abs(kv[i] * d - x);
            if (err < bestErr) { best = i; bestErr = err; }
        }
        return best;
    }

    /// <summary>
    /// The 16 doubled values times d, as two vectors (codes 0–7, codes 8–15) for
    /// <see cref="BestIndexGgml(float, Vector256{float}, Vector256{float})"/>. The products are exact.
    /// </summary>
    public static (Vector256<float> Low, Vector256<float> High) ScaledLevels(float d)
    {
        var dv = Vector256.Create(d);
        var t = DoubledTable;
        return (Low8ToFloat(t) * dv, High8ToFloat(t) * dv);
    }

    /// <summary>
    /// Vector form of <see cref="BestIndexGgml(float, float)"/>: the same 16 float errors |v·d − x|,
    /// then the lowest index holding the minimum — bit-identical results (NaN x → 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int BestIndexGgml(float x, Vector256<float> levelsLow, Vector256<float> levelsHigh)
    {
        var xv = Vector256.Create(x);
        var e0 = Vector256.Abs(levelsLow - xv);
        var e1 = Vector256.Abs(levelsHigh - xv);
        var m = Vector256.Min(e0, e1);
        // Horizontal minimum, broadcast to every lane.
        m = Vector256.Min(m, Vector256.Shuffle(m, Vector256.Create(4, 5, 6, 7, 0, 1, 2, 3)));
        m = Vector256.Min(m, Vector256.Shuffle(m, Vector256.Create(2, 3, 0, 1, 6, 7, 4, 5)));
        m = Vector256.Min(m, Vector256.Shuffle(m, Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6)));
        uint mask = Vector256.Equals(e0, m).ExtractMostSignificantBits()
                  | (Vector256.Equals(e1, m).ExtractMostSignificantBits() << 8);
        return mask == 0 ? 0 : System.Numerics.BitOperations.TrailingZeroCount(mask);
    }

    /// <summary>
    /// Round-to-nearest-even E2M1 encoding of an already scaled value, saturating at ±6.
    /// Ties go to the even code (= even mantissa). NaN has no E2M1 code and encodes as +0.
    /// </summary>
    public static byte Encode(float v)
    {
        if (float.IsNaN(v)) return 0;
        byte sign = (byte)(float.IsNegative(v) ? 8 : 0);
        float a = MathF.Abs(v);
        // Midpoints between consecutive magnitudes; at a tie pick the even code index.
        byte m;
        if (a <= 0.25f) m = 0;             // 0.25 tie -> 0
        else if (a < 0.75f) m = 1;
        else if (a <= 1.25f) m = 2;        // [0.75 tie -> 1.0] .. [1.25 tie -> 1.0]
        else if (a < 1.75f) m = 3;
        else if (a <= 2.5f) m = 4;         // 1.75 tie -> 2, 2.5 tie -> 2
        else if (a < 3.5f) m = 5;
        else if (a <= 5f) m = 6;           // 3.5 tie -> 4, 5 tie -> 4
        else m = 7;
        return (byte)(sign | m);
    }

    /// <summary>
    /// Looks the low 4 bits of each byte up in a 16-entry signed byte table (pshufb / tbl where
    /// available). Indices must be in 0..15.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<sbyte> Lookup(Vector128<sbyte> table, Vector128<byte> idx)
    {
        if (Ssse3.IsSupported) return Ssse3.Shuffle(table, idx.AsSByte());
        return Vector128.Shuffle(table, idx.AsSByte());
    }

    /// <summary>Converts the low 8 signed bytes to 8 floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Low8ToFloat(Vector128<sbyte> v)
    {
        if (Avx2.IsSupported) return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(v));
        var s = Vector128.WidenLower(v);
        return Vector256.ConvertToSingle(Vector256.Create(Vector128.WidenLower(s), Vector128.WidenUpper(s)));
    }

    /// <summary>Converts the high 8 signed bytes to 8 floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> High8ToFloat(Vector128<sbyte> v)
    {
        if (Avx2.IsSupported)
            return Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(v, 8)));
        var s = Vector128.WidenUpper(v);
        return Vector256.ConvertToSingle(Vector256.Create(Vector128.WidenLower(s), Vector128.WidenUpper(s)));
    }

    /// <summary>Doubled-value table as a vector for <see cref="Lookup"/>.</summary>
    public static Vector128<sbyte> DoubledTable => Vector128.Create((sbyte)0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
}
