using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Engine;

/// <summary>Settings of a llama-bench-like speed run.</summary>
public sealed record BenchOptions
{
    /// <summary>Prompt-processing tokens (pp); capped at the engine's context. 0 skips pp.</summary>
    public int PromptTokens { get; init; } = 512;
    /// <summary>Generated tokens (tg); capped at the engine's context. 0 skips tg.</summary>
    public int GenerateTokens { get; init; } = 128;
    public int Repetitions { get; init; } = 5;
    /// <summary>Untimed runs before the measured ones (page-in, JIT tiering).</summary>
    public int WarmupRuns { get; init; } = 1;
    public int Seed { get; init; } = 1;
    /// <summary>
    /// Also time a read of the weights a decoded token streams, in their own memory, after every
    /// <see cref="ReadEveryTokens"/> generated tokens (outside the decode timing), so that tg can be set against
    /// the bandwidth that memory delivered at the same moments (see <see cref="BenchResult.ReadBytesPerSecondAlongside"/>).
    /// </summary>
    public bool MeasureReadAlongside { get; init; }
    public int ReadEveryTokens { get; init; } = 8;
    /// <summary>
    /// Weights per token below which no read alongside is made: a model that small streams from the caches, where a
    /// read of its weights times cache hits and step start-up (it came to 18–118 GB/s for the bundled 12 MB model),
    /// not the memory.
    /// </summary>
    public long ReadAlongsideMinBytes { get; init; } = 64L << 20;
}

/// <summary>Mean ± sample standard deviation over repetitions (llama-bench's "t/s" column).</summary>
public readonly record struct Measurement(double Mean, double StdDev, int Samples)
{
    public static Measurement Of(IReadOnlyList<double> samples)
    {
        if (samples.Count == 0) return default;
        double mean = samples.Average();
        double sd = samples.Count > 1 ? Math.Sqrt(samples.Sum(s => (s - mean) * (s - mean)) / (samples.Count - 1)) : 0;
        return new Measurement(mean, sd, samples.Count);
    }

    public override string ToString() => $"{Mean:F2} ± {StdDev:F2}";
}

public sealed record BenchResult
{
    public required int PromptTokens { get; init; }
    /// <summary>pp tokens per second.</summary>
    public required Measurement PromptTokensPerSecond { get; init; }
    public required int GenerateTokens { get; init; }
    /// <summary>tg tokens per second.</summary>
    public required Measurement GenerateTokensPerSecond { get; init; }
    public required int Threads { get; init; }
    /// <summary>Weight bytes one decoded token reads (all matrices it touches).</summary>
    public required long WeightBytesPerToken { get; init; }
    /// <summary>Bytes one decoded token reads on average over the tg run (weights + KV cache rows at the mean position).</summary>
    public required double DecodeBytesPerToken { get; init; }
    /// <summary>FLOPs (2 per multiply-add) per prompt token, averaged over the pp run's positions.</summary>
    public required double PromptFlopsPerToken { get; init; }
    /// <summary>
    /// Read bandwidth of the weights' own memory (a plain SIMD read of every weight byte a decoded token streams, on
    /// the engine's threads) timed between stretches of the tg run: all bytes read ÷ all read time, 0 when not
    /// measured. On a machine shared with other jobs the bandwidth moves by tens of percent within minutes, and a
    /// best-of figure measured before and after the run is the best moment, not what decode had; memory can differ
    /// too (some regions read 10–20 % faster than others on this VM). This is the like-for-like limit for the tg figure.
    /// </summary>
    public double ReadBytesPerSecondAlongside { get; init; }

    /// <summary>tg as a fraction of what <paramref name="bandwidthBytesPerSecond"/> allows.</summary>
    public double GenerateFractionOfBandwidth(double bandwidthBytesPerSecond)
        => bandwidthBytesPerSecond > 0 ? GenerateTokensPerSecond.Mean * DecodeBytesPerToken / bandwidthBytesPerSecond : 0;

    /// <summary>
    /// Share of <see cref="PromptFlopsPerToken"/> in matrices whose prefill runs on integer dot products (activations
    /// quantized: Q4_0/Q8_0/Q4_K GEMM, W8A8); the rest (float matrices, attention) runs on float FMA.
    /// </summary>
    public double PromptIntegerShare { get; init; }

