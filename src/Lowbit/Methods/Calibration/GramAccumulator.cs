using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Lowbit.Methods.Calibration;

/// <summary>
/// Accumulates the Gram matrix Σ x xᵀ of the activation rows entering a linear layer — GPTQ's
/// Hessian up to the factor 2/N. Each observed batch is transposed into column-major rows padded to
/// 8 tokens, and the upper triangle is computed in 4×4 tiles of Vector256 accumulators (a symmetric
/// rank-k update: 8 loads feed 16 fused multiply-adds), in float within a batch and added into a double
/// total per batch. Tiles are owned by one tile row each and summed in a fixed order, so the result
/// does not depend on the thread count.
/// </summary>
public sealed class GramAccumulator
{
    private const int Tile = 4;
    private readonly double[] _sum; // Columns × Columns, upper triangle used
    private readonly int _paddedColumns;
    private float[] _transposed = [];

    public GramAccumulator(int columns)
    {
        if (columns <= 0) throw new ArgumentOutOfRangeException(nameof(columns));
        Columns = columns;
        _paddedColumns = (columns + Tile - 1) / Tile * Tile;
        _sum = new double[(long)columns * columns];
    }

    public int Columns { get; }
    /// <summary>Activation rows (tokens) accumulated so far.</summary>
    public long Tokens { get; private set; }

