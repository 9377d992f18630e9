using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.Model;
using Xunit;

namespace Lowbit.Tests.Engine;

/// <summary>
/// The decode warm-up: each thread of a range step starts on its own share (caller 0, worker 1), and the warm plan of a
/// decode step points at exactly the weights (or, for the attention, the K and V rows) each thread reads first there.
/// </summary>
public sealed class DecodeWarmupTests
{
    private static readonly ParallelRunner Two = new(2);

    [Fact]
    public void Each_thread_starts_on_its_own_share_also_after_the_workers_exit()
    {
        var runner = new ParallelRunner(2);
        for (int round = 0; round < 2; round++)
        {
            if (round == 1) Thread.Sleep(1500); // idle workers exit after a second; a new one takes the free identity
            int caller = Environment.CurrentManagedThreadId, units = 400;
            int callerFirst = -1, workerFirst = -1, total = 0;
            runner.ForRanges(units, 8, 2, serial: false, (start, count) =>
            {
                if (Environment.CurrentManagedThreadId == caller)
                {
                    if (callerFirst < 0)
                    {
                        callerFirst = start;
                        // Hold the caller in its first piece until the worker has begun (so it cannot take the worker's share).
                        var wait = System.Diagnostics.Stopwatch.StartNew();
                        while (Volatile.Read(ref workerFirst) < 0 && wait.Elapsed.TotalSeconds < 10) Thread.Yield();
                    }
                }
                else Interlocked.CompareExchange(ref workerFirst, start, -1);
                Interlocked.Add(ref total, count);
            });
            Assert.Equal(units, total);
            Assert.Equal(0, callerFirst);
            Assert.Equal(units / 2, workerFirst);
        }
    }

    [Fact]
    public void Warm_plan_of_a_fused_step_starts_where_each_share_starts_and_crosses_matrices()
    {
        var f = GemmFormat.Q4_0;
        var isa = QuantizedGemm.BestIsa;
        if (!InterleavedRows.IsSupported(f)) return;
        int g = InterleavedRows.RowsPerGroup(f, isa, 2048), k = 16 / g, cols = 2048; // 2^18 multiply-adds: a parallel step
        long gb = InterleavedRows.GroupBytes(f, isa, cols);
        // 5k + 2k + k units: thread 1's share is units [4k, 8k): the last k units of a, all of b, all of c (one first piece).
        var a = Matrix(5 * k * g, cols);
        var b = Matrix(2 * k * g, cols);
        var c = Matrix(k * g, cols);
        nint pa = CopyOf(a), pb = CopyOf(b), pc = CopyOf(c);

        var plan = WeightMatrix.DecodeWarmPlan([a, b, c], Two, bytes: 1 << 20)!;
        Assert.Equal([(pa, 4 * k * gb)], plan.For(0).ToArray());
        Assert.Equal([(pa + (nint)(4 * k * gb), k * gb), (pb, 2 * k * gb), (pc, k * gb)], plan.For(1).ToArray());
        Assert.Empty(plan.For(2).ToArray());

        // A budget shorter than the first piece: the first bytes only, in reading order.
        var small = WeightMatrix.DecodeWarmPlan([a, b, c], Two, bytes: k * gb + gb / 2)!;
        Assert.Equal([(pa + (nint)(4 * k * gb), k * gb), (pb, gb / 2)], small.For(1).ToArray());
        Assert.Equal([(pa, k * gb + gb / 2)], small.For(0).ToArray());

        Assert.Null(WeightMatrix.DecodeWarmPlan([a, b, c], new ParallelRunner(1), bytes: 1 << 20));
    }

    [Fact]
    public void Warm_plan_of_long_rows_is_one_run_from_the_front_of_each_share()
    {
        var f = GemmFormat.Q4_0;
        var isa = QuantizedGemm.BestIsa;
        if (!InterleavedRows.IsSupported(f)) return;
        int g = InterleavedRows.RowsPerGroup(f, isa, 8192), cols = 8192, groups = 64 / g, half = groups / 2;
        long gb = InterleavedRows.GroupBytes(f, isa, cols);
        var m = Matrix(groups * g, cols);
        nint p = CopyOf(m);
        // Whole groups one after another: thread 1 reads the second half of the groups. Its first piece (as the decode
        // step cuts it) is one run, however many groups it takes.
        var (chunk, minChunk) = WeightMatrix.DecodePieceUnits(gb);
        var (front, first) = Two.FirstPiece(groups, chunk, minChunk, 1);
        Assert.Equal(half, front);
        Assert.InRange(first, 1, half);
        var plan = WeightMatrix.DecodeWarmPlan([m], Two, bytes: 1 << 20)!;
        Assert.Equal([(p, first * gb)], plan.For(0).ToArray());
        Assert.Equal([(p + (nint)(half * gb), first * gb)], plan.For(1).ToArray());
        // A budget short of the first piece: its first bytes.
        var small = WeightMatrix.DecodeWarmPlan([m], Two, bytes: gb / 2)!;
        Assert.Equal([(p + (nint)(half * gb), gb / 2)], small.For(1).ToArray());
    }

