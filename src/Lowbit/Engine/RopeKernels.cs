using System.Runtime.Intrinsics;

namespace Lowbit.Engine;

/// <summary>
/// Rotary position embedding of one head vector, 8 lanes at a time. Each output is the scalar formula's two
/// products and one sum, rounded the same way (no fused multiply-add), so the result is bit-identical to
/// <see cref="RotatePairsScalar"/> / <see cref="RotateHalvesScalar"/>: decode runs it on 40 heads per layer on one
/// thread while the other threads wait, and the scalar loop cost ~3 µs a layer of a 1B model.
/// </summary>
internal static class RopeKernels
{
    /// <summary>
    /// Interleaved pairs (v[2i], v[2i+1]) rotated by angle i. <paramref name="cos2"/> holds cos θ_i at 2i and 2i+1,
    /// <paramref name="sinSigned2"/> holds −sin θ_i at 2i and +sin θ_i at 2i+1 (<see cref="ExpandPairs"/>).
    /// </summary>
    public static void RotatePairs(Span<float> v, ReadOnlySpan<float> cos2, ReadOnlySpan<float> sinSigned2)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            // Lane 2i: v0·cos + v1·(−sin) = v0·cos − v1·sin; lane 2i+1: v1·cos + v0·sin = v0·sin + v1·cos.
            var swap = Vector256.Create(1, 0, 3, 2, 5, 4, 7, 6);
            for (; i <= v.Length - 8; i += 8)
            {
                var x = Vector256.Create<float>(v.Slice(i, 8));
                var r = x * Vector256.Create<float>(cos2.Slice(i, 8)) + Vector256.Shuffle(x, swap) * Vector256.Create<float>(sinSigned2.Slice(i, 8));
                r.CopyTo(v.Slice(i, 8));
            }
        }
        for (; i < v.Length; i += 2)
        {
            float v0 = v[i], v1 = v[i + 1];
            v[i] = v0 * cos2[i] + v1 * sinSigned2[i];
            v[i + 1] = v1 * cos2[i + 1] + v0 * sinSigned2[i + 1];
        }
    }

    /// <summary>NeoX halves (v[i], v[i + half]) rotated by angle i.</summary>
    public static void RotateHalves(Span<float> v, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = v.Length / 2, i = 0;
        var lo = v.Slice(0, half);
        var hi = v.Slice(half, half);
        if (Vector256.IsHardwareAccelerated)
            for (; i <= half - 8; i += 8)
            {
                var a = Vector256.Create<float>(lo.Slice(i, 8));
                var b = Vector256.Create<float>(hi.Slice(i, 8));
                var c = Vector256.Create<float>(cos.Slice(i, 8));
                var s = Vector256.Create<float>(sin.Slice(i, 8));
                (a * c - b * s).CopyTo(lo.Slice(i, 8));
                (a * s + b * c).CopyTo(hi.Slice(i, 8));
            }
        for (; i < half; i++)
        {
            float v0 = lo[i], v1 = hi[i];
            lo[i] = v0 * cos[i] - v1 * sin[i];
            hi[i] = v0 * sin[i] + v1 * cos[i];
        }
    }

    /// <summary>The per-pair tables of <see cref="RotatePairs"/> from the per-angle cos / sin.</summary>
    public static void ExpandPairs(ReadOnlySpan<float> cos, ReadOnlySpan<float> sin, Span<float> cos2, Span<float> sinSigned2)
    {
        for (int i = 0; i < cos.Length; i++)
        {
            cos2[2 * i] = cos2[2 * i + 1] = cos[i];
            sinSigned2[2 * i] = -sin[i];
            sinSigned2[2 * i + 1] = sin[i];
        }
    }

    /// <summary>The reference: the textbook pair rotation, one pair at a time.</summary>
    public static void RotatePairsScalar(Span<float> v, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        for (int i = 0; i < v.Length / 2; i++)
        {
            float v0 = v[2 * i], v1 = v[2 * i + 1];
            v[2 * i] = v0 * cos[i] - v1 * sin[i];
            v[2 * i + 1] = v0 * sin[i] + v1 * cos[i];
        }
    }

    /// <summary>The reference for NeoX halves, one pair at a time.</summary>
    public static void RotateHalvesScalar(Span<float> v, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = v.Length / 2;
        for (int i = 0; i < half; i++)
        {
            float v0 = v[i], v1 = v[i + half];
            v[i] = v0 * cos[i] - v1 * sin[i];
            v[i + half] = v0 * sin[i] + v1 * cos[i];
        }
    }
}
