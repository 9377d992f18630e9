using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Runtime.Intrinsics.X86;

namespace Lowbit.Engine;

/// <summary>
/// Runs a fixed set of work items (<see cref="For"/>), or a range of units in pieces (<see cref="ForRanges"/>),
/// on up to <see cref="Threads"/> threads. Items and units are defined by the caller independently of the
/// thread count, and each output value is written by exactly one of them, so results are identical for any
/// number of threads and any schedule.
/// <para>
/// Decode is a chain of short parallel steps (a 1B model: ~150 per token, tens of microseconds each),
/// so the cost of starting one matters as much as the kernels: waking a blocked thread-pool thread takes
/// longer than many of the steps. The runner therefore keeps its own workers, which spin for a short
/// while after a step for the next one (as ggml's thread pool does during a graph), then block, and
/// exit after a second without work. The calling thread always takes items too, so a step completes
/// even if no worker arrives: workers only ever help.
/// </para>
/// </summary>
internal sealed class ParallelRunner
{
    private static readonly long SpinTicks = Stopwatch.Frequency / 5000; // 200 µs
    private static readonly TimeSpan IdleExit = TimeSpan.FromSeconds(1);

    [ThreadStatic] private static bool t_insideItem;

    private readonly object _stepLock = new();
    private readonly object _workerLock = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly bool[] _idTaken; // worker identities 1..Threads-1 in use (under _workerLock); 0 is the caller
    private StepBase? _step;
    private WarmPlan? _warm;
    private WarmCursor _callerWarm; // the caller's progress through _warm (touched only under _stepLock)
    private int _generation;
    private int _sleepers;
    private int _workers;

    public ParallelRunner(int threads)
    {
        Threads = Math.Max(1, threads);
        _idTaken = new bool[Threads];
    }

    public int Threads { get; }

    /// <summary>
    /// What each thread prefetches while it waits for the next step (null: nothing): the front of its share of the
    /// next decode step, so memory keeps streaming while the caller runs the serial work between steps and while the
    /// first thread done waits for the other. Set it before the step after which it applies; it stays until replaced.
    /// </summary>
    public WarmPlan? Warmup
    {
        get => Volatile.Read(ref _warm);
        set => Volatile.Write(ref _warm, value);
    }

    public void For(int count, bool serial, Action<int> body)
    {
        if (!TryBeginStep(serial, count))
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Run(new Step(body, count));
    }

    /// <summary>
    /// Runs <paramref name="body"/>(start, count) over units [0, <paramref name="units"/>) in pieces of at most
    /// <paramref name="chunk"/> units, each unit exactly once. Thread t owns the t-th contiguous share and works
    /// through it front to back, so it reads one sequential stream (what memory-bound decode needs: a fresh
    /// stream costs a prefetcher ramp-up); a thread that has finished its share takes pieces from the back of the
    /// share with most left, so no thread idles while another still has a megabyte to go. Which thread runs a
    /// unit varies; a body that writes only its units' outputs gives the same result on any schedule.
    /// </summary>
    public void ForRanges(int units, int chunk, int minChunk, bool serial, Action<int, int> body)
    {
        if (units <= 0) return;
        if (!TryBeginStep(serial, units))
        {
            body(0, units);
            return;
        }
        Run(new RangeStep(body, units, Math.Max(1, chunk), Math.Max(1, Math.Min(chunk, minChunk)), Threads));
    }

    /// <summary>
    /// Where thread <paramref name="t"/> starts in a <see cref="ForRanges"/> step over <paramref name="units"/> on this
    /// runner, and how many units its first piece takes; (0, 0) for a thread without a share. A warm-up
    /// (<see cref="Warmup"/>) uses it to know what each thread reads first.
    /// </summary>
    public (int Front, int Count) FirstPiece(int units, int chunk, int minChunk, int t)
    {
        int shares = Math.Min(Threads, units);
        if (t >= shares) return (0, 0);
        var (front, back) = RangeStep.Share(units, shares, t);
        return (front, RangeStep.PieceSize(back - front, Math.Max(1, chunk), Math.Max(1, Math.Min(chunk, minChunk))));
    }

    /// <summary>
    /// Whether a step of <paramref name="count"/> items goes to the workers, taking _stepLock (released by
    /// <see cref="Run"/>); false means run it here: serial by request, single-threaded, one item, nested inside an
    /// item, or another caller's step in flight.
    /// </summary>
    private bool TryBeginStep(bool serial, int count)
        => !(serial || Threads == 1 || count <= 1 || t_insideItem) && Monitor.TryEnter(_stepLock);

