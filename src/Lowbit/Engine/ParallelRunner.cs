namespace Lowbit.Engine;

/// <summary>
/// Runs a fixed set of work items on up to <see cref="Threads"/> threads. Work items are defined
/// by the caller independently of the thread count, and each output value is written by exactly
/// one item, so results are identical for any number of threads.
/// </summary>
internal sealed class ParallelRunner
{
    private readonly ParallelOptions _options;

    public ParallelRunner(int threads)
    {
        Threads = Math.Max(1, threads);
        _options = new ParallelOptions { MaxDegreeOfParallelism = Threads };
    }

    public int Threads { get; }

    public void For(int count, bool serial, Action<int> body)
    {
        if (serial || Threads == 1 || count <= 1)
        {
            for (int i = 0; i < count; i++) body(i);
            return;
        }
        Parallel.For(0, count, _options, body);
    }

    /// <summary>Rows per work item: about eight items per thread, at least <paramref name="minChunk"/>.</summary>
    public int ChunkSize(int rows, long work, int minChunk)
    {
        int items = Threads * 8;
        int chunk = (rows + items - 1) / items;
        return Math.Max(minChunk, chunk);
    }
}
