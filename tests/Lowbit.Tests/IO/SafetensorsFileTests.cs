using System.Text.Json;
using Lowbit.IO;
using static Lowbit.Tests.IO.HfTestFiles;

namespace Lowbit.Tests.IO;

public sealed class SafetensorsFileTests
{
    private static InvalidModelFileException OpenFails(TempDir dir, string header, byte[] data, long? headerLength = null)
    {
        string path = dir.File("bad.safetensors");
        WriteRaw(path, header, data, headerLength);
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Equal(path, e.Path);
        return e;
    }

    private static string Entry(string dtype, string shape, long start, long end) =>
        $"{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{start},{end}]}}";

    [Fact]
    public void Reads_valid_file_with_metadata_and_zero_copy_views()
    {
        using var dir = new TempDir();
        string path = dir.File("ok.safetensors");
        WriteRaw(path, "{\"__metadata__\":{\"format\":\"pt\"},\"a\":" + Entry("F32", "[2]", 0, 8) + ",\"b\":" + Entry("BF16", "[1,2]", 8, 12) + "}",
            [0, 0, 128, 63, 0, 0, 0, 64, 1, 2, 3, 4]);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal("pt", f.Metadata["format"]);
        Assert.Equal(["a", "b"], f.Tensors.Select(t => t.Name));
        var a = f.Get("a");
        Assert.Equal(SafetensorsDType.F32, a.DType);
        Assert.Equal([1f, 2f], System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(f.GetData(a).Span).ToArray());
        Assert.Equal([1, 2, 3, 4], f.GetData(f.Get("b")).ToArray());
        Assert.Equal([1L, 2L], f.Get("b").Shape);
    }

    [Fact]
    public void Bundled_model_opens_with_all_tensors()
    {
        using var f = SafetensorsFile.Open(Path.Combine(RefModelDir, "model.safetensors"));
        Assert.Equal(57, f.Tensors.Count);
        Assert.All(f.Tensors, t => Assert.Equal(SafetensorsDType.BF16, t.DType));
    }

    [Fact]
    public void Rejects_file_shorter_than_header_length_field()
    {
        using var dir = new TempDir();
        string path = dir.File("short.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsFile.Open(path));
        Assert.Contains("shorter than the 8-byte", e.Message);
    }

    [Fact]
    public void Rejects_header_length_past_end_of_file()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{}", [], headerLength: 1000);
        Assert.Contains("runs past the end of the file", e.Message);
    }