    /// <summary>Publishes a step (the caller holds _stepLock), works on it here too, waits for every item, rethrows.</summary>
    private void Run(StepBase step)
    {
        try
        {
            StartWorkers();
            Volatile.Write(ref _step, step);
            Interlocked.Increment(ref _generation);
            int sleepers = Volatile.Read(ref _sleepers);
            if (sleepers > 0) _wake.Release(Math.Min(sleepers, Threads - 1));
            step.Work(0);
            var spin = new SpinWait();
            while (!step.Done)
                if (!_callerWarm.Advance(Volatile.Read(ref _warm), 0)) spin.SpinOnce(sleep1Threshold: -1);
        }
        finally
        {
            Volatile.Write(ref _step, null);
            Monitor.Exit(_stepLock);
        }
        if (step.Error is { } error) ExceptionDispatchInfo.Throw(error);
    }

    /// <summary>Rows per work item: about eight items per thread, at least <paramref name="minChunk"/>.</summary>
    public int ChunkSize(int rows, long work, int minChunk)
    {
        int items = Threads * 8;
        int chunk = (rows + items - 1) / items;
        return Math.Max(minChunk, chunk);
    }

    private void StartWorkers()
    {
        if (Volatile.Read(ref _workers) >= Threads - 1) return;
        lock (_workerLock)
        {
            while (_workers < Threads - 1)
            {
                _workers++;
                int id = Array.IndexOf(_idTaken, false, 1);
                _idTaken[id] = true;
                // The generation before the step being published, so that a new worker helps with that step too.
                int seen = Volatile.Read(ref _generation);
                new Thread(() => WorkerLoop(id, seen)) { IsBackground = true, Name = "lowbit-worker" }.Start();
            }
        }
    }

    /// <summary>
    /// A worker's loop; <paramref name="id"/> (1..Threads-1) picks its share of range steps and of warm-ups, and
    /// <paramref name="seen"/> is the last generation it need not work on.
    /// </summary>
    private void WorkerLoop(int id, int seen)
    {
        var warm = new WarmCursor();
        while (true)
        {
            long spinUntil = Stopwatch.GetTimestamp() + SpinTicks;
            // One pause between looks, not 30: a worker began its first piece of a 2048x2048 Q4_0 decode step 0.66 µs
            // after the caller started the step instead of 1.20 (median over 1,000 steps; ~75 steps a 1B token).
            // A look between each few prefetches of the warm-up, so a new step starts as promptly.
            while (Volatile.Read(ref _generation) == seen && Stopwatch.GetTimestamp() < spinUntil)
                if (!warm.Advance(Volatile.Read(ref _warm), id)) Thread.SpinWait(1);
            if (Volatile.Read(ref _generation) == seen)
            {
                Interlocked.Increment(ref _sleepers);
                bool woken = Volatile.Read(ref _generation) != seen || _wake.Wait(IdleExit);
                Interlocked.Decrement(ref _sleepers);
                if (!woken && Volatile.Read(ref _generation) == seen)
                {
                    lock (_workerLock)
                    {
                        // Exit unless a step started meanwhile (then keep helping; StartWorkers saw this worker).
                        if (Volatile.Read(ref _generation) == seen) { _workers--; _idTaken[id] = false; return; }
                    }
                }
                if (Volatile.Read(ref _generation) == seen) continue; // a stale wake-up
            }
            seen = Volatile.Read(ref _generation);
            if (Volatile.Read(ref _step) is { } step)
            {
                t_insideItem = true;
                try { step.Work(id); }
                finally { t_insideItem = false; }
            }
        }
    }

    private abstract class StepBase
    {
        private Exception? _error;
        private int _done;

        public Exception? Error => Volatile.Read(ref _error);

        /// <summary>Takes work until none is left (a late helper finds none and returns at once); <paramref name="id"/> is the thread's identity (0 = caller).</summary>
        public abstract void Work(int id);

        /// <summary>Whether every item has run.</summary>
        public bool Done => Volatile.Read(ref _done) >= Total;

        protected abstract int Total { get; }

        /// <summary>Runs the body on items [start, start + size).</summary>
        protected abstract void Execute(int start, int size);

        /// <summary>Runs one piece unless an earlier one failed, and counts its items done.</summary>
        protected void RunPiece(int start, int size)
        {
            if (Volatile.Read(ref _error) is null)
            {
                bool outer = t_insideItem;
                t_insideItem = true;
                try { Execute(start, size); }
                catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
                finally { t_insideItem = outer; }
            }
            Interlocked.Add(ref _done, size);
        }
    }

    private sealed class Step(Action<int> body, int count) : StepBase
    {
        private int _next = -1;

        protected override int Total => count;

