using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace Lowbit.Engine;

/// <summary>
/// Runs a fixed set of work items on up to <see cref="Threads"/> threads. Work items are defined
/// by the caller independently of the thread count, and each output value is written by exactly
/// one item, so results are identical for any number of threads.
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
    private Step? _step;
    private int _generation;
    private int _sleepers;
    private int _workers;

    public ParallelRunner(int threads)
    {
        Threads = Math.Max(1, threads);
    }

    public int Threads { get; }

    public void For(int count, bool serial, Action<int> body)
    {
        // Serial by request, single-threaded, nested inside an item, or another caller's step in flight: run here.
        if (serial || Threads == 1 || count <= 1 || t_insideItem || !Monitor.TryEnter(_stepLock))
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        var step = new Step(body, count);
        try
        {
            StartWorkers();
            Volatile.Write(ref _step, step);
            Interlocked.Increment(ref _generation);
            int sleepers = Volatile.Read(ref _sleepers);
            if (sleepers > 0) _wake.Release(Math.Min(sleepers, Threads - 1));
            step.Work();
            step.WaitForAll();
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
                new Thread(WorkerLoop) { IsBackground = true, Name = "lowbit-worker" }.Start();
            }
        }
    }

    private void WorkerLoop()
    {
        int seen = Volatile.Read(ref _generation);
        while (true)
        {
            long spinUntil = Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _generation) == seen && Stopwatch.GetTimestamp() < spinUntil) Thread.SpinWait(30);
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
                        if (Volatile.Read(ref _generation) == seen) { _workers--; return; }
                    }
                }
                if (Volatile.Read(ref _generation) == seen) continue; // a stale wake-up
            }
            seen = Volatile.Read(ref _generation);
            if (Volatile.Read(ref _step) is { } step)
            {
                t_insideItem = true;
                try { step.Work(); }
                finally { t_insideItem = false; }
            }
        }
    }

    private sealed class Step(Action<int> body, int count)
    {
        private int _next = -1;
        private int _done;
        private Exception? _error;

        public Exception? Error => Volatile.Read(ref _error);

        /// <summary>Takes items until none is left (a late helper finds none and returns at once).</summary>
        public void Work()
        {
            int i;
            while ((i = Interlocked.Increment(ref _next)) < count)
            {
                if (Volatile.Read(ref _error) is null)
                {
                    bool outer = t_insideItem;
                    t_insideItem = true;
                    try { body(i); }
                    catch (Exception e) { Interlocked.CompareExchange(ref _error, e, null); }
                    finally { t_insideItem = outer; }
                }
                Interlocked.Increment(ref _done);
            }
        }

        public void WaitForAll()
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _done) < count) spin.SpinOnce(sleep1Threshold: -1);
        }
    }
}