    /// <summary>Adds <paramref name="tokens"/> activation rows (tokens × Columns, row-major).</summary>
    public void Add(ReadOnlySpan<float> x, int tokens, int threads = 1)
    {
        int n = Columns;
        if (tokens < 0 || x.Length < (long)tokens * n) throw new ArgumentException($"expected {tokens}×{n} activations, got {x.Length}");
        if (tokens == 0) return;
        int tp = (tokens + 7) / 8 * 8;
        long need = (long)_paddedColumns * tp;
        if (_transposed.Length < need) _transposed = new float[need];
        var xt = _transposed;
        // Column-major copy; padding tokens and padding columns are zero so they add nothing.
        Array.Clear(xt, 0, (int)need);
        for (int t = 0; t < tokens; t++)
        {
            var row = x.Slice(t * n, n);
            for (int i = 0; i < n; i++) xt[(long)i * tp + t] = row[i];
        }

        int tileRows = _paddedColumns / Tile;
        var sum = _sum;
        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, threads) };
        if (threads <= 1 || (long)n * n * tokens < 1 << 20)
            for (int bi = 0; bi < tileRows; bi++) TileRow(xt, tp, bi, n, sum);
        else
            Parallel.For(0, tileRows, options, bi => TileRow(xt, tp, bi, n, sum));
        Tokens += tokens;
    }

    private static void TileRow(float[] xt, int tp, int bi, int n, double[] sum)
    {
        Span<float> block = stackalloc float[Tile * Tile];
        int i0 = bi * Tile;
        for (int j0 = i0; j0 < n; j0 += Tile)
        {
            TileProduct(xt, tp, i0, j0, block);
            for (int r = 0; r < Tile; r++)
            {
                int i = i0 + r;
                if (i >= n) break;
                long ro = (long)i * n;
                for (int c = 0; c < Tile; c++)
                {
                    int j = j0 + c;
                    if (j < i || j >= n) continue;
                    sum[ro + j] += block[r * Tile + c];
                }
            }
        }
    }

    /// <summary>block[r·4 + c] = Σ_t xt[i0+r, t] · xt[j0+c, t] (the 4×4 tile at rows i0.., columns j0..).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void TileProduct(float[] xt, int tp, int i0, int j0, Span<float> block)
    {
        ref float basePtr = ref xt[0];
        ref float a0 = ref Unsafe.Add(ref basePtr, (nint)((long)i0 * tp));
        ref float a1 = ref Unsafe.Add(ref a0, tp);
        ref float a2 = ref Unsafe.Add(ref a1, tp);
        ref float a3 = ref Unsafe.Add(ref a2, tp);
        // i0 and j0 are multiples of 4 below the padded column count, so all eight rows exist.
        ref float b0 = ref Unsafe.Add(ref basePtr, (nint)((long)j0 * tp));
        ref float b1 = ref Unsafe.Add(ref b0, tp);
        ref float b2 = ref Unsafe.Add(ref b1, tp);
        ref float b3 = ref Unsafe.Add(ref b2, tp);
        Vector256<float> c00 = default, c01 = default, c02 = default, c03 = default;
        Vector256<float> c10 = default, c11 = default, c12 = default, c13 = default;
        Vector256<float> c20 = default, c21 = default, c22 = default, c23 = default;
        Vector256<float> c30 = default, c31 = default, c32 = default, c33 = default;
        for (int t = 0; t < tp; t += 8)
        {
            var va0 = Vector256.LoadUnsafe(ref a0, (nuint)t);
            var va1 = Vector256.LoadUnsafe(ref a1, (nuint)t);
            var va2 = Vector256.LoadUnsafe(ref a2, (nuint)t);
            var va3 = Vector256.LoadUnsafe(ref a3, (nuint)t);
            var vb0 = Vector256.LoadUnsafe(ref b0, (nuint)t);
            var vb1 = Vector256.LoadUnsafe(ref b1, (nuint)t);
            var vb2 = Vector256.LoadUnsafe(ref b2, (nuint)t);
            var vb3 = Vector256.LoadUnsafe(ref b3, (nuint)t);
            // Fused multiply-add: one rounding, the same on every machine (emulated exactly where the hardware has no FMA).
            c00 = Vector256.FusedMultiplyAdd(va0, vb0, c00); c01 = Vector256.FusedMultiplyAdd(va0, vb1, c01);
            c02 = Vector256.FusedMultiplyAdd(va0, vb2, c02); c03 = Vector256.FusedMultiplyAdd(va0, vb3, c03);
            c10 = Vector256.FusedMultiplyAdd(va1, vb0, c10); c11 = Vector256.FusedMultiplyAdd(va1, vb1, c11);
            c12 = Vector256.FusedMultiplyAdd(va1, vb2, c12); c13 = Vector256.FusedMultiplyAdd(va1, vb3, c13);
            c20 = Vector256.FusedMultiplyAdd(va2, vb0, c20); c21 = Vector256.FusedMultiplyAdd(va2, vb1, c21);
            c22 = Vector256.FusedMultiplyAdd(va2, vb2, c22); c23 = Vector256.FusedMultiplyAdd(va2, vb3, c23);
            c30 = Vector256.FusedMultiplyAdd(va3, vb0, c30); c31 = Vector256.FusedMultiplyAdd(va3, vb1, c31);
            c32 = Vector256.FusedMultiplyAdd(va3, vb2, c32); c33 = Vector256.FusedMultiplyAdd(va3, vb3, c33);
        }
        block[0] = Vector256.Sum(c00); block[1] = Vector256.Sum(c01); block[2] = Vector256.Sum(c02); block[3] = Vector256.Sum(c03);
        block[4] = Vector256.Sum(c10); block[5] = Vector256.Sum(c11); block[6] = Vector256.Sum(c12); block[7] = Vector256.Sum(c13);
        block[8] = Vector256.Sum(c20); block[9] = Vector256.Sum(c21); block[10] = Vector256.Sum(c22); block[11] = Vector256.Sum(c23);
        block[12] = Vector256.Sum(c30); block[13] = Vector256.Sum(c31); block[14] = Vector256.Sum(c32); block[15] = Vector256.Sum(c33);
    }

    /// <summary>Σ x xᵀ at (i, j), from the upper triangle.</summary>
    public double this[int i, int j] => i <= j ? _sum[(long)i * Columns + j] : _sum[(long)j * Columns + i];

    /// <summary>GPTQ's Hessian 2/N · XᵀX as a full symmetric row-major matrix (N = tokens seen).</summary>
    public double[] ToHessian()
    {
        int n = Columns;
        var m = new double[(long)n * n];
        double scale = Tokens == 0 ? 0 : 2.0 / Tokens;
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++)
            {
                double v = _sum[(long)i * n + j] * scale;
                m[(long)i * n + j] = v;
                m[(long)j * n + i] = v;
            }
        return m;
    }

    /// <summary>Σ x² per input column (the diagonal).</summary>
    public double[] SumSquares()
    {
        var r = new double[Columns];
        for (int i = 0; i < Columns; i++) r[i] = _sum[(long)i * Columns + i];
        return r;
    }

    /// <summary>Mean x² per input column (llama.cpp's importance statistic).</summary>
    public float[] MeanSquares()
    {
        var r = new float[Columns];
        if (Tokens == 0) return r;
        for (int i = 0; i < Columns; i++) r[i] = (float)(_sum[(long)i * Columns + i] / Tokens);
        return r;
    }
}
