using Lowbit.IO;

namespace Lowbit.Tests.IO;

/// <summary>The reader on GGUF files written by llama.cpp's own tools.</summary>
public sealed class GgufLlamaCppFileTests
{
    private static readonly string SpmPath = RepoPaths.TestData("gguf", "ggml-vocab-llama-spm.gguf");
    private static readonly string Gpt2Path = RepoPaths.TestData("gguf", "ggml-vocab-gpt-2.gguf");

    [Fact]
    public void Llama_spm_vocab_file_parses_with_typed_tokenizer_metadata()
    {
        using var f = GgufFile.Open(SpmPath);
        Assert.Equal(3u, f.Version);
        Assert.Equal(32u, f.Alignment);
        Assert.Empty(f.Tensors);
        Assert.Equal("llama", f.Metadata.GetString("general.architecture"));
        Assert.Equal("llama", f.Metadata.GetString("tokenizer.ggml.model"));
        var tokens = f.Metadata.GetArray<string>("tokenizer.ggml.tokens");
        Assert.Equal(32000, tokens.Length);
        Assert.Equal(["<unk>", "<s>", "</s>", "<0x00>"], tokens[..4]);
        Assert.Equal(32000, f.Metadata.GetArray<float>("tokenizer.ggml.scores").Length);
        var types = f.Metadata.GetArray<int>("tokenizer.ggml.token_type");
        Assert.Equal([2, 3, 3, 6], types[..4]); // unknown, control, control, byte
        Assert.Equal(1u, f.Metadata.GetUInt32("tokenizer.ggml.bos_token_id"));
        Assert.Equal(2u, f.Metadata.GetUInt32("tokenizer.ggml.eos_token_id"));
    }

    [Fact]
    public void Gpt2_vocab_file_parses_with_merges()
    {
        using var f = GgufFile.Open(Gpt2Path);
        Assert.Equal("gpt2", f.Metadata.GetString("tokenizer.ggml.model"));
        var tokens = f.Metadata.GetArray<string>("tokenizer.ggml.tokens");
        Assert.Equal(50257, tokens.Length);
        var merges = f.Metadata.GetArray<string>("tokenizer.ggml.merges");
        Assert.Equal(50000, merges.Length);
        Assert.Equal("Ġ t", merges[0]);
    }

    [Theory]
    [InlineData("ggml-vocab-llama-spm.gguf")]
    [InlineData("ggml-vocab-gpt-2.gguf")]
    public void Rewriting_a_llama_cpp_file_reproduces_it_byte_for_byte(string name)
    {
        string path = RepoPaths.TestData("gguf", name);
        using var f = GgufFile.Open(path);
        var w = GgufWriter.CopyOf(f);
        var ms = new MemoryStream();
        w.WriteTo(ms, (i, s) => s.Write(f.GetTensorData(f.Tensors[i]).Span));
        Assert.Equal(File.ReadAllBytes(path), ms.ToArray());
    }
}