    /// <summary>
    /// pp as a fraction of the compute peak: the time the prompt's operations would take at the peak of the unit
    /// that runs them (integer share at <paramref name="int8OpsPerSecond"/>, the rest at <paramref name="flopsPerSecond"/>)
    /// over the time they took. Without an int8 figure (0), all operations count against the FMA peak, where
    /// integer kernels can exceed 100 %.
    /// </summary>
    public double PromptFractionOfPeak(double flopsPerSecond, double int8OpsPerSecond = 0)
    {
        if (flopsPerSecond <= 0) return 0;
        double share = int8OpsPerSecond > 0 ? PromptIntegerShare : 0;
        double idealSecondsPerToken = PromptFlopsPerToken * (1 - share) / flopsPerSecond + (share > 0 ? PromptFlopsPerToken * share / int8OpsPerSecond : 0);
        return PromptTokensPerSecond.Mean * idealSecondsPerToken;
    }
}

/// <summary>Machine limits measured on this host.</summary>
public sealed record MachineLimits(double ReadBytesPerSecond, double TriadBytesPerSecond, double FlopsPerSecond, int Threads, long BufferBytes)
{
    /// <summary>Read bandwidth of the two measurements averaged (0 when not an average).</summary>
    public double ReadBytesPerSecondBefore { get; init; }
    public double ReadBytesPerSecondAfter { get; init; }

    /// <summary>Integer dot-product peak (2 operations per byte multiply-add) of the integer kernels' fastest step (<see cref="Bench.MeasureInt8Peak"/>), 0 = not measured or none.</summary>
    public double Int8OpsPerSecond { get; init; }

    /// <summary>
    /// The mean of a measurement taken before a benchmark and one taken after it: on a shared machine the
    /// bandwidth available moves by tens of percent within minutes, so a fraction is only meaningful
    /// against limits measured around the run itself.
    /// </summary>
    public static MachineLimits Around(MachineLimits before, MachineLimits after) =>
        new((before.ReadBytesPerSecond + after.ReadBytesPerSecond) / 2, (before.TriadBytesPerSecond + after.TriadBytesPerSecond) / 2,
            (before.FlopsPerSecond + after.FlopsPerSecond) / 2, before.Threads, before.BufferBytes)
        {
            ReadBytesPerSecondBefore = before.ReadBytesPerSecond,
            ReadBytesPerSecondAfter = after.ReadBytesPerSecond,
            Int8OpsPerSecond = (before.Int8OpsPerSecond + after.Int8OpsPerSecond) / 2,
        };

    /// <summary>"47.1 GB/s" or, around a run, "47.1 GB/s (before 45.0, after 49.2)".</summary>
    public string ReadBandwidthText => ReadBytesPerSecondBefore > 0
        ? $"{ReadBytesPerSecond / 1e9:F1} GB/s (before {ReadBytesPerSecondBefore / 1e9:F1}, after {ReadBytesPerSecondAfter / 1e9:F1})"
        : $"{ReadBytesPerSecond / 1e9:F1} GB/s";
}

