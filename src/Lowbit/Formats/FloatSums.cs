using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Formats;

/// <summary>
/// The one order in which every float kernel (the codecs' integer dots and the engine's F32/F16 dots) reduces
/// its 8-lane accumulators, so results do not depend on which kernel, tile or thread produced them.
/// </summary>
internal static class FloatSums
{
    /// <summary>
    /// Horizontal sum in the one fixed order every kernel uses: ((v0+v1)+(v2+v3)) + ((v4+v5)+(v6+v7)).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float HSum(Vector256<float> v)
    {
        if (Avx.IsSupported)
        {
            var t = Avx.HorizontalAdd(v, v);
            t = Avx.HorizontalAdd(t, t);
            return t.ToScalar() + t.GetElement(4);
        }
        return ((v.GetElement(0) + v.GetElement(1)) + (v.GetElement(2) + v.GetElement(3)))
             + ((v.GetElement(4) + v.GetElement(5)) + (v.GetElement(6) + v.GetElement(7)));
    }

    /// <summary>Four horizontal sums at once, each in <see cref="HSum"/>'s order (three hadds instead of four reductions).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> HSum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        if (Avx.IsSupported)
        {
            var t = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
            return t.GetLower() + t.GetUpper();
        }
        return Vector128.Create(HSum(a), HSum(b), HSum(c), HSum(d));
    }
}
