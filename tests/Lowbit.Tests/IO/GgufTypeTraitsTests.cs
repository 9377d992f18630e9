using Lowbit.Formats;
using Lowbit.IO;

namespace Lowbit.Tests.IO;

public sealed class GgufTypeTraitsTests
{
    [Fact]
    public void Block_geometry_matches_the_byte_counts_ggml_produced_for_every_golden_case()
    {
        var lines = File.ReadAllLines(RepoPaths.TestData("ggml-golden", "manifest.tsv")).Skip(1).Where(l => l.Length > 0).ToList();
        Assert.NotEmpty(lines);
        foreach (var line in lines)
        {
            var f = line.Split('\t'); // case nrows n_per_row type type_id imatrix bytes ...
            long rows = long.Parse(f[1]), cols = long.Parse(f[2]), bytes = long.Parse(f[6]);
            var type = (GgmlType)uint.Parse(f[4]);
            Assert.True(GgmlTypeTraits.TryGet(type, out _, out _), $"{f[3]} unknown");
            Assert.Equal(bytes, GgmlTypeTraits.TensorBytes(type, [cols, rows]));
        }
    }

    [Fact]
    public void Registered_codecs_agree_with_ggml_geometry()
    {
        foreach (var codec in CodecRegistry.Codecs.Where(c => c.Ggml is not null))
        {
            Assert.True(GgmlTypeTraits.TryGet(codec.Ggml!.Value, out int bs, out int ts), codec.Name);
            Assert.Equal((bs, ts), (codec.BlockSize, codec.BlockBytes));
        }
    }

    [Fact]
    public void Removed_type_ids_are_unknown_but_named()
    {
        foreach (uint id in new uint[] { 4, 5, 31, 32, 33, 36, 37, 38 })
        {
            Assert.False(GgmlTypeTraits.TryGet((GgmlType)id, out _, out _));
            Assert.NotNull(GgmlTypeTraits.RemovedTypeName(id));
        }
    }
}