/// <summary>
/// Speed measurements: llama-bench-style pp/tg on an engine, and this machine's memory bandwidth
/// and FLOP peak so results can be expressed as a fraction of the hardware limit.
/// </summary>
public static class Bench
{
    public static BenchResult Run(InferenceEngine engine, BenchOptions? options = null, IProgress<string>? progress = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new BenchOptions();
        int pp = Math.Clamp(options.PromptTokens, 0, engine.ContextLength);
        int tg = Math.Clamp(options.GenerateTokens, 0, engine.ContextLength);
        int reps = Math.Max(1, options.Repetitions);
        var rng = new Random(options.Seed);
        int vocab = engine.VocabSize;

        var ppSamples = new List<double>();
        if (pp > 0)
        {
            var prompt = new int[pp];
            for (int i = 0; i < pp; i++) prompt[i] = rng.Next(vocab);
            var logits = new float[vocab];
            for (int r = -options.WarmupRuns; r < reps; r++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                engine.Reset();
                var sw = Stopwatch.StartNew();
                engine.Evaluate(prompt, pp - 1, logits);
                double s = sw.Elapsed.TotalSeconds;
                if (r >= 0)
                {
                    ppSamples.Add(pp / s);
                    progress?.Report($"pp{pp}: run {r + 1}/{reps}: {pp / s:F2} t/s");
                }
            }
        }

        var tgSamples = new List<double>();
        using var alongside = options.MeasureReadAlongside && tg > 0 && engine.WeightBytesPerToken >= options.ReadAlongsideMinBytes
            ? ReadProbe.OfWeights(engine) : null;
        if (tg > 0)
        {
            int every = Math.Max(1, options.ReadEveryTokens);
            var logits = new float[vocab]; // one buffer: Decode's fresh array per token is garbage the tg timing would include
            for (int r = -options.WarmupRuns; r < reps; r++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                engine.Reset();
                int token = rng.Next(vocab);
                double s = 0;
                var sw = new Stopwatch();
                for (int i = 0; i < tg; i++)
                {
                    sw.Restart();
                    engine.Evaluate([token], 0, logits);
                    s += sw.Elapsed.TotalSeconds;
                    // The next token is picked outside the timing, as llama-bench times llama_decode alone (a scalar
                    // argmax over the 128,256 logits of the 1B shape takes 72 µs here, 0.6 % of a q4_0 token).
                    token = Sampler.ArgMax(logits);
                    if (alongside is not null && r >= 0 && ((i + 1) % every == 0 || i == tg - 1)) alongside.Pass();
                }
                if (r >= 0)
                {
                    tgSamples.Add(tg / s);
                    progress?.Report($"tg{tg}: run {r + 1}/{reps}: {tg / s:F2} t/s");
                }
            }
        }
        engine.Reset();

        double decodeBytes = 0;
        for (int i = 0; i < tg; i++) decodeBytes += engine.DecodeBytesPerToken(i + 1);
        double promptFlops = 0, integerFlops = 0;
        for (int i = 0; i < pp; i++)
        {
            promptFlops += 2.0 * engine.MultiplyAddsPerToken(i);
            integerFlops += 2.0 * engine.IntegerPrefillMultiplyAddsPerToken;
        }
        return new BenchResult
        {
            PromptTokens = pp,
            PromptTokensPerSecond = Measurement.Of(ppSamples),
            GenerateTokens = tg,
            GenerateTokensPerSecond = Measurement.Of(tgSamples),
            Threads = engine.Threads,
            WeightBytesPerToken = engine.WeightBytesPerToken,
            DecodeBytesPerToken = tg > 0 ? decodeBytes / tg : engine.DecodeBytesPerToken(1),
            PromptFlopsPerToken = pp > 0 ? promptFlops / pp : 2.0 * engine.MultiplyAddsPerToken(0),
            ReadBytesPerSecondAlongside = alongside?.BytesPerSecond ?? 0,
            PromptIntegerShare = promptFlops > 0 ? integerFlops / promptFlops : 0,
        };
    }

    /// <summary>
    /// Measures memory bandwidth (multi-threaded SIMD read of a buffer far larger than the
    /// last-level cache, and a STREAM triad a = b + s·c) and the FMA FLOP peak on all threads.
    /// Best of <paramref name="repetitions"/> runs, as STREAM reports.
    /// </summary>
    public static MachineLimits MeasureMachine(int threads = 0, long bufferBytes = 512L << 20, int repetitions = 5)
    {
        threads = threads > 0 ? threads : Environment.ProcessorCount;
        return new MachineLimits(MeasureReadBandwidth(threads, bufferBytes, repetitions), MeasureTriadBandwidth(threads, bufferBytes, repetitions),
            MeasureFlopPeak(threads, repetitions), threads, bufferBytes) { Int8OpsPerSecond = MeasureInt8Peak(threads, repetitions) };
    }

    /// <summary>
    /// Best-of read bandwidth over a buffer in the engine's weight memory (<see cref="NativeBuffer"/>: huge
    /// pages where the OS grants them, as the interleaved decode copies use), so decode fractions are
    /// measured against the fastest streaming this machine does, not against 4 KiB-page memory.
    /// </summary>
    public static double MeasureReadBandwidth(int threads, long bufferBytes, int repetitions = 5)
    {
        using var probe = ReadProbe.OfBuffer(threads, bufferBytes);
        double best = 0;
        for (int r = 0; r < repetitions + 1; r++)
        {
            double s = probe.Pass();
            if (r > 0) best = Math.Max(best, probe.Bytes / s); // first run is a warm-up
        }
        return best;
    }

