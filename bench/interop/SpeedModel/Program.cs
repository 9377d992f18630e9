using System.Globalization;
using Lowbit;
using Lowbit.Engine;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Pipeline;
using Lowbit.Recipes;

// usage: SpeedModel <format: q4_0|q8_0|q4_K|f16> <out.gguf> [layers] [threads]
// Writes SyntheticModel.Llama1BLike(vocab 32000) with seeded random weights, every matrix (token_embd
// included, tied output) in the given format and the norms in f32, with a placeholder SentencePiece-style
// vocabulary (<unk>, <s>, </s>, 256 byte tokens, filler pieces) — enough for llama.cpp to load it. The
// text is meaningless; the file exists only to time both engines on identical bytes.
try
{
    if (args.Length < 2) throw new LowbitException("usage: SpeedModel <q4_0|q8_0|q4_K|f16> <out.gguf> [layers] [threads]");
    var codec = CodecRegistry.Get(args[0]);
    int layers = args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 16;
    int threads = args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : Environment.ProcessorCount;
    var fileType = codec.Name switch
    {
        "q4_0" => LlamaFileType.MostlyQ4_0,
        "q8_0" => LlamaFileType.MostlyQ8_0,
        "q4_K" => LlamaFileType.MostlyQ4_K_S, // every matrix q4_K: llama.cpp's name for the pure mix
        "f16" => LlamaFileType.MostlyF16,
        _ => throw new LowbitException($"no llama.cpp file type for '{codec.Name}' here (q4_0, q8_0, q4_K, f16)"),
    };
    var config = SyntheticModel.Llama1BLike(vocab: 32000, layers: layers);
    var tokenizer = PlaceholderVocabulary(config.VocabSize);
    var sw = System.Diagnostics.Stopwatch.StartNew();
    using var model = SyntheticModel.Create(config, codec);
    Console.Error.WriteLine($"built {model.Tensors.Count} tensors in {sw.Elapsed.TotalSeconds:F1} s");
    var plan = model.Tensors.Select(t => new MixtureEntry(t, t.Codec.Ggml ?? throw new LowbitException($"{t.Codec.Name} has no GGUF type"), null)).ToList();
    var metadata = GgufModelMetadata.Build(config, tokenizer, $"synthetic-llama-1b-{codec.Name}", fileType);
    var report = GgufExporter.Write(model, metadata, plan, Path.GetFullPath(args[1]), threads);
    Console.WriteLine($"{report.OutputPath}: {report.OutputFileBytes} bytes, {report.ParameterCount} parameters, {sw.Elapsed.TotalSeconds:F1} s");
    return 0;
}
catch (LowbitException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

static TokenizerInfo PlaceholderVocabulary(int vocab)
{
    var tokens = new List<string>(vocab) { "<unk>", "<s>", "</s>" };
    var types = new List<TokenType>(vocab) { TokenType.Unknown, TokenType.Control, TokenType.Control };
    for (int b = 0; b < 256; b++) { tokens.Add($"<0x{b:X2}>"); types.Add(TokenType.Byte); }
    for (int i = 0; tokens.Count < vocab; i++) { tokens.Add($"\u2581t{i}"); types.Add(TokenType.Normal); }
    return new TokenizerInfo
    {
        Model = "llama", Tokens = tokens, TokenTypes = types, Scores = new float[vocab], BosId = 1, EosId = 2, UnknownId = 0,
    };
}
