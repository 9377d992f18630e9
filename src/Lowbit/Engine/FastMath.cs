using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Engine;

/// <summary>
/// Vectorized exp for the softmax / SiLU hot loops (Cephes expf: Cody–Waite range reduction to
/// |r| ≤ ln2/2, degree-6 polynomial, exponent by bit construction; about 1 ulp on [-87, 88]).
/// Inputs are clamped to [-87.3, 88.3], so results are finite (tiny, not zero, below −87).
/// </summary>
public static unsafe class FastMath
{
    private const float Log2E = 1.44269504088896341f;
    private const float Ln2Hi = 0.693359375f;
    private const float Ln2Lo = -2.12194440e-4f;
    private const float RoundMagic = 12582912f; // 1.5·2^23: adding it rounds to an integer

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c)
        => Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(-87.3f)), Vector256.Create(88.3f));
        var magic = Vector256.Create(RoundMagic);
        var fx = MulAdd(x, Vector256.Create(Log2E), magic) - magic;
        var r = x - fx * Vector256.Create(Ln2Hi);
        r -= fx * Vector256.Create(Ln2Lo);
        var y = Vector256.Create(1.9875691500E-4f);
        y = MulAdd(y, r, Vector256.Create(1.3981999507E-3f));
        y = MulAdd(y, r, Vector256.Create(8.3334519073E-3f));
        y = MulAdd(y, r, Vector256.Create(4.1665795894E-2f));
        y = MulAdd(y, r, Vector256.Create(1.6666665459E-1f));
        y = MulAdd(y, r, Vector256.Create(5.0000001201E-1f));
        y = MulAdd(y, r * r, r) + Vector256<float>.One;
        var n = Vector256.ConvertToInt32(fx);
        var pow2 = ((n + Vector256.Create(127)) << 23).AsSingle();
        return y * pow2;
    }

    /// <summary>Scalar path with the same arithmetic as one lane of <see cref="Exp(Vector256{float})"/>.</summary>
    public static float Exp(float x) => Exp(Vector256.Create(x)).ToScalar();

    /// <summary>x[i] ← exp((x[i] − shift)·scale); returns the sum of the results.</summary>
    public static float ExpInPlace(Span<float> x, float shift, float scale)
    {
        fixed (float* p = x)
        {
            int n = x.Length, i = 0;
            var vs = Vector256.Create(shift);
            var vk = Vector256.Create(scale);
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8)
            {
                var e = Exp((Vector256.Load(p + i) - vs) * vk);
                e.Store(p + i);
                acc += e;
            }
            float sum = Vector256.Sum(acc);
            for (; i < n; i++)
            {
                p[i] = Exp((p[i] - shift) * scale);
                sum += p[i];
            }
            return sum;
        }
    }

    /// <summary>Σ exp(x[i] − shift), accumulated in double across 8-lane partial sums.</summary>
    public static double SumExp(ReadOnlySpan<float> x, float shift)
    {
        fixed (float* p = x)
        {
            int n = x.Length, i = 0;
            var vs = Vector256.Create(shift);
            var a0 = Vector256<float>.Zero;
            var a1 = Vector256<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                a0 += Exp(Vector256.Load(p + i) - vs);
                a1 += Exp(Vector256.Load(p + i + 8) - vs);
            }
            for (; i <= n - 8; i += 8) a0 += Exp(Vector256.Load(p + i) - vs);
            double sum = (double)Vector256.Sum(a0) + Vector256.Sum(a1);
            for (; i < n; i++) sum += Exp(p[i] - shift);
            return sum;
        }
    }

    /// <summary>gate[i] ← silu(gate[i])·up[i] = gate[i]·up[i] / (1 + exp(−gate[i])).</summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        fixed (float* g = gate) fixed (float* u = up)
        {
            int n = gate.Length, i = 0;
            for (; i <= n - 8; i += 8)
            {
                var vg = Vector256.Load(g + i);
                var silu = vg / (Vector256<float>.One + Exp(-vg));
                (silu * Vector256.Load(u + i)).Store(g + i);
            }
            for (; i < n; i++) g[i] = g[i] / (1f + Exp(-g[i])) * u[i];
        }
    }
}