    /// <summary>
    /// Reads memory regions, every byte once per <see cref="Pass"/>: thread t takes the t-th contiguous part of the
    /// regions laid end to end. Either a buffer of its own (<see cref="OfBuffer"/>) or the weight memory a decoded token
    /// streams (<see cref="OfWeights"/>). The bytes are read as integers (weights seen as floats would include NaNs and
    /// subnormals).
    /// </summary>
    private sealed unsafe class ReadProbe : IDisposable
    {
        private readonly (nint Pointer, long Length)[] _regions;
        private readonly int _threads;
        private readonly ParallelRunner? _runner; // null: the thread pool
        private readonly object? _owner;          // keeps alive the memory the regions point into
        private readonly NativeBuffer? _buffer;   // the probe's own memory, freed with it
        private readonly List<System.Buffers.MemoryHandle> _pins;
        private readonly ulong[] _sink;
        private double _seconds;
        private long _bytesRead;

        private ReadProbe((nint Pointer, long Length)[] regions, int threads, ParallelRunner? runner, object? owner, NativeBuffer? buffer,
            List<System.Buffers.MemoryHandle> pins)
        {
            _regions = regions;
            _threads = Math.Max(1, threads);
            _runner = runner;
            _owner = owner;
            _buffer = buffer;
            _pins = pins;
            _sink = new ulong[8 * _threads];
            foreach (var r in regions) Bytes += r.Length;
        }

        /// <summary>
        /// A buffer of the engine's weight memory kind (<see cref="NativeBuffer"/>: huge pages where granted), filled
        /// once, read on the thread pool.
        /// </summary>
        public static ReadProbe OfBuffer(int threads, long bufferBytes)
        {
            var buffer = new NativeBuffer(Math.Max(4096, bufferBytes) & ~255L);
            var probe = new ReadProbe([((nint)buffer.Pointer, buffer.Length)], threads, null, null, buffer, []);
            Parallel.For(0, probe._threads, new ParallelOptions { MaxDegreeOfParallelism = probe._threads }, t =>
            {
                var (from, to) = probe.Share(t);
                new Span<byte>(buffer.Pointer + from, checked((int)(to - from))).Fill(1);
            });
            return probe;
        }

        /// <summary>
        /// The weight memory a decoded token streams (<see cref="InferenceEngine.DecodeWeightMemory"/>), read on the
        /// engine's own threads. On this VM memory is not all alike: in one process, 512 MiB buffers read 50–54 GB/s for
        /// the first six allocated and 61–64 for the next eight (stop 14), so a read of a separate buffer can be
        /// measuring other memory than the weights sit in.
        /// </summary>
        public static ReadProbe OfWeights(InferenceEngine engine)
        {
            var (regions, pins) = engine.DecodeWeightMemory();
            return new ReadProbe([.. regions], engine.Threads, engine.Runner, engine, null, pins);
        }

        public long Bytes { get; }

        /// <summary>All bytes read ÷ all seconds spent reading, over every <see cref="Pass"/> so far.</summary>
        public double BytesPerSecond => _seconds > 0 ? _bytesRead / _seconds : 0;

        /// <summary>Reads every region once on all threads; returns the seconds it took.</summary>
        public double Pass()
        {
            var sw = Stopwatch.StartNew();
            if (_runner is not null) _runner.For(_threads, false, ReadPart);
            else Parallel.For(0, _threads, new ParallelOptions { MaxDegreeOfParallelism = _threads }, ReadPart);
            double s = sw.Elapsed.TotalSeconds;
            GC.KeepAlive(_owner);
            GC.KeepAlive(_buffer);
            _seconds += s;
            _bytesRead += Bytes;
            return s;
        }

        /// <summary>Thread t's bytes [from, to) of the regions laid end to end.</summary>
        private (long From, long To) Share(int t) => (Bytes * t / _threads, Bytes * (t + 1) / _threads);

