using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Tests.Engine;

namespace Lowbit.Tests.IO;

public sealed class Llama2cReaderTests
{
    [Fact]
    public void Stories260K_loads_with_canonical_names_and_shapes()
    {
        using var m = Llama2cReader.Load(EngineTestPaths.Stories260K);
        Assert.Equal("llama2c", m.SourceFormat);
        var c = m.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.VocabSize, c.MaxPositions));
        Assert.Equal(8, c.HeadDim);
        Assert.True(c.TieEmbeddings);
        Assert.Equal(RopeStyle.Interleaved, c.Rope);
        Assert.Null(m.TryGet(TensorNames.Output));
        Assert.Equal(new long[] { 512, 64 }, m.Get(TensorNames.TokenEmbedding).Shape);
        Assert.Equal(new long[] { 32, 64 }, m.Get(TensorNames.AttnK(4)).Shape);
        Assert.Equal(new long[] { 172, 64 }, m.Get(TensorNames.FfnGate(0)).Shape);
        Assert.Equal(new long[] { 64, 172 }, m.Get(TensorNames.FfnDown(0)).Shape);
        Assert.Equal(new long[] { 64 }, m.Get(TensorNames.OutputNorm).Shape);
        Assert.Equal(2 + 9 * 5, m.Tensors.Count);
        // First value after the header is token_embd[0][0].
        var raw = File.ReadAllBytes(EngineTestPaths.Stories260K);
        Assert.Equal(BitConverter.ToSingle(raw, 28), m.Get(TensorNames.TokenEmbedding).ToFloat()[0]);
        // rms_final sits right before freq_cis (seq_len * head_size floats at the end).
        int finalOffset = raw.Length - 512 * 8 * 4 - 64 * 4;
        Assert.Equal(BitConverter.ToSingle(raw, finalOffset), m.Get(TensorNames.OutputNorm).ToFloat()[0]);
    }

    private static string TempCopy(byte[] bytes)
    {
        string p = Path.Combine(Path.GetTempPath(), $"lowbit-l2c-{Guid.NewGuid():N}.bin");
        File.WriteAllBytes(p, bytes);
        return p;
    }

    [Fact]
    public void Truncated_or_padded_files_are_rejected_with_the_expected_size()
    {
        var raw = File.ReadAllBytes(EngineTestPaths.Stories260K);
        foreach (var bytes in new[] { raw[..^4], raw.Concat(new byte[4]).ToArray(), raw[..20] })
        {
            string p = TempCopy(bytes);
            try
            {
                var e = Assert.Throws<InvalidModelFileException>(() => Llama2cReader.Load(p));
                Assert.Contains(p, e.Message);
            }
            finally { File.Delete(p); }
        }
    }

    [Fact]
    public void Negative_vocab_means_an_unshared_classifier()
    {
        var raw = File.ReadAllBytes(EngineTestPaths.Stories260K);
        var bytes = raw.Concat(new byte[512 * 64 * 4]).ToArray();
        BitConverter.GetBytes(-512).CopyTo(bytes, 20);
        BitConverter.GetBytes(1.5f).CopyTo(bytes, bytes.Length - 4);
        string p = TempCopy(bytes);
        try
        {
            using var m = Llama2cReader.Load(p);
            Assert.False(m.Config.TieEmbeddings);
            Assert.Equal(1.5f, m.Get(TensorNames.Output).ToFloat()[^1]);
        }
        finally { File.Delete(p); }
    }

    [Fact]
    public void Invalid_header_fields_are_named()
    {
        var raw = File.ReadAllBytes(EngineTestPaths.Stories260K);
        BitConverter.GetBytes(3).CopyTo(raw, 16); // n_kv_heads = 3 does not divide 8
        string p = TempCopy(raw);
        try
        {
            var e = Assert.Throws<InvalidModelFileException>(() => Llama2cReader.Load(p));
            Assert.Contains("n_kv_heads", e.Message);
        }
        finally { File.Delete(p); }
    }
}
