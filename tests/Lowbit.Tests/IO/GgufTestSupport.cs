namespace Lowbit.Tests.IO;

/// <summary>Locates the repository (the directory holding Lowbit.slnx) from the test binaries.</summary>
internal static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string TestData(params string[] parts) => Path.Combine([Root, "tests", "data", .. parts]);

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Lowbit.slnx"))) return dir.FullName;
        throw new InvalidOperationException("Lowbit.slnx not found above " + AppContext.BaseDirectory);
    }
}

/// <summary>A fresh temporary directory, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "lowbit-gguf-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Small synthetic models written through the GGUF writer, for loader tests.</summary>
internal static class TestModels
{
    public static Lowbit.Model.ModelConfig Config(string arch, int vocab = 300, int hidden = 64, int ff = 96, int layers = 2,
        int heads = 4, int kvHeads = 2, int headDim = 16, bool tied = false, bool bias = false, bool qkNorm = false) => new()
    {
        Architecture = arch,
        VocabSize = vocab,
        HiddenSize = hidden,
        IntermediateSize = ff,
        NumLayers = layers,
        NumHeads = heads,
        NumKvHeads = kvHeads,
        HeadDim = headDim,
        RmsNormEps = 1e-6f,
        RopeTheta = 500000f,
        MaxPositions = 512,
        TieEmbeddings = tied,
        AttentionBias = bias,
        QkNorm = qkNorm,
        Rope = arch is "qwen2" or "qwen3" ? Lowbit.Model.RopeStyle.NeoX : Lowbit.Model.RopeStyle.Interleaved,
    };

    /// <summary>A SentencePiece-style vocabulary: unk, bos, eos, 256 byte tokens, then word pieces.</summary>
    public static Lowbit.Model.TokenizerInfo SpmTokenizer(int vocab)
    {
        var tokens = new List<string> { "<unk>", "<s>", "</s>" };
        var types = new List<Lowbit.Model.TokenType> { Lowbit.Model.TokenType.Unknown, Lowbit.Model.TokenType.Control, Lowbit.Model.TokenType.Control };
        for (int b = 0; b < 256 && tokens.Count < vocab; b++)
        {
            tokens.Add($"<0x{b:X2}>");
            types.Add(Lowbit.Model.TokenType.Byte);
        }
        while (tokens.Count < vocab)
        {
            tokens.Add("▁w" + tokens.Count);
            types.Add(Lowbit.Model.TokenType.Normal);
        }
        return new Lowbit.Model.TokenizerInfo
        {
            Model = "llama",
            Tokens = tokens,
            Scores = Enumerable.Range(0, vocab).Select(i => -(float)i).ToArray(),
            TokenTypes = types,
            BosId = 1,
            EosId = 2,
            UnknownId = 0,
            AddBos = true,
            AddEos = false,
        };
    }

    /// <summary>A byte-level BPE vocabulary with merges (qwen style).</summary>
    public static Lowbit.Model.TokenizerInfo Gpt2Tokenizer(int vocab)
    {
        var tokens = Enumerable.Range(0, vocab - 2).Select(i => "t" + i).Append("<|endoftext|>").Append("<|im_end|>").ToArray();
        var types = tokens.Select(t => t.StartsWith("<|") ? Lowbit.Model.TokenType.Control : Lowbit.Model.TokenType.Normal).ToArray();
        return new Lowbit.Model.TokenizerInfo
        {
            Model = "gpt2",
            Tokens = tokens,
            TokenTypes = types,
            Merges = ["t 1", "t 2", "t1 0"],
            BosId = vocab - 2,
            EosId = vocab - 1,
            PaddingId = vocab - 2,
            AddBos = false,
        };
    }

    /// <summary>The tensors a model of <paramref name="c"/> has, in llama.cpp's order, row-major shapes.</summary>
    public static List<(string Name, long[] Shape)> TensorPlan(Lowbit.Model.ModelConfig c)
    {
        long h = c.HiddenSize, q = c.QDim, kv = c.KvDim, ff = c.IntermediateSize;
        var list = new List<(string, long[])> { (Lowbit.Model.TensorNames.TokenEmbedding, [c.VocabSize, h]) };
        for (int l = 0; l < c.NumLayers; l++)
        {
            list.Add((Lowbit.Model.TensorNames.AttnNorm(l), [h]));
            list.Add((Lowbit.Model.TensorNames.AttnQ(l), [q, h]));
            list.Add((Lowbit.Model.TensorNames.AttnK(l), [kv, h]));
            list.Add((Lowbit.Model.TensorNames.AttnV(l), [kv, h]));
            if (c.AttentionBias)
            {
                list.Add((Lowbit.Model.TensorNames.AttnQBias(l), [q]));
                list.Add((Lowbit.Model.TensorNames.AttnKBias(l), [kv]));
                list.Add((Lowbit.Model.TensorNames.AttnVBias(l), [kv]));
            }
            if (c.QkNorm)
            {
                list.Add((Lowbit.Model.TensorNames.AttnQNorm(l), [c.HeadDim]));
                list.Add((Lowbit.Model.TensorNames.AttnKNorm(l), [c.HeadDim]));
            }
            list.Add((Lowbit.Model.TensorNames.AttnOutput(l), [h, q]));
            list.Add((Lowbit.Model.TensorNames.FfnNorm(l), [h]));
            list.Add((Lowbit.Model.TensorNames.FfnGate(l), [ff, h]));
            list.Add((Lowbit.Model.TensorNames.FfnUp(l), [ff, h]));
            list.Add((Lowbit.Model.TensorNames.FfnDown(l), [h, ff]));
        }
        list.Add((Lowbit.Model.TensorNames.OutputNorm, [h]));
        if (!c.TieEmbeddings) list.Add((Lowbit.Model.TensorNames.Output, [c.VocabSize, h]));
        return list;
    }

    /// <summary>Deterministic pseudo-random bytes for tensor <paramref name="index"/>.</summary>
    public static byte[] TensorBytes(int index, long count)
    {
        var bytes = new byte[count];
        new Random(1000 + index).NextBytes(bytes);
        return bytes;
    }

    /// <summary>Writes a complete model GGUF with random F16 data (finite values) and returns the writer used.</summary>
    public static Lowbit.IO.GgufWriter Write(string path, Lowbit.Model.ModelConfig c, Lowbit.Model.TokenizerInfo tok,
        Lowbit.Formats.TensorCodec? codec = null, Action<Lowbit.IO.GgufWriter>? tweak = null,
        Func<List<(string Name, long[] Shape)>, IEnumerable<(string Name, long[] Shape)>>? editPlan = null)
    {
        codec ??= Lowbit.Formats.CodecRegistry.Get("f16");
        var w = new Lowbit.IO.GgufWriter();
        Lowbit.IO.GgufModelMetadata.AddTo(w.Metadata, c, tok, "test-model", Lowbit.IO.LlamaFileType.MostlyF16);
        var plan = TensorPlan(c);
        foreach (var (name, shape) in editPlan is null ? plan : editPlan(plan)) w.AddTensor(name, shape, codec);
        tweak?.Invoke(w);
        w.Write(path, (i, s) => s.Write(FiniteHalfs(i, w.Tensors[i].ByteSize)));
        return w;
    }

    public static byte[] FiniteHalfs(int index, long bytes)
    {
        var rng = new Random(index);
        var data = new byte[bytes];
        for (int i = 0; i + 1 < data.Length; i += 2)
            BitConverter.TryWriteBytes(data.AsSpan(i), (Half)(rng.NextDouble() - 0.5));
        return data;
    }
}
