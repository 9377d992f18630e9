using Lowbit.Engine;
using Lowbit.Formats;
using Xunit;

namespace Lowbit.Tests.Engine;

/// <summary>The arena that places the engine's decode copies: pieces in order, aligned, disjoint, and kept alive.</summary>
public sealed unsafe class NativeArenaTests
{
    [Fact]
    public void Pieces_follow_one_another_64_byte_aligned_and_hold_what_was_written()
    {
        var arena = new NativeArena();
        long[] lengths = [100, 64, 1, 4096 + 3, 2 << 20, 7];
        var pieces = lengths.Select(arena.Allocate).ToArray();
        for (int i = 0; i < pieces.Length; i++)
        {
            Assert.Equal(lengths[i], pieces[i].Length);
            Assert.Equal(0, (long)pieces[i].Pointer % 64);
            if (i > 0) Assert.Equal((nint)pieces[i - 1].Pointer + (nint)((lengths[i - 1] + 63) & ~63L), (nint)pieces[i].Pointer);
            new Span<byte>(pieces[i].Pointer, (int)lengths[i]).Fill((byte)(i + 1));
        }
        // No piece overwrote another.
        for (int i = 0; i < pieces.Length; i++)
            Assert.True(new Span<byte>(pieces[i].Pointer, (int)lengths[i]).IndexOfAnyExcept((byte)(i + 1)) < 0, $"piece {i} was overwritten");
    }

    [Fact]
    public void A_full_chunk_starts_a_new_one_and_a_larger_request_gets_a_chunk_of_its_own()
    {
        var arena = new NativeArena();
        var first = arena.Allocate(NativeArena.ChunkBytes - 64);
        var next = arena.Allocate(128); // does not fit in the first chunk's last 64 bytes
        Assert.Equal(0, next.Offset);
        Assert.NotEqual((nint)first.Pointer + (nint)(NativeArena.ChunkBytes - 64), (nint)next.Pointer);
        var large = arena.Allocate(NativeArena.ChunkBytes + 5);
        Assert.Equal(0, large.Offset);
        Assert.Equal(0, (long)large.Pointer % NativeBuffer.HugePage); // huge-page aligned, so every full 2 MiB of it can be a huge page
        large.Pointer[NativeArena.ChunkBytes + 4] = 42;   // its last byte is in bounds
        Assert.Equal(42, large.Pointer[NativeArena.ChunkBytes + 4]);
    }

    [Fact]
    public void Engine_places_the_decode_copies_of_a_layer_back_to_back()
    {
        var model = SyntheticModel.Create(SyntheticModel.Tiny6MLike(), CodecRegistry.Get("q4_0"));
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 1, ContextLength = 16 });
        var (regions, pins) = engine.DecodeWeightMemory();
        try
        {
            // Seven matrices a layer, then the head; within the layers each copy starts where the previous one ended.
            Assert.Equal(7 * model.Config.NumLayers + 1, regions.Count);
            for (int i = 1; i < 7 * model.Config.NumLayers; i++)
                Assert.Equal(regions[i - 1].Pointer + (nint)((regions[i - 1].Length + 63) & ~63L), regions[i].Pointer);
        }
        finally
        {
            foreach (var p in pins) p.Dispose();
        }
    }
}
