using System.Diagnostics;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Engine;

/// <summary>Speed of one codec's matrix kernels on one matrix shape.</summary>
public sealed record KernelSpeed(
    string Format, int Rows, int Cols, int Matrices, long WeightBytes, int Threads,
    double DecodeBytesPerSecond, int PrefillTokens, double PrefillMultiplyAddsPerSecond, bool IntegerPrefill = false)
{
    /// <summary>Decode (matrix-vector) as a fraction of a measured read bandwidth.</summary>
    public double DecodeFractionOfBandwidth(double readBytesPerSecond) => readBytesPerSecond > 0 ? DecodeBytesPerSecond / readBytesPerSecond : 0;

    /// <summary>
    /// Prefill (matrix-matrix) operations (2 per multiply-add) as a fraction of the peak of the unit that runs them: the
    /// integer dot-product peak when <see cref="IntegerPrefill"/> and one is given, else the FMA FLOP peak.
    /// </summary>
    public double PrefillFractionOfPeak(double flopsPerSecond, double int8OpsPerSecond = 0)
    {
        double peak = IntegerPrefill && int8OpsPerSecond > 0 ? int8OpsPerSecond : flopsPerSecond;
        return peak > 0 ? 2 * PrefillMultiplyAddsPerSecond / peak : 0;
    }
}

/// <summary>
/// The engine's matrix kernels in isolation: matrix-vector products (decode) over a set of distinct
/// matrices far larger than the last-level cache, so every weight byte comes from DRAM as in a real
/// model's decode, and matrix-matrix products (prefill) on a batch of tokens. The same
/// <see cref="WeightMatrix"/> paths the engine runs; only the weights are random.
/// </summary>
public static class KernelBench
{
    /// <param name="codec">Weight codec.</param>
    /// <param name="rows">Output rows of each matrix.</param>
    /// <param name="cols">Input columns (a multiple of the codec's block size).</param>
    /// <param name="decodeBytes">Encoded bytes of the matrix set streamed by the decode test (≥ 4× the LLC).</param>
    /// <param name="prefillTokens">Tokens per matrix-matrix product (0: skip the prefill test).</param>
    /// <param name="minSeconds">Each test repeats until this much time has passed (after one warm-up pass).</param>
    /// <param name="interleave">Decode through the 8-row interleaved copy where the format has one (as the engine does by default).</param>
    public static KernelSpeed Measure(TensorCodec codec, int rows, int cols, int threads, long decodeBytes = 512L << 20,
        int prefillTokens = 128, double minSeconds = 1.0, bool interleave = true, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(codec);
        if (!codec.CanEncodeRow(cols))
            throw new LowbitException($"{codec.Name} cannot encode rows of {cols} values (block size {codec.BlockSize})");
        if (rows <= 0 || threads <= 0) throw new LowbitException("rows and threads must be positive");
        long matrixBytes = codec.TensorBytes(rows, cols);
        if (matrixBytes > int.MaxValue) throw new LowbitException($"a {rows}×{cols} {codec.Name} matrix is too large for this benchmark");
        var encoded = new byte[matrixBytes];
        var values = new float[(long)rows * cols];
        var rng = new Random(7);
        float std = 1f / MathF.Sqrt(cols);
        for (long i = 0; i < values.LongLength; i++) values[i] = (float)((rng.NextDouble() * 2 - 1) * std * 1.7);
        codec.QuantizeTensor(values, encoded, rows, cols, default);
        values = [];

        int matrices = (int)Math.Max(1, (decodeBytes + matrixBytes - 1) / matrixBytes);
        var set = new WeightMatrix[matrices];
        bool quantizedActivations = codec.VecDotCodec is not null;
        var decodeMemory = new NativeArena(); // as the engine places its decode copies
        for (int i = 0; i < matrices; i++)
        {
            var copy = GC.AllocateUninitializedArray<byte>(encoded.Length, pinned: true);
            encoded.CopyTo(copy, 0);
            set[i] = new WeightMatrix(new ModelTensor($"m{i}", [rows, cols], codec, copy), quantizedActivations, quantizedPrefill: true,
                interleave: interleave, decodeMemory: decodeMemory);
        }
        var par = new ParallelRunner(threads);
        var x = new float[cols];
        for (int k = 0; k < cols; k++) x[k] = (float)(rng.NextDouble() * 2 - 1);
        var y = new float[rows];

        // Decode: every matrix once per pass, as a model's layers are.
        double decodeSeconds = Timed(minSeconds, cancel, () => { foreach (var w in set) w.MatVec(x, 0, y, 0, par); }, out int passes);
        double decodeRate = (double)matrixBytes * matrices * passes / decodeSeconds;

        double prefillRate = 0;
        if (prefillTokens > 0)
        {
            var xs = new float[(long)prefillTokens * cols];
            for (long k = 0; k < xs.LongLength; k++) xs[k] = (float)(rng.NextDouble() * 2 - 1);
            var ys = new float[(long)prefillTokens * rows];
            // A few distinct matrices so the weights come from DRAM about as often as in a model's prefill.
            int used = Math.Min(matrices, 4);
            double s = Timed(minSeconds, cancel, () => { for (int i = 0; i < used; i++) set[i].MatMul(xs, 0, prefillTokens, ys, 0, par); }, out int mm);
            prefillRate = (double)rows * cols * prefillTokens * used * mm / s;
        }
        return new KernelSpeed(codec.Name, rows, cols, matrices, matrixBytes * matrices, threads, decodeRate, prefillTokens, prefillRate, set[0].IntegerPrefill);
    }

    private static double Timed(double minSeconds, CancellationToken cancel, Action pass, out int passes)
    {
        pass(); // warm-up: JIT, page faults, thread pool
        var sw = Stopwatch.StartNew();
        passes = 0;
        do
        {
            cancel.ThrowIfCancellationRequested();
            pass();
            passes++;
        } while (sw.Elapsed.TotalSeconds < minSeconds);
        return sw.Elapsed.TotalSeconds;
    }
}