        private void ReadPart(int t)
        {
            var (from, to) = Share(t);
            long at = 0;
            Vector256<ulong> a0 = default, a1 = default, a2 = default, a3 = default;
            ulong tail = 0;
            foreach (var (pointer, size) in _regions)
            {
                long lo = Math.Max(from, at), hi = Math.Min(to, at + size);
                if (lo < hi)
                {
                    byte* p = (byte*)pointer + (lo - at);
                    long n = hi - lo, i = 0;
                    for (; i + 128 <= n; i += 128)
                    {
                        a0 ^= Vector256.Load((ulong*)(p + i)); a1 ^= Vector256.Load((ulong*)(p + i + 32));
                        a2 ^= Vector256.Load((ulong*)(p + i + 64)); a3 ^= Vector256.Load((ulong*)(p + i + 96));
                    }
                    for (; i < n; i++) tail += p[i];
                }
                at += size;
            }
            _sink[8 * t] = Vector256.Sum(a0 ^ a1 ^ a2 ^ a3) + tail;
        }

        public void Dispose()
        {
            foreach (var pin in _pins) pin.Dispose();
            _pins.Clear();
            _buffer?.Dispose();
        }
    }

    public static unsafe double MeasureTriadBandwidth(int threads, long bufferBytes, int repetitions = 5)
    {
        long n = Math.Max(1024, bufferBytes / 3 / sizeof(float)) & ~63L;
        var a = GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true);
        var b = GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true);
        var c = GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true);
        var opts = new ParallelOptions { MaxDegreeOfParallelism = threads };
        Parallel.For(0, threads, opts, t =>
        {
            var (s, l) = Part(n, threads, t);
            a.AsSpan(s, l).Fill(0); b.AsSpan(s, l).Fill(1); c.AsSpan(s, l).Fill(2);
        });
        double best = 0;
        var scalar = Vector256.Create(3f);
        for (int r = 0; r < repetitions + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, opts, t =>
            {
                var (start, length) = Part(n, threads, t);
                fixed (float* pa = &a[start], pb = &b[start], pc = &c[start])
                    for (long i = 0; i + 8 <= length; i += 8)
                        Vector256.Store(Vector256.Load(pb + i) + scalar * Vector256.Load(pc + i), pa + i);
            });
            double s = sw.Elapsed.TotalSeconds;
            if (r > 0) best = Math.Max(best, 3.0 * n * sizeof(float) / s);
        }
        return best;
    }

    /// <summary>
    /// FP32 FLOPs per second of independent FMA chains on all threads (2 FLOPs per lane per FMA): 256-bit, and where
    /// the float GEMM has its 512-bit tile (<see cref="MatKernels.WideTiles"/>) the faster of that and 512-bit chains,
    /// so no kernel is set against a peak it can beat. (On Zen 5 a 512-bit FMA issues at the 256-bit rate: twice
    /// the FLOPs, which a 256-bit-only figure would hide.)
    /// </summary>
    public static double MeasureFlopPeak(int threads, int repetitions = 5)
    {
        const long iterations = 25_000_000; // per thread: ~50 ms per run at 3 GHz
        var sink = new float[threads];
        double peak = BestRate(threads, repetitions, iterations * 12.0 * 8 * 2, t => sink[t] = FmaLoop(iterations, 1f + t * 1e-7f));
        if (MatKernels.WideTiles)
            peak = Math.Max(peak, BestRate(threads, repetitions, iterations * 12.0 * 16 * 2, t => sink[t] = WideFmaLoop(iterations, 1f + t * 1e-7f)));
        return peak;
    }

    /// <summary><see cref="FmaLoop"/> in 512-bit registers.</summary>
    private static float WideFmaLoop(long iterations, float seed)
    {
        var m = Vector512.Create(0.9999999f);
        var add = Vector512.Create(seed * 1e-7f);
        Vector512<float> a0 = Vector512.Create(seed), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
            a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512F.FusedMultiplyAdd(a0, m, add); a1 = Avx512F.FusedMultiplyAdd(a1, m, add); a2 = Avx512F.FusedMultiplyAdd(a2, m, add);
            a3 = Avx512F.FusedMultiplyAdd(a3, m, add); a4 = Avx512F.FusedMultiplyAdd(a4, m, add); a5 = Avx512F.FusedMultiplyAdd(a5, m, add);
            a6 = Avx512F.FusedMultiplyAdd(a6, m, add); a7 = Avx512F.FusedMultiplyAdd(a7, m, add); a8 = Avx512F.FusedMultiplyAdd(a8, m, add);
            a9 = Avx512F.FusedMultiplyAdd(a9, m, add); a10 = Avx512F.FusedMultiplyAdd(a10, m, add); a11 = Avx512F.FusedMultiplyAdd(a11, m, add);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    /// <summary>
    /// Integer operations per second (2 per byte multiply-add) of independent chains of the integer GEMM's dot step
    /// (<see cref="QuantizedGemm.Step{V}"/>: vpdpbusd with AVX-VNNI, else pmaddubsw + pmaddwd + add) on all threads;
    /// where the 512-bit Q4_0 / Q4_K tiles run (<see cref="QuantizedGemm.WideTilesSupported"/>), the faster of that and their
    /// step (vpmaddubsw + vpaddw on 64 bytes), so no kernel is set against a peak it can beat. 0 where the GEMM
    /// has no vector path.
    /// </summary>
    public static double MeasureInt8Peak(int threads, int repetitions = 5)
    {
        if (QuantizedGemm.BestIsa == GemmIsa.Scalar) return 0;
        bool vnni = QuantizedGemm.BestIsa == GemmIsa.AvxVnni;
        const long iterations = 20_000_000;
        var sink = new int[threads];
        double peak = BestRate(threads, repetitions, iterations * 12.0 * 32 * 2, // 12 steps of 32 byte multiply-adds
            t => sink[t] = vnni ? DotLoop<QuantizedGemm.Q40Vnni>(iterations, t) : DotLoop<QuantizedGemm.Q40Avx2>(iterations, t));
        if (QuantizedGemm.WideTilesSupported)
            peak = Math.Max(peak, BestRate(threads, repetitions, iterations * 12.0 * 64 * 2, t => sink[t] = WideDotLoop(iterations, t)));
        return peak;
    }

    /// <summary>
    /// 12 independent chains of the 512-bit tiles' step: int16 lanes += vpmaddubsw(codes, activations). Each chain
    /// has its own codes and the activations change every iteration (one vpaddb), so the compiler can neither merge
    /// the 12 products nor hoist them out of the loop.
    /// </summary>
    private static int WideDotLoop(long iterations, int seed)
    {
        Vector512<byte> W(int k) => Vector512.Create((byte)(3 + seed + k));
        Vector512<byte> w0 = W(0), w1 = W(1), w2 = W(2), w3 = W(3), w4 = W(4), w5 = W(5), w6 = W(6), w7 = W(7), w8 = W(8), w9 = W(9), w10 = W(10), w11 = W(11);
        var a = Vector512.Create(0x01FF02FE + seed).AsSByte();
        var step = Vector512.Create((sbyte)1);
        Vector512<short> a0 = default, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Avx512BW.Add(a0, Avx512BW.MultiplyAddAdjacent(w0, a)); a1 = Avx512BW.Add(a1, Avx512BW.MultiplyAddAdjacent(w1, a));
            a2 = Avx512BW.Add(a2, Avx512BW.MultiplyAddAdjacent(w2, a)); a3 = Avx512BW.Add(a3, Avx512BW.MultiplyAddAdjacent(w3, a));
            a4 = Avx512BW.Add(a4, Avx512BW.MultiplyAddAdjacent(w4, a)); a5 = Avx512BW.Add(a5, Avx512BW.MultiplyAddAdjacent(w5, a));
            a6 = Avx512BW.Add(a6, Avx512BW.MultiplyAddAdjacent(w6, a)); a7 = Avx512BW.Add(a7, Avx512BW.MultiplyAddAdjacent(w7, a));
            a8 = Avx512BW.Add(a8, Avx512BW.MultiplyAddAdjacent(w8, a)); a9 = Avx512BW.Add(a9, Avx512BW.MultiplyAddAdjacent(w9, a));
            a10 = Avx512BW.Add(a10, Avx512BW.MultiplyAddAdjacent(w10, a)); a11 = Avx512BW.Add(a11, Avx512BW.MultiplyAddAdjacent(w11, a));
            a = Avx512BW.Add(a, step);
        }
        return Vector512.Sum((a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11).AsInt32());
    }

    /// <summary>
    /// Best of <paramref name="repetitions"/> runs (after one warm-up) of <paramref name="body"/> on each of
    /// <paramref name="threads"/> threads at once: operations per second, given <paramref name="opsPerThread"/> per run.
    /// </summary>
    private static double BestRate(int threads, int repetitions, double opsPerThread, Action<int> body)
    {
        double best = 0;
        var opts = new ParallelOptions { MaxDegreeOfParallelism = threads };
        for (int r = 0; r < repetitions + 1; r++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, opts, body);
            double s = sw.Elapsed.TotalSeconds;
            if (r > 0) best = Math.Max(best, threads * opsPerThread / s);
        }
        return best;
    }

    private static int DotLoop<V>(long iterations, int seed) where V : struct, QuantizedGemm.IVariant
    {
        // 12 independent accumulators cover the dot step's latency × throughput, as FmaLoop does for FMA. Each step
        // takes its own accumulator's bytes as the codes: with one loop-invariant (codes, activations) pair the JIT
        // computed pmaddubsw + pmaddwd once outside the loop, and the AVX2 "peak" was a chain of adds (589 GOP/s on one
        // core against 383 for vpdpbusd).
        var a = Vector256.Create(0x01FF02FE + seed);
        Vector256<int> a0 = Vector256.Create(seed), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = QuantizedGemm.Step<V>(a0, a0.AsByte(), default, a); a1 = QuantizedGemm.Step<V>(a1, a1.AsByte(), default, a);
            a2 = QuantizedGemm.Step<V>(a2, a2.AsByte(), default, a); a3 = QuantizedGemm.Step<V>(a3, a3.AsByte(), default, a);
            a4 = QuantizedGemm.Step<V>(a4, a4.AsByte(), default, a); a5 = QuantizedGemm.Step<V>(a5, a5.AsByte(), default, a);
            a6 = QuantizedGemm.Step<V>(a6, a6.AsByte(), default, a); a7 = QuantizedGemm.Step<V>(a7, a7.AsByte(), default, a);
            a8 = QuantizedGemm.Step<V>(a8, a8.AsByte(), default, a); a9 = QuantizedGemm.Step<V>(a9, a9.AsByte(), default, a);
            a10 = QuantizedGemm.Step<V>(a10, a10.AsByte(), default, a); a11 = QuantizedGemm.Step<V>(a11, a11.AsByte(), default, a);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static float FmaLoop(long iterations, float seed)
    {
        // 12 independent accumulators cover FMA latency × throughput on current x86 cores.
        var m = Vector256.Create(0.9999999f);
        var add = Vector256.Create(seed * 1e-7f);
        Vector256<float> a0 = Vector256.Create(seed), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
            a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            if (Fma.IsSupported)
            {
                a0 = Fma.MultiplyAdd(a0, m, add); a1 = Fma.MultiplyAdd(a1, m, add); a2 = Fma.MultiplyAdd(a2, m, add);
                a3 = Fma.MultiplyAdd(a3, m, add); a4 = Fma.MultiplyAdd(a4, m, add); a5 = Fma.MultiplyAdd(a5, m, add);
                a6 = Fma.MultiplyAdd(a6, m, add); a7 = Fma.MultiplyAdd(a7, m, add); a8 = Fma.MultiplyAdd(a8, m, add);
                a9 = Fma.MultiplyAdd(a9, m, add); a10 = Fma.MultiplyAdd(a10, m, add); a11 = Fma.MultiplyAdd(a11, m, add);
            }
            else
            {
                a0 = a0 * m + add; a1 = a1 * m + add; a2 = a2 * m + add; a3 = a3 * m + add; a4 = a4 * m + add; a5 = a5 * m + add;
                a6 = a6 * m + add; a7 = a7 * m + add; a8 = a8 * m + add; a9 = a9 * m + add; a10 = a10 * m + add; a11 = a11 * m + add;
            }
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    private static (int Start, int Length) Part(long n, int parts, int i)
    {
        long per = (n / parts) & ~63L;
        long start = per * i;
        long length = i == parts - 1 ? n - start : per;
        return ((int)start, (int)length);
    }
}