    [Fact]
    public void Rejects_absurd_header_length()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{}", [], headerLength: long.MaxValue);
        Assert.Contains("absurd", e.Message);
    }

    [Fact]
    public void Rejects_header_that_is_not_utf8()
    {
        using var dir = new TempDir();
        string path = dir.File("bad.safetensors");
        byte[] header = [(byte)'{', (byte)'"', 0xff, 0xfe, (byte)'"', (byte)':', (byte)'1', (byte)'}'];
        File.WriteAllBytes(path, [.. BitConverter.GetBytes((long)header.Length), .. header]);
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsFile.Open(path));
        Assert.Contains("UTF-8", e.Message);
    }

    [Theory]
    [InlineData("{\"a\": ", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object")]
    [InlineData("{\"a\": 5}", "entry must be an object")]
    [InlineData("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", "missing string field \"dtype\"")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", "missing array field \"shape\"")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", "missing array field \"data_offsets\"")]
    [InlineData("{\"a\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 4]}}", "unknown dtype 'Q4'")]
    [InlineData("{\"a\": {\"dtype\": \"1\", \"shape\": [1], \"data_offsets\": [0, 4]}}", "unknown dtype '1'")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "negative")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", "not an integer")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 4]}}", "overflows")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", "2 entries")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", "end before they start")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", "needs 8")]
    [InlineData("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "twice")]
    [InlineData("{\"__metadata__\": {\"k\": 1}, \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", "must be a string")]
    public void Rejects_malformed_headers(string header, string expected)
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, header, new byte[8]);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Rejects_range_past_end_of_data()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{\"a\":" + Entry("F32", "[4]", 0, 16) + "}", new byte[8]);
        Assert.Contains("past the end of the data section", e.Message);
    }

    [Fact]
    public void Rejects_overlapping_ranges()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{\"a\":" + Entry("F32", "[2]", 0, 8) + ",\"b\":" + Entry("F32", "[2]", 4, 12) + "}", new byte[12]);
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void Rejects_holes_in_the_buffer()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{\"a\":" + Entry("F32", "[1]", 0, 4) + ",\"b\":" + Entry("F32", "[1]", 8, 12) + "}", new byte[12]);
        Assert.Contains("hole of 4", e.Message);
    }

    [Fact]
    public void Rejects_trailing_bytes()
    {
        using var dir = new TempDir();
        var e = OpenFails(dir, "{\"a\":" + Entry("F32", "[1]", 0, 4) + "}", new byte[6]);
        Assert.Contains("2 trailing bytes", e.Message);
    }

    [Fact]
    public void Accepts_zero_sized_tensors_and_scalars()
    {
        using var dir = new TempDir();
        string path = dir.File("z.safetensors");
        WriteRaw(path, "{\"e\":" + Entry("F16", "[0, 3]", 0, 0) + ",\"s\":" + Entry("F32", "[]", 0, 4) + "}", new byte[4]);
        using var f = SafetensorsFile.Open(path);
        Assert.Equal(0, f.Get("e").ByteLength);
        Assert.Equal(1, f.Get("s").ElementCount);
    }

    [Fact]
    public void Sharded_index_maps_tensors_to_their_shards()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [2], [1, 2]));
        WriteF32(dir.File("s2.safetensors"), ("y", [1], [3]), ("z", [1], [4]));
        WriteIndex(dir, new() { ["x"] = "s1.safetensors", ["y"] = "s2.safetensors", ["z"] = "s2.safetensors" });
        using var set = SafetensorsSet.Open(dir.Path);
        Assert.Equal(["x", "y", "z"], set.TensorNames);
        var z = set.TryGet("z")!.Value;
        Assert.EndsWith("s2.safetensors", z.File.Path);
        Assert.Equal(4f, BitConverter.ToSingle(z.File.GetData(z.Tensor).Span));
    }

    private static void WriteIndex(TempDir dir, Dictionary<string, string> map, string? rawJson = null) =>
        File.WriteAllText(dir.File(SafetensorsSet.IndexFileName), rawJson ?? JsonSerializer.Serialize(new { metadata = new { }, weight_map = map }));

    [Fact]
    public void Sharded_index_rejects_missing_shard()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [1], [1]));
        WriteIndex(dir, new() { ["x"] = "s1.safetensors", ["y"] = "gone.safetensors" });
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path));
        Assert.Contains("shard 'gone.safetensors'", e.Message);
    }

    [Fact]
    public void Sharded_index_rejects_tensor_not_in_its_shard()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [1], [1]));
        WriteF32(dir.File("s2.safetensors"), ("y", [1], [1]));
        WriteIndex(dir, new() { ["x"] = "s1.safetensors", ["y"] = "s1.safetensors" });
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path));
        Assert.Contains("puts tensor 'y' in 's1.safetensors', which does not contain it", e.Message);
    }

    [Fact]
    public void Sharded_index_rejects_tensor_in_two_shards()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [1], [1]));
        WriteF32(dir.File("s2.safetensors"), ("x", [1], [1]), ("y", [1], [2]));
        WriteIndex(dir, new() { ["x"] = "s1.safetensors", ["y"] = "s2.safetensors" });
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path));
        Assert.Contains("tensor 'x' is in both", e.Message);
    }

    [Fact]
    public void Sharded_index_rejects_duplicate_entries_and_path_escapes()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [1], [1]));
        WriteIndex(dir, [], "{\"weight_map\": {\"x\": \"s1.safetensors\", \"x\": \"s1.safetensors\"}}");
        Assert.Contains("more than once", Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path)).Message);
        WriteIndex(dir, new() { ["x"] = "../s1.safetensors" });
        Assert.Contains("not a plain file name", Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path)).Message);
        WriteIndex(dir, [], "{\"nope\": 1}");
        Assert.Contains("weight_map", Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path)).Message);
    }

    [Fact]
    public void Sharded_index_rejects_unlisted_tensor_in_shard()
    {
        using var dir = new TempDir();
        WriteF32(dir.File("s1.safetensors"), ("x", [1], [1]), ("extra", [1], [1]));
        WriteIndex(dir, new() { ["x"] = "s1.safetensors" });
        var e = Assert.Throws<InvalidModelFileException>(() => SafetensorsSet.Open(dir.Path));
        Assert.Contains("'extra', which weight_map does not list", e.Message);
    }
}
