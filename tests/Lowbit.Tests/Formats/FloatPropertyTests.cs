using FsCheck;
using FsCheck.Xunit;
using Lowbit.Formats;

namespace Lowbit.Tests.Formats;

/// <summary>FsCheck properties over arbitrary floats (including NaN, ±Inf, subnormals, extremes).</summary>
public sealed class FloatPropertyTests
{
    [Property(MaxTest = 300)]
    public bool Fp8_encoding_is_a_nearest_finite_value_or_saturates(float x, bool e5m2)
    {
        var kind = e5m2 ? Fp8Kind.E5M2 : Fp8Kind.E4M3;
        byte c = Fp8.Encode(x, kind);
        float d = Fp8.Decode(c, kind);
        if (float.IsNaN(x)) return float.IsNaN(d);
        float max = Fp8.Max(kind);
        if (MathF.Abs(x) >= max) return MathF.Abs(d) == max && float.IsNegative(d) == float.IsNegative(x);
        double err = Math.Abs((double)d - x);
        foreach (float v in Fp8.Table(kind))
            if (float.IsFinite(v) && Math.Abs((double)v - x) < err) return false;
        return true;
    }

    [Property(MaxTest = 300)]
    public bool E2M1_encoding_is_a_nearest_value_or_saturates(float x)
    {
        if (float.IsNaN(x)) return E2M1.Encode(x) == 0;
        float d = E2M1.Values[E2M1.Encode(x)];
        if (MathF.Abs(x) >= 6) return MathF.Abs(d) == 6;
        foreach (float v in E2M1.Values) if (MathF.Abs(v - x) < MathF.Abs(d - x)) return false;
        return true;
    }

    [Property(MaxTest = 100)]
    public bool BF16_vector_encode_equals_scalar(float[] x)
    {
        var v = new ushort[x.Length];
        BF16Codec.Encode(x, v);
        for (int i = 0; i < x.Length; i++) if (v[i] != BF16Codec.FromFloat(x[i])) return false;
        return true;
    }

    [Property(MaxTest = 100)]
    public bool F16_vector_encode_equals_scalar_cast(float[] x)
    {
        var v = new byte[2 * x.Length];
        var s = new byte[2 * x.Length];
        new F16Codec().QuantizeRows(x, v, Math.Max(1, x.Length), default);
        F16Codec.QuantizeScalar(x, s);
        for (int i = 0; i < x.Length; i++)
        {
            if (float.IsNaN(x[i])) { if (!Half.IsNaN(BitConverter.ToHalf(v, 2 * i))) return false; }
            else if (v[2 * i] != s[2 * i] || v[2 * i + 1] != s[2 * i + 1]) return false;
        }
        return true;
    }

    [Property(MaxTest = 200)]
    public bool Int_group_round_trip_stays_within_half_a_step(NormalFloat[] raw, bool symmetric, byte bitsChoice)
    {
        int bits = new[] { 2, 3, 4, 8 }[bitsChoice % 4];
        var x = raw.Select(f => (float)Math.Clamp(f.Get, -1e4, 1e4)).ToArray();
        if (x.Length == 0) return true;
        var (scale, zero) = IntQuant.GroupParams(x, bits, symmetric, mseSearch: false, default, fp16Scale: false);
        float lo = Math.Min(0, x.Min()), hi = Math.Max(0, x.Max());
        double step = symmetric ? 2.0 * Math.Max(-lo, hi) / ((1 << bits) - 1) : (hi - lo) / ((1 << bits) - 1.0);
        foreach (float v in x)
        {
            float d = IntQuant.DequantizeValue(IntQuant.QuantizeValue(v, scale, zero, bits), scale, zero);
            if (Math.Abs(d - v) > step / 2 * (1 + 1e-4) + 1e-6 * Math.Abs(v) + 1e-30) return false;
        }
        return true;
    }
}