    [Fact]
    public void Warm_plan_of_f16_matrices_follows_their_groups_of_eight_rows()
    {
        int cols = 16384; // 24 rows: 3 groups of 8, 2^18 and more multiply-adds
        if (!InterleavedRows.F16Supported(cols)) return;
        long gb = InterleavedRows.F16GroupBytes(cols);
        var a = Matrix(InterleavedRows.GroupRows, cols, CodecRegistry.Get("f16"));
        var b = Matrix(2 * InterleavedRows.GroupRows, cols, CodecRegistry.Get("f16"));
        nint pa = CopyOf(a), pb = CopyOf(b);
        var plan = WeightMatrix.DecodeWarmPlan([a, b], Two, bytes: 1 << 20)!;
        Assert.Equal([(pa, gb)], plan.For(0).ToArray());
        // Thread 1's share is b's two 256 KiB groups; its first piece takes both (the 512 KiB floor), as one run.
        Assert.Equal([(pb, 2 * gb)], plan.For(1).ToArray());
        var small = WeightMatrix.DecodeWarmPlan([a, b], Two, bytes: gb + 4096)!;
        Assert.Equal([(pb, gb + 4096)], small.For(1).ToArray());
    }

    [Fact]
    public void Steps_without_a_decode_copy_or_run_by_the_caller_alone_get_no_warm_plan()
    {
        var plain = new WeightMatrix(Tensor(128, 2048, CodecRegistry.Get("q4_0")), useQuantizedActivations: true);
        Assert.Null(WeightMatrix.DecodeWarmPlan([plain], Two, bytes: 1 << 20));
        var small = Matrix(32, 256); // far under the multiply-adds a parallel decode step needs
        Assert.Null(WeightMatrix.DecodeWarmPlan([small], Two, bytes: 1 << 20));
    }

    private static WeightMatrix Matrix(int rows, int cols, TensorCodec? codec = null)
    {
        var m = new WeightMatrix(Tensor(rows, cols, codec ?? CodecRegistry.Get("q4_0")), useQuantizedActivations: true, interleave: true);
        Assert.True(m.InterleavedBytes > 0);
        return m;
    }

    private static ModelTensor Tensor(int rows, int cols, TensorCodec codec)
    {
        var rng = new Random(rows * 31 + cols);
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1);
        var data = new byte[codec.TensorBytes(rows, cols)];
        codec.QuantizeTensor(values, data, rows, cols, default);
        return new ModelTensor("w", [rows, cols], codec, data);
    }

    /// <summary>Where a matrix's decode copy starts (the first region it reports for decode).</summary>
    private static nint CopyOf(WeightMatrix m)
    {
        var regions = new List<(nint Pointer, long Length)>();
        var pins = new List<System.Buffers.MemoryHandle>();
        m.AddDecodeMemory(regions, pins);
        foreach (var pin in pins) pin.Dispose();
        Assert.Equal(m.InterleavedBytes, regions[0].Length);
        return regions[0].Pointer;
    }

    [Fact]
    public unsafe void Attention_warm_plan_takes_the_front_of_each_threads_kv_heads_k_then_v()
    {
        // 8 KV heads of 64 values, 3 layers, 1000 positions: thread 0 has heads 0-3, thread 1 heads 4-7.
        var cache = new KvCache(KvCacheType.F32, 3, 1000, 8 * 64, 64);
        long rowBytes = 64 * sizeof(float);
        float* k = cache.Read(1, false, 1, out var kl), v = cache.Read(1, true, 1, out var vl);

        // 10 positions from 5: whole runs, under the budget (not capped: a later position needs a longer plan).
        var plan = cache.AttentionWarmPlan(1, 5, 15, Two, 64 << 10, out bool capped)!;
        Assert.False(capped);
        for (int t = 0; t < 2; t++)
        {
            var runs = plan.For(t).ToArray();
            Assert.Equal(8, runs.Length);
            for (int i = 0; i < 4; i++)
            {
                int h = 4 * t + i;
                Assert.Equal((nint)(k + (long)h * kl.HeadStride + 5L * kl.RowStride), runs[2 * i].Start);
                Assert.Equal((nint)(v + (long)h * vl.HeadStride + 5L * vl.RowStride), runs[2 * i + 1].Start);
                Assert.All(runs, r => Assert.Equal(10 * rowBytes, r.Bytes));
            }
        }

        // 900 positions: each of a thread's 8 runs gets an eighth of the budget, in whole rows; capped.
        plan = cache.AttentionWarmPlan(1, 0, 900, Two, 64 << 10, out capped)!;
        Assert.True(capped);
        Assert.All(plan.For(1).ToArray(), r => Assert.Equal((64 << 10) / 8 / rowBytes * rowBytes, r.Bytes));
        Assert.Equal((nint)(k + 4L * kl.HeadStride), plan.For(1)[0].Start);

        Assert.Null(new KvCache(KvCacheType.F16, 3, 1000, 8 * 64, 64).AttentionWarmPlan(1, 0, 900, Two, 64 << 10, out _));
        Assert.Null(cache.AttentionWarmPlan(1, 0, 900, new ParallelRunner(1), 64 << 10, out _));
    }
}
