namespace Lowbit.Methods.Grids;

/// <summary>Helpers shared by the GPTQ grids: parameter packing and importance checks.</summary>
internal static class GridMath
{
    /// <summary>True when there is no usable importance (empty, or all zero as GPTQ passes without Hessian importance).</summary>
    public static bool AllZero(ReadOnlySpan<float> importance)
    {
        foreach (float v in importance)
            if (v != 0) return false;
        return true;
    }

    /// <summary>Stores the bytes at <paramref name="offsets"/> two per float (a 16-bit integer is exact in a float).</summary>
    public static void PackBytes(ReadOnlySpan<byte> block, ReadOnlySpan<int> offsets, Span<float> dst)
    {
        for (int k = 0; k < offsets.Length; k += 2)
        {
            int lo = block[offsets[k]];
            int hi = k + 1 < offsets.Length ? block[offsets[k + 1]] : 0;
            dst[k / 2] = lo | hi << 8;
        }
    }

    /// <summary>Inverse of <see cref="PackBytes"/>: writes the bytes back at their offsets.</summary>
    public static void UnpackBytes(ReadOnlySpan<float> src, ReadOnlySpan<int> offsets, Span<byte> block)
    {
        for (int k = 0; k < offsets.Length; k += 2)
        {
            int packed = (int)src[k / 2];
            block[offsets[k]] = (byte)packed;
            if (k + 1 < offsets.Length) block[offsets[k + 1]] = (byte)(packed >> 8);
        }
    }
}
