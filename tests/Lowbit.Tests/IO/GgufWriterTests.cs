using Lowbit.Formats;
using Lowbit.IO;

namespace Lowbit.Tests.IO;

public sealed class GgufWriterTests
{
    private static GgufWriter WriterWithEveryValueType(uint alignment = 32)
    {
        var w = new GgufWriter(alignment);
        var m = w.Metadata;
        m.Set("general.architecture", "llama");
        m.Set("t.u8", (byte)200);
        m.Set("t.i8", (sbyte)-100);
        m.Set("t.u16", (ushort)60000);
        m.Set("t.i16", (short)-30000);
        m.Set("t.u32", 4_000_000_000u);
        m.Set("t.i32", -2_000_000_000);
        m.Set("t.f32", 3.25f);
        m.Set("t.bool", true);
        m.Set("t.str", "héllo ▁ wörld 🦙");
        m.Set("t.u64", ulong.MaxValue);
        m.Set("t.i64", long.MinValue);
        m.Set("t.f64", Math.PI);
        m.Set("t.empty", "");
        m.Set("a.str", ["a", "", "ü"]);
        m.Set("a.f32", [1.5f, float.NaN, -0f]);
        m.Set("a.i32", [1, -2, 3]);
        m.Set("a.u8", new byte[] { 1, 2, 255 });
        m.Set("a.bool", [true, false, true]);
        m.Set("a.f64", [double.Epsilon, -1e300]);
        m.Set("a.u64", [0UL, ulong.MaxValue]);
        m.Set("a.empty", Array.Empty<int>());
        m.Set("a.nested", new GgufArray(GgufValueType.Array, new[]
        {
            new GgufArray(GgufValueType.Int16, new short[] { 1, -1 }),
            new GgufArray(GgufValueType.String, new[] { "x", "yz" }),
            new GgufArray(GgufValueType.Array, new[] { new GgufArray(GgufValueType.UInt16, new ushort[] { 7 }) }),
        }));
        w.AddTensor("tok", [3, 64], CodecRegistry.Get("f32"));      // 768 bytes
        w.AddTensor("norm", [5], GgmlType.F32);                      // 20 bytes -> padded
        w.AddTensor("w.bf16", [2, 2, 32], CodecRegistry.Get("bf16")); // 3-D
        w.AddTensor("q", [4, 64], GgmlType.Q4_0);                    // 4 rows x 2 blocks x 18 bytes
        return w;
    }

    private static void WriteRandom(GgufWriter w, string path) =>
        w.Write(path, (i, s) => s.Write(TestModels.TensorBytes(i, w.Tensors[i].ByteSize)));

    [Fact]
    public void Metadata_of_every_value_type_and_tensor_bytes_read_back_identically()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        string path = dir.File("all.gguf");
        WriteRandom(w, path);

        using var f = GgufFile.Open(path);
        Assert.Equal(3u, f.Version);
        Assert.Equal(w.Metadata.Entries.Select(e => e.Key), f.Metadata.Keys);
        foreach (var (written, read) in w.Metadata.Entries.Zip(f.Metadata.Entries))
        {
            Assert.Equal(written.Type, read.Type);
            if (written.Value is GgufArray) Assert.Equal(written.Value, read.Value);
            else Assert.Equal(written.Value, read.Value);
        }
        Assert.Equal("héllo ▁ wörld 🦙", f.Metadata.GetString("t.str"));
        Assert.Equal(ulong.MaxValue, f.Metadata.GetUInt64("t.u64"));
        Assert.True(float.IsNaN(f.Metadata.GetArray<float>("a.f32")[1]));
        var nested = f.Metadata.GetArray<GgufArray>("a.nested");
        Assert.Equal(new[] { "x", "yz" }, nested[1].As<string>());
        Assert.Equal(new ushort[] { 7 }, nested[2].As<GgufArray>()[0].As<ushort>());

