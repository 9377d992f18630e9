using System.Text;
using Lowbit.Formats;
using Lowbit.IO;

namespace Lowbit.Tests.IO;

/// <summary>
/// Malformed GGUF input: every rule of the reader, each with the exact message (file, offset, what
/// was expected). Files are crafted byte by byte so each case breaks exactly one rule.
/// </summary>
public sealed class GgufValidationTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Builds GGUF bytes field by field, remembering where each field starts.</summary>
    private sealed class Raw
    {
        private readonly MemoryStream _s = new();
        public long Pos => _s.Position;

        public Raw Header(uint version = 3, ulong tensors = 0, ulong kvs = 0, string magic = "GGUF")
        {
            _s.Write(Encoding.ASCII.GetBytes(magic));
            return U32(version).U64(tensors).U64(kvs);
        }

        public Raw U8(byte v) { _s.WriteByte(v); return this; }
        public Raw U32(uint v) { _s.Write(BitConverter.GetBytes(v)); return this; }
        public Raw U64(ulong v) { _s.Write(BitConverter.GetBytes(v)); return this; }
        public Raw Bytes(byte[] b) { _s.Write(b); return this; }

        public Raw Str(string v)
        {
            var b = Encoding.UTF8.GetBytes(v);
            return U64((ulong)b.Length).Bytes(b);
        }

        public Raw Kv(string key, GgufValueType type, Action<Raw> value)
        {
            Str(key).U32((uint)type);
            value(this);
            return this;
        }

        public Raw KvU32(string key, uint v) => Kv(key, GgufValueType.UInt32, r => r.U32(v));

        public Raw Tensor(string name, ulong[] dims, uint type, ulong offset)
        {
            Str(name).U32((uint)dims.Length);
            foreach (var d in dims) U64(d);
            return U32(type).U64(offset);
        }

        public Raw PadTo(int alignment)
        {
            while (_s.Position % alignment != 0) _s.WriteByte(0);
            return this;
        }

        public Raw Zeros(int n) => Bytes(new byte[n]);
        public byte[] ToArray() => _s.ToArray();
    }

    private string Save(byte[] bytes, string name = "bad.gguf")
    {
        string path = _dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private InvalidModelFileException Rejects(byte[] bytes, long offset, string what)
    {
        string path = Save(bytes);
        var e = Assert.Throws<InvalidModelFileException>(() => GgufFile.Open(path).Dispose());
        Assert.Equal(path, e.Path);
        Assert.Equal($"{path}: at offset {offset}: {what}", e.Message);
        Assert.Equal(offset, e.Offset);
        return e;
    }

    private static byte[] ValidModelBytes(out long headerLength)
    {
        var w = new GgufWriter();
        w.Metadata.Set("general.architecture", "llama");
        w.Metadata.Set("general.name", "tiny");
        w.Metadata.Set("tokenizer.ggml.tokens", ["a", "bc", "déf"]);
        w.Metadata.Set("tokenizer.ggml.scores", [0f, -1f, -2f]);
        w.Metadata.Set("nested", new GgufArray(GgufValueType.Array, new[] { new GgufArray(GgufValueType.UInt8, new byte[] { 1, 2 }) }));
        w.AddTensor("token_embd.weight", [3, 32], GgmlType.Q8_0);
        w.AddTensor("output_norm.weight", [32], GgmlType.F32);
        headerLength = w.BuildHeader().Length;
        var ms = new MemoryStream();
        w.WriteTo(ms, (i, s) => s.Write(TestModels.TensorBytes(i, w.Tensors[i].ByteSize)));
        return ms.ToArray();
    }

    [Fact]
    public void Truncation_at_any_offset_is_reported_with_the_offset_and_never_crashes()
    {
        byte[] full = ValidModelBytes(out long headerLength);
        string path = Save(full, "full.gguf");
        using (GgufFile.Open(path)) { } // the untruncated file is valid
        var cuts = Enumerable.Range(0, (int)headerLength + 1).Concat([full.Length - 1, full.Length - 33, (int)headerLength + 50]);
        foreach (int cut in cuts.Distinct())
        {
            string p = Save(full[..cut], "cut.gguf");
            var e = Assert.Throws<InvalidModelFileException>(() => GgufFile.Open(p).Dispose());
            Assert.Equal(p, e.Path);
            Assert.True(e.Offset >= 0 && e.Offset <= cut, $"cut {cut}: offset {e.Offset}");
            Assert.True(e.Message.Contains($"file ends at {cut} bytes") || e.Message.Contains($"past the end of the file ({cut} bytes)")
                || e.Message.Contains($"is impossible: only {cut - 24} bytes follow") || e.Message.Contains("cannot fit in the")
                || e.Message.Contains("runs past the end of the file ("),
                $"cut {cut}: {e.Message}");
        }
    }

    [Fact]
    public void Truncated_fixed_field_names_what_was_being_read()
    {
        byte[] full = ValidModelBytes(out _);
        Rejects(full[..10], 8, "file ends at 10 bytes while reading the tensor count (8 bytes needed, 2 left)");
        Rejects([], 0, "file ends at 0 bytes while reading the GGUF magic (4 bytes needed, 0 left)");
    }

    [Fact]
    public void Wrong_magic_is_rejected()
    {
        Rejects(new Raw().Header(magic: "GGML").ToArray(), 0, "not a GGUF file: expected the magic bytes 47475546 (\"GGUF\"), found 47474D4C");
    }

    [Theory]
    [InlineData(1u, "GGUF version 1 is not supported (only versions 2 and 3)")]
    [InlineData(4u, "unsupported GGUF version 4; expected 2 or 3")]
    [InlineData(0x03000000u, "big-endian GGUF (version 3) is not supported; convert it to little-endian")]
    public void Unsupported_versions_are_rejected(uint version, string what)
    {
        Rejects(new Raw().Header(version: version).ToArray(), 4, what);
    }

    [Fact]
    public void Version_2_files_are_read()
    {
        string path = Save(new Raw().Header(version: 2, kvs: 1).KvU32("a", 7).ToArray());
        using var f = GgufFile.Open(path);
        Assert.Equal(2u, f.Version);
        Assert.Equal(7u, f.Metadata.GetUInt32("a"));
    }

    [Fact]
    public void Absurd_counts_are_rejected_before_allocating()
    {
        Rejects(new Raw().Header(tensors: 1UL << 60).Zeros(64).ToArray(), 8, "tensor count 1152921504606846976 is impossible: only 64 bytes follow");
        Rejects(new Raw().Header(kvs: ulong.MaxValue).Zeros(64).ToArray(), 16, "metadata count 18446744073709551615 is impossible: only 64 bytes follow");
        Rejects(new Raw().Header(tensors: 3).Zeros(95).ToArray(), 8, "tensor count 3 is impossible: only 95 bytes follow");
    }

    [Fact]
    public void Huge_string_length_is_rejected()
    {
        var bytes = new Raw().Header(kvs: 1).U64(1UL << 62).Zeros(20).ToArray();
        Rejects(bytes, 24, "string length 4611686018427387904 of the key of metadata entry 0 runs past the end of the file (20 bytes left)");
    }

    [Fact]
    public void Huge_array_length_is_rejected()
    {
        var r = new Raw().Header(kvs: 1).Str("arr").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.UInt32);
        long countAt = r.Pos;
        var bytes = r.U64(1000).Zeros(16).ToArray();
        Rejects(bytes, countAt, "metadata 'arr': array of 1000 UInt32 elements cannot fit in the 16 bytes left in the file");
    }

    [Fact]
    public void String_array_with_lying_element_length_is_rejected()
    {
        var r = new Raw().Header(kvs: 1).Str("toks").U32((uint)GgufValueType.Array).U32((uint)GgufValueType.String).U64(2).Str("ok");
        long second = r.Pos;
        var bytes = r.U64(500).Zeros(10).ToArray();
        Rejects(bytes, second, "string length 500 of element 1 of array 'toks' runs past the end of the file (10 bytes left)");
    }

    [Fact]
    public void Unknown_value_types_are_rejected()
    {
        var r = new Raw().Header(kvs: 1).Str("k");
        long at = r.Pos;
        Rejects(r.U32(13).Zeros(8).ToArray(), at, "metadata 'k' has unknown value type 13 (known: 0..12)");

        r = new Raw().Header(kvs: 1).Str("k").U32((uint)GgufValueType.Array);
        at = r.Pos;
        Rejects(r.U32(99).U64(1).Zeros(8).ToArray(), at, "metadata 'k': array has unknown element type 99 (known: 0..12)");
    }

    [Fact]
    public void Duplicate_keys_are_rejected()
    {
        var r = new Raw().Header(kvs: 2).KvU32("dup", 1);
        long at = r.Pos;
        Rejects(r.KvU32("dup", 2).ToArray(), at, "duplicate metadata key 'dup'");
    }

    [Fact]
    public void Invalid_utf8_and_bool_values_are_rejected()
    {
        var r = new Raw().Header(kvs: 1).Str("s").U32((uint)GgufValueType.String);
        long at = r.Pos + 8;
        Rejects(r.U64(2).Bytes([0xC3, 0x28]).ToArray(), at, "the value of metadata 's' is not valid UTF-8");

        r = new Raw().Header(kvs: 1).Str("b").U32((uint)GgufValueType.Bool);
        at = r.Pos;
        Rejects(r.U8(2).ToArray(), at, "metadata 'b': bool value 2; expected 0 or 1");
    }

    [Fact]
    public void Arrays_nested_too_deep_are_rejected_without_stack_overflow()
    {
        var r = new Raw().Header(kvs: 1).Str("deep").U32((uint)GgufValueType.Array);
        for (int i = 0; i < 8; i++) r.U32((uint)GgufValueType.Array).U64(1);
        long at = r.Pos;
        r.U32((uint)GgufValueType.UInt8).U64(0).Zeros(64);
        Rejects(r.ToArray(), at, "metadata 'deep': arrays nested deeper than 8 levels");
    }

    [Fact]
    public void Alignment_must_be_a_uint32_power_of_two()
    {
        var r = new Raw().Header(kvs: 1).Str("general.alignment");
        long at = r.Pos;
        Rejects(r.U32((uint)GgufValueType.UInt32).U32(48).ToArray(), at + 4, "'general.alignment' = 48 is not a power of two");

        r = new Raw().Header(kvs: 1).Str("general.alignment");
        at = r.Pos;
        Rejects(r.U32((uint)GgufValueType.Int32).U32(64).ToArray(), at, "'general.alignment' must be a UInt32, found Int32");
    }

    private static Raw OneTensor(Action<Raw> info, int dataBytes = 128)
    {
        var r = new Raw().Header(tensors: 1);
        info(r);
        return r.PadTo(32).Zeros(dataBytes);
    }

    [Fact]
    public void Unknown_and_removed_tensor_types_are_named()
    {
        var r = new Raw().Header(tensors: 1).Str("t").U32(1).U64(32);
        long at = r.Pos;
        Rejects(r.U32(99).U64(0).PadTo(32).Zeros(128).ToArray(), at, "tensor 't' has unknown ggml type id 99");

        r = new Raw().Header(tensors: 1).Str("t").U32(1).U64(32);
        at = r.Pos;
        Rejects(r.U32(4).U64(0).PadTo(32).Zeros(128).ToArray(), at, "tensor 't' has type Q4_2 (id 4), which ggml removed; requantize the model");
    }

    [Fact]
    public void Bad_dimensions_are_rejected()
    {
        Rejects(OneTensor(r => r.Tensor("t", [], 0, 0)).ToArray(), 33, "tensor 't' has 0 dimensions; expected 1 to 4");
        Rejects(OneTensor(r => r.Tensor("t", [1, 1, 1, 1, 1], 0, 0)).ToArray(), 33, "tensor 't' has 5 dimensions; expected 1 to 4");
        Rejects(OneTensor(r => r.Tensor("t", [4, 0], 0, 0)).ToArray(), 45, "tensor 't' dimension 1 is 0; expected a positive size");
        Rejects(OneTensor(r => r.Tensor("t", [ulong.MaxValue], 0, 0)).ToArray(), 37, "tensor 't' dimension 0 is 18446744073709551615; expected a positive size".Replace("18446744073709551615", "-1"));
        Rejects(OneTensor(r => r.Tensor("t", [1UL << 40, 1UL << 40], 0, 0)).ToArray(), 45, "tensor 't' element count overflows 64 bits");
        Rejects(OneTensor(r => r.Tensor("t", [1UL << 61, 2], 0, 0)).ToArray(), 33, "tensor 't' byte size overflows 64 bits");
    }

    [Fact]
    public void Row_length_must_be_a_multiple_of_the_block_size()
    {
        Rejects(OneTensor(r => r.Tensor("q", [48, 2], (uint)GgmlType.Q8_0, 0)).ToArray(), 33,
            "tensor 'q' row length 48 is not a multiple of Q8_0's block size 32");
    }

    [Fact]
    public void Tensor_names_must_be_unique_nonempty_and_fit_ggml()
    {
        var r = new Raw().Header(tensors: 2).Tensor("t", [8], 0, 0);
        long at = r.Pos;
        Rejects(r.Tensor("t", [8], 0, 32).PadTo(32).Zeros(64).ToArray(), at, "duplicate tensor name 't'");

        string longName = new('x', 64);
        Rejects(OneTensor(r2 => r2.Tensor(longName, [8], 0, 0)).ToArray(), 24, $"tensor name '{longName}' is 64 bytes; ggml allows at most 63");
        Rejects(OneTensor(r2 => r2.Tensor("", [8], 0, 0)).ToArray(), 24, "tensor 0 has an empty name");
    }

    [Fact]
    public void Misaligned_offsets_are_rejected()
    {
        var r = new Raw().Header(tensors: 1).Str("t").U32(1).U64(8).U32(0);
        long at = r.Pos;
        Rejects(r.U64(16).PadTo(32).Zeros(64).ToArray(), at, "tensor 't' data offset 16 is not a multiple of the alignment 32");
    }

    [Fact]
    public void Data_past_the_end_of_the_file_is_rejected()
    {
        // header: 24 + name(9) + n_dims(4) + dim(8) + type(4) + offset(8) = 57 -> data at 64; 64 + 32 + 32 bytes > 64 + 40
        var bytes = OneTensor(r => r.Tensor("t", [8], 0, 32), dataBytes: 40).ToArray();
        Rejects(bytes, 24, "data of tensor 't' [96, 128) runs past the end of the file (104 bytes)");
        bytes = OneTensor(r => r.Tensor("t", [8], 0, 1UL << 62), dataBytes: 40).ToArray();
        Rejects(bytes, 24, "data of tensor 't' [4611686018427387968, 4611686018427388000) runs past the end of the file (104 bytes)");
    }

    [Fact]
    public void Header_ending_beyond_the_file_for_the_data_section_is_rejected()
    {
        var bytes = new Raw().Header(tensors: 1).Tensor("t", [8], 0, 0).ToArray(); // no padding, no data
        Rejects(bytes, 57, "file ends at 57 bytes, before the tensor data section at 64");
    }

    [Fact]
    public void Overlapping_tensor_data_is_rejected()
    {
        var r = new Raw().Header(tensors: 2).Tensor("a", [16], 0, 0);
        long at = r.Pos;
        var bytes = r.Tensor("b", [8], 0, 32).PadTo(32).Zeros(128).ToArray();
        // header 24 + 2 × 33 = 90 bytes, data section at 96: a = [96, 160), b = [128, 160)
        Rejects(bytes, at, "data of tensor 'b' [128, 160) overlaps tensor 'a' [96, 160)");
    }

    [Fact]
    public void Valid_crafted_file_with_custom_alignment_is_read()
    {
        var r = new Raw().Header(tensors: 1, kvs: 1).KvU32("general.alignment", 64).Tensor("t", [8], 0, 0).PadTo(64);
        long dataAt = r.Pos;
        var bytes = r.Zeros(32).ToArray();
        string path = Save(bytes);
        using var f = GgufFile.Open(path);
        Assert.Equal(64u, f.Alignment);
        Assert.Equal(dataAt, f.DataOffset);
        Assert.Equal(32, f.GetTensorData("t").Length);
    }

    [Fact]
    public void Corrupting_any_single_header_byte_never_crashes()
    {
        // Every byte of a valid header set to 0xFF in turn: either still a valid file or a clean rejection.
        byte[] full = ValidModelBytes(out long headerLength);
        for (int i = 0; i < headerLength; i++)
        {
            var copy = (byte[])full.Clone();
            copy[i] = 0xFF;
            string p = Save(copy, "flip.gguf");
            try
            {
                using var f = GgufFile.Open(p);
            }
            catch (InvalidModelFileException e)
            {
                Assert.Equal(p, e.Path);
            }
        }
    }
}