        public override void Work(int id)
        {
            int i;
            while ((i = Interlocked.Increment(ref _next)) < count) RunPiece(i, 1);
        }

        protected override void Execute(int start, int size) => body(start);
    }

    private sealed class RangeStep : StepBase
    {
        // Share t's unclaimed units [front, back) packed as front | back << 32 at index 8t (one cache line each).
        private readonly long[] _shares;
        private readonly Action<int, int> _body;
        private readonly int _units, _chunk, _minChunk, _count;

        public RangeStep(Action<int, int> body, int units, int chunk, int minChunk, int shares)
        {
            _minChunk = minChunk;
            _body = body;
            _units = units;
            _chunk = chunk;
            _count = Math.Min(shares, units);
            _shares = new long[8 * _count];
            for (int t = 0; t < _count; t++)
            {
                var (front, back) = Share(units, _count, t);
                _shares[8 * t] = Pack(front, back);
            }
        }

        /// <summary>Share t of <paramref name="units"/> split in <paramref name="shares"/>: [front, back).</summary>
        public static (int Front, int Back) Share(int units, int shares, int t)
            => ((int)((long)units * t / shares), (int)((long)units * (t + 1) / shares));

        /// <summary>The next piece from a share with <paramref name="left"/> units unclaimed: a quarter of them, within [minChunk, chunk].</summary>
        public static int PieceSize(int left, int chunk, int minChunk) => Math.Min(left, Math.Clamp(left / 4, minChunk, chunk));

        protected override int Total => _units;

        protected override void Execute(int start, int size) => _body(start, size);

        private static long Pack(int front, int back) => (uint)front | (long)back << 32;

        public override void Work(int id)
        {
            // Share t is thread t's (the caller's is 0), so a warm-up knows which memory a thread reads next.
            if (id < _count)
                while (Claim(id, fromBack: false, out int start, out int size)) RunPiece(start, size);
            while (true)
            {
                // The share with most left: its back is furthest from where its owner reads.
                int victim = -1, most = 0;
                for (int t = 0; t < _count; t++)
                {
                    long v = Volatile.Read(ref _shares[8 * t]);
                    int left = (int)(v >> 32) - (int)v;
                    if (left > most) { most = left; victim = t; }
                }
                if (victim < 0) return;
                if (Claim(victim, fromBack: true, out int start, out int size)) RunPiece(start, size);
            }
        }

        private bool Claim(int t, bool fromBack, out int start, out int size)
        {
            ref long slot = ref _shares[8 * t];
            while (true)
            {
                long v = Volatile.Read(ref slot);
                int front = (int)v, back = (int)(v >> 32);
                if (front >= back) { start = size = 0; return false; }
                size = PieceSize(back - front, _chunk, _minChunk);
                start = fromBack ? back - size : front;
                long next = fromBack ? Pack(front, back - size) : Pack(front + size, back);
                if (Interlocked.CompareExchange(ref slot, next, v) == v) return true;
            }
        }
    }

    /// <summary>A thread's progress through a <see cref="WarmPlan"/>: a few prefetches a call, restarting on a new plan.</summary>
    private struct WarmCursor
    {
        private const int LinesPerCall = 16;
        private WarmPlan? _plan;
        private int _region;
        private long _offset;

        /// <summary>Prefetches the next lines of <paramref name="plan"/>'s regions for <paramref name="id"/>; false when there is nothing (more) to do.</summary>
        public unsafe bool Advance(WarmPlan? plan, int id)
        {
            if (plan is null) return false;
            if (!ReferenceEquals(plan, _plan)) { _plan = plan; _region = 0; _offset = 0; }
            var regions = plan.For(id);
            if (_region >= regions.Length || !Sse.IsSupported) return false;
            var (start, bytes) = regions[_region];
            long end = Math.Min(bytes, _offset + 64 * LinesPerCall);
            for (long o = _offset; o < end; o += 64) Sse.Prefetch1((byte*)start + o);
            _offset = end;
            if (_offset >= bytes) { _region++; _offset = 0; }
            return true;
        }
    }
}

/// <summary>
/// Memory regions per thread identity (0 = the caller) that <see cref="ParallelRunner.Warmup"/> prefetches while the
/// thread waits between steps. Immutable. <paramref name="owner"/> is what keeps the regions' memory alive (a prefetch
/// never faults, but it should not touch memory handed back either).
/// </summary>
internal sealed class WarmPlan((nint Start, long Bytes)[][] regions, object owner)
{
    public ReadOnlySpan<(nint Start, long Bytes)> For(int id) => id < regions.Length ? regions[id] : default;

    /// <summary>The memory's owner, held for as long as the plan is.</summary>
    public object Owner => owner;
}