        Assert.Equal(["tok", "norm", "w.bf16", "q"], f.Tensors.Select(t => t.Name));
        Assert.Equal([32L, 2, 2], f.Tensors[2].Dimensions);
        Assert.Equal([2L, 2, 32], f.Tensors[2].ShapeRowMajor);
        Assert.Equal(GgmlType.Q4_0, f.Tensors[3].Type);
        Assert.Equal(4 * 2 * 18, f.Tensors[3].ByteSize);
        for (int i = 0; i < f.Tensors.Count; i++)
        {
            var t = f.Tensors[i];
            Assert.Equal(0, t.DataOffset % 32);
            Assert.Equal(w.Tensors[i].Offset, t.Offset);
            Assert.Equal(TestModels.TensorBytes(i, t.ByteSize), f.GetTensorData(t).ToArray());
        }
        Assert.Equal(0, f.FileLength % 32); // the last tensor is padded too, like llama.cpp's writer
    }

    [Theory]
    [InlineData(32u)]
    [InlineData(64u)]
    [InlineData(1u)]
    public void Write_read_write_gives_identical_bytes(uint alignment)
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType(alignment);
        string first = dir.File("first.gguf"), second = dir.File("second.gguf");
        WriteRandom(w, first);
        using (var f = GgufFile.Open(first))
        {
            Assert.Equal(alignment, f.Alignment);
            var copy = GgufWriter.CopyOf(f);
            copy.Write(second, (i, s) => s.Write(f.GetTensorData(f.Tensors[i]).Span));
        }
        Assert.Equal(File.ReadAllBytes(first), File.ReadAllBytes(second));
    }

    [Fact]
    public void Progress_is_reported_after_each_tensor_ending_at_the_file_size()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        var reports = new List<GgufWriteProgress>();
        string path = dir.File("p.gguf");
        w.Write(path, (i, s) => s.Write(new byte[w.Tensors[i].ByteSize]), new SyncProgress(reports.Add));
        Assert.Equal([1, 2, 3, 4], reports.Select(r => r.TensorsWritten));
        Assert.Equal(new FileInfo(path).Length, reports[^1].BytesWritten);
        Assert.Equal(reports[^1].TotalBytes, reports[^1].BytesWritten);
    }

    [Fact]
    public void A_callback_writing_too_few_bytes_fails_and_leaves_no_file()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        string path = dir.File("short.gguf");
        var e = Assert.Throws<LowbitException>(() =>
            w.Write(path, (i, s) => s.Write(new byte[w.Tensors[i].ByteSize - (i == 2 ? 1 : 0)])));
        Assert.Equal("tensor 'w.bf16': the data writer produced 255 bytes, expected 256", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void A_callback_writing_too_many_bytes_is_stopped_before_corrupting_the_next_tensor()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        string path = dir.File("long.gguf");
        var e = Assert.Throws<LowbitException>(() =>
            w.Write(path, (i, s) => s.Write(new byte[w.Tensors[i].ByteSize + 1])));
        Assert.Equal("tensor 'tok': the data writer produced more than the declared 768 bytes", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void A_throwing_callback_leaves_no_partial_file_and_keeps_the_previous_output()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        string path = dir.File("out.gguf");
        File.WriteAllText(path, "previous content");
        var e = Assert.Throws<InvalidOperationException>(() => w.Write(path, (i, s) =>
        {
            if (i == 3) throw new InvalidOperationException("quantizer failed");
            s.Write(new byte[w.Tensors[i].ByteSize]);
        }));
        Assert.Equal("quantizer failed", e.Message);
        Assert.Equal("previous content", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Cancellation_leaves_no_file()
    {
        using var dir = new TempDir();
        var w = WriterWithEveryValueType();
        using var cts = new CancellationTokenSource();
        string path = dir.File("cancel.gguf");
        Assert.ThrowsAny<OperationCanceledException>(() => w.Write(path, (i, s) =>
        {
            if (i == 1) cts.Cancel();
            s.Write(new byte[w.Tensors[i].ByteSize]);
        }, cancellationToken: cts.Token));
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Refuses_to_overwrite_an_input_path()
    {
        using var dir = new TempDir();
        string input = dir.File("model.gguf");
        File.WriteAllText(input, "the model");
        var w = WriterWithEveryValueType();
        var e = Assert.Throws<LowbitException>(() =>
            w.Write(Path.Combine(dir.Path, ".", "model.gguf"), (i, s) => s.Write(new byte[w.Tensors[i].ByteSize]),
                inputsNeverToOverwrite: [input]));
        Assert.Contains("refusing to overwrite the input file", e.Message);
        Assert.Equal("the model", File.ReadAllText(input));
    }

    [Fact]
    public void Shapes_are_stored_innermost_first_like_ggml()
    {
        var w = new GgufWriter();
        w.AddTensor("m", [3, 64], GgmlType.F32);
        byte[] h = w.BuildHeader();
        // header: magic, version, counts (24 bytes), no metadata, then name (8 + 1), n_dims, dims...
        Assert.Equal(2u, BitConverter.ToUInt32(h, 24 + 9));
        Assert.Equal(64L, BitConverter.ToInt64(h, 24 + 13));
        Assert.Equal(3L, BitConverter.ToInt64(h, 24 + 21));
        Assert.Equal(96, h.Length); // 65 bytes (…, type, offset) padded to a multiple of 32
    }

    [Fact]
    public void Invalid_tensors_are_refused_when_added()
    {
        var w = new GgufWriter();
        w.AddTensor("a", [4, 32], GgmlType.Q8_0);
        Assert.Equal("tensor 'a' was added twice",
            Assert.Throws<LowbitException>(() => w.AddTensor("a", [4, 32], GgmlType.Q8_0)).Message);
        Assert.Equal("tensor 'b': row length 48 is not a multiple of Q8_0's block size 32",
            Assert.Throws<LowbitException>(() => w.AddTensor("b", [4, 48], GgmlType.Q8_0)).Message);
        Assert.Equal("tensor '" + new string('n', 64) + "' is 64 bytes; GGUF (ggml) allows at most 63",
            Assert.Throws<LowbitException>(() => w.AddTensor(new string('n', 64), [1], GgmlType.F32)).Message.Replace("tensor name", "tensor"));
        Assert.Equal("tensor 'c' has 5 dimensions; GGUF allows 1 to 4",
            Assert.Throws<LowbitException>(() => w.AddTensor("c", [1, 1, 1, 1, 1], GgmlType.F32)).Message);
        Assert.Equal("tensor 'd' has a dimension of 0; sizes must be positive",
            Assert.Throws<LowbitException>(() => w.AddTensor("d", [0, 32], GgmlType.F32)).Message);
        Assert.Single(w.Tensors);
    }

    [Fact]
    public void Alignment_metadata_must_agree_with_the_writer()
    {
        var w = new GgufWriter(64);
        Assert.Equal(64u, w.Metadata.GetUInt32("general.alignment"));
        w.Metadata.Set("general.alignment", 128u);
        Assert.Throws<LowbitException>(() => w.BuildHeader());
    }

    private sealed class SyncProgress(Action<GgufWriteProgress> report) : IProgress<GgufWriteProgress>
    {
        public void Report(GgufWriteProgress value) => report(value);
    }
}
