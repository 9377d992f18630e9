using Lowbit.Engine;
using Xunit;

namespace Lowbit.Tests.Engine;

/// <summary>The runner's range steps: every unit exactly once, whatever the threads, pieces and stealing.</summary>
public sealed class ParallelRunnerTests
{
    [Theory]
    [InlineData(1, 1000, 64, 8)]
    [InlineData(2, 1000, 64, 8)]
    [InlineData(2, 7, 100, 100)]   // pieces larger than a share
    [InlineData(3, 1001, 10, 1)]
    [InlineData(4, 5, 1, 1)]       // more threads than units would need
    [InlineData(2, 1, 4, 2)]
    public void Ranges_run_every_unit_exactly_once(int threads, int units, int chunk, int minChunk)
    {
        var runner = new ParallelRunner(threads);
        for (int round = 0; round < 20; round++)
        {
            var hits = new int[units];
            runner.ForRanges(units, chunk, minChunk, serial: false, (start, count) =>
            {
                Assert.InRange(count, 1, threads == 1 || units == 1 ? units : chunk); // one thread: the whole range at once
                // Uneven work, so that threads finish their shares at different times and take from others.
                if ((start + round) % 3 == 0) Thread.SpinWait(2000);
                for (int u = start; u < start + count; u++) Interlocked.Increment(ref hits[u]);
            });
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void Pieces_shrink_toward_the_minimum_as_a_share_runs_out()
    {
        var runner = new ParallelRunner(1);
        var sizes = new List<int>();
        // One thread: serial, the whole range at once (no pieces to schedule).
        runner.ForRanges(100, 16, 4, serial: false, (start, count) => sizes.Add(count));
        Assert.Equal([100], sizes);

        var two = new ParallelRunner(2);
        var seen = new System.Collections.Concurrent.ConcurrentBag<int>();
        two.ForRanges(1000, 64, 4, serial: false, (start, count) => seen.Add(count));
        Assert.Equal(1000, seen.Sum());
        Assert.Contains(64, seen);          // large pieces while much is left
        Assert.Contains(seen, c => c <= 8); // small ones at the end of a share
    }

    [Fact]
    public void A_failing_piece_is_rethrown_and_the_runner_stays_usable()
    {
        var runner = new ParallelRunner(2);
        var e = Assert.Throws<InvalidOperationException>(() =>
            runner.ForRanges(100, 8, 2, serial: false, (start, count) => { if (start <= 50 && 50 < start + count) throw new InvalidOperationException("piece 50"); }));
        Assert.Equal("piece 50", e.Message);
        int total = 0;
        runner.ForRanges(100, 8, 2, serial: false, (start, count) => Interlocked.Add(ref total, count));
        Assert.Equal(100, total);
    }

    [Fact]
    public void A_step_started_inside_a_piece_runs_inline()
    {
        var runner = new ParallelRunner(2);
        int inner = 0, pieces = 0;
        runner.ForRanges(10, 2, 1, serial: false, (start, count) =>
        {
            Interlocked.Increment(ref pieces);
            runner.For(3, serial: false, _ => Interlocked.Increment(ref inner));
        });
        Assert.Equal(3 * pieces, inner);
    }
}
