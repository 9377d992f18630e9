using System.Buffers.Binary;
using System.Text;
using Lowbit.IO;

namespace Lowbit.Tests.IO;

public sealed class ImatrixFileTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("lowbit-imatrix");
    public void Dispose() => _dir.Delete(true);

    private static ImportanceMatrix Sample() => new(new Dictionary<string, ImatrixEntry>
    {
        ["blk.0.attn_q.weight"] = new([4f, 8f, 12f, 16f], [2f]),
        ["blk.0.ffn_down.weight"] = new([1f, 3f], [1f]),
    }, ["wiki.valid.raw"], 3, 512);

    [Fact]
    public void Gguf_layout_round_trips_and_gives_mean_squares()
    {
        var path = Path.Combine(_dir.FullName, "i.gguf");
        Sample().WriteGguf(path);
        var m = ImportanceMatrix.Read(path);
        Assert.Equal(new[] { 2f, 4f, 6f, 8f }, m.For("blk.0.attn_q.weight").ToArray());
        Assert.Equal(3, m.ChunkCount);
        Assert.Equal(512, m.ChunkSize);
        Assert.Equal(["wiki.valid.raw"], m.Datasets);
        Assert.True(m.For("missing").IsEmpty);
        using var f = GgufFile.Open(path);
        Assert.Equal("imatrix", f.Metadata.GetString("general.type"));
        Assert.Equal(new long[] { 4, 1 }, f.GetTensor("blk.0.attn_q.weight.in_sum2").Dimensions);
        Assert.Equal(new long[] { 1, 1 }, f.GetTensor("blk.0.attn_q.weight.counts").Dimensions);
    }

    [Fact]
    public void Legacy_layout_round_trips_mean_squares()
    {
        var path = Path.Combine(_dir.FullName, "i.dat");
        Sample().WriteLegacy(path);
        // Hand-check the layout: entry count, then the first (sorted) entry's name.
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(2, BinaryPrimitives.ReadInt32LittleEndian(bytes));
        int len = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4));
        Assert.Equal("blk.0.attn_q.weight", Encoding.UTF8.GetString(bytes, 8, len));
        var m = ImportanceMatrix.Read(path);
        var got = m.For("blk.0.attn_q.weight").ToArray();
        Assert.Equal(new[] { 2f, 4f, 6f, 8f }, got);
        Assert.Equal("wiki.valid.raw", Assert.Single(m.Datasets));
    }

    [Fact]
    public void Truncated_legacy_file_is_a_clear_error()
    {
        var path = Path.Combine(_dir.FullName, "t.dat");
        Sample().WriteLegacy(path);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..30]);
        var e = Assert.Throws<InvalidModelFileException>(() => ImportanceMatrix.Read(path));
        Assert.Contains("t.dat", e.Message);
    }
}
