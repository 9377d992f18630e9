using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Methods.Calibration;
using Lowbit.Model;
using Lowbit.Tests.IO;
using Xunit;

namespace Lowbit.Tests.Cli;

/// <summary>
/// Runs the CLI in-process, so it shares Spectre.Console's process-wide console with the other in-process CLI
/// tests: serialized with them (two live progress displays at once are refused by Spectre).
/// </summary>
[Collection("Lowbit CLI")]
public sealed class ImatrixCommandTests
{
    private static string BundledModel => Path.Combine(RepoPaths.Root, "models", "refmodel-llama-6m");

    [Fact]
    public void Imatrix_command_writes_gguf_and_dat_that_read_back_to_the_collected_statistics()
    {
        using var dir = new TempDir();
        string text = dir.File("calib.txt");
        File.WriteAllText(text, string.Join(" ", Enumerable.Repeat("The quick brown fox jumps over the lazy dog near the river bank.", 60)));
        string gguf = dir.File("im.gguf"), dat = dir.File("im.dat");
        Assert.Equal(0, Lowbit.Cli.Program.Main(["imatrix", BundledModel, "--calib", text, "--ctx", "64", "--chunks", "3", "-o", gguf, "-t", "2"]));
        Assert.Equal(0, Lowbit.Cli.Program.Main(["imatrix", BundledModel, "--calib", text, "--ctx", "64", "--chunks", "3", "-o", dat, "--output-format", "dat", "-t", "2"]));

        var a = ImportanceMatrix.Read(gguf);
        var b = ImportanceMatrix.Read(dat, legacyChunkSize: 64);
        Assert.Equal(3, a.ChunkCount);
        Assert.Equal(64, a.ChunkSize);
        Assert.Equal(42, a.Entries.Count); // 7 linears × 6 blocks
        Assert.Equal([192f], a.Entries["blk.0.attn_q.weight"].Counts);
        Assert.Equal(a.Entries["blk.3.attn_q.weight"].SumSquares, a.Entries["blk.3.attn_v.weight"].SumSquares);
        Assert.Equal(768, a.Entries["blk.5.ffn_down.weight"].SumSquares.Length);

        // The same statistics collected directly through the library.
        using var model = ModelLoader.Open(BundledModel);
        var tok = Tokenizer.ForModel(model)!;
        var tokens = tok.Encode(File.ReadAllText(text), addBos: false);
        var engine = new InferenceEngine(model, new EngineOptions { Threads = 1, ContextLength = 64, QuantizedActivations = false });
        var direct = ImatrixCollector.Collect(engine, tokens, 64, 3, tok.BosId, "calib.txt");
        foreach (var (name, e) in direct.Entries)
        {
            Assert.Equal(e.SumSquares, a.Entries[name].SumSquares);
            var mean = e.MeanSquares();
            var legacy = b.Entries[name].MeanSquares();
            for (int i = 0; i < mean.Length; i++) Assert.True(Math.Abs(mean[i] - legacy[i]) <= 1e-5f * Math.Max(1e-3f, mean[i]), $"{name}[{i}]");
        }
    }

    private static string SmallText(TempDir dir)
    {
        string text = dir.File("small.txt");
        // Bundled WikiText, cut short: tokenizing the whole file would dominate these tests.
        File.WriteAllText(text, File.ReadAllText(Path.Combine(RepoPaths.Root, "data", "wikitext-2-raw", "wiki.valid.raw"))[..20000]);
        return text;
    }

    [Fact]
    public void Quantize_recipe_with_imatrix_writes_a_loadable_gguf_and_evaluates_in_memory()
    {
        using var dir = new TempDir();
        string outPath = dir.File("q4km.gguf"), text = SmallText(dir);
        Assert.Equal(0, Lowbit.Cli.Program.Main(["quantize", BundledModel, "--recipe", "q4_k_m-imatrix", "--samples", "4", "--seq-len", "64",
            "--calib", text, "-o", outPath, "--eval", "--eval-text", text, "--eval-chunks", "2", "-t", "2"]));
        using var q = ModelLoader.Open(outPath);
        Assert.Equal(CodecRegistry.Get("q4_K"), q.Get("blk.0.attn_q.weight").Codec);
        Assert.Equal(CodecRegistry.Get("q6_K"), q.Get(TensorNames.Output).Codec);
        var logits = new InferenceEngine(q, new EngineOptions { Threads = 1 }).Prefill([1, 100, 200]);
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
    }

    [Fact]
    public void Quantize_recipe_with_a_non_gguf_format_writes_nothing()
    {
        using var dir = new TempDir();
        string outPath = dir.File("never.gguf"), text = SmallText(dir);
        Assert.Equal(0, Lowbit.Cli.Program.Main(["quantize", BundledModel, "--recipe", "fp8-dynamic", "--calib", text, "-o", outPath, "-t", "2"]));
        Assert.False(File.Exists(outPath));
    }
}
