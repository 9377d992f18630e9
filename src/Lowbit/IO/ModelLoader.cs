using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>Opens a model from any supported source, recognising it by content, not by name alone.</summary>
public static class ModelLoader
{
    public static LoadedModel Open(string path)
    {
        if (Directory.Exists(path))
        {
            if (HfModelLoader.IsHfModel(path)) return HfModelLoader.Load(path);
            var ggufs = Directory.GetFiles(path, "*.gguf");
            if (ggufs.Length == 1) return Open(ggufs[0]);
            throw new LowbitException($"{path}: not a model directory (expected config.json with model.safetensors, or a single .gguf file)");
        }
        if (!File.Exists(path)) throw new LowbitException($"{path}: no such file or directory");
        Span<byte> magic = stackalloc byte[4];
        int n;
        try
        {
            using var fs = File.OpenRead(path);
            n = fs.ReadAtLeast(magic, 4, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LowbitException($"{path}: cannot read: {e.Message}", e);
        }
        if (n == 4 && magic.SequenceEqual("GGUF"u8)) return GgufModelLoader.Load(path);
        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
            return HfModelLoader.Load(path);
        if (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase)) return Llama2cReader.Load(path);
        throw new InvalidModelFileException(path, 0,
            "unrecognised model file: expected GGUF (magic 'GGUF'), a .safetensors file or directory with config.json, or a llama2.c .bin checkpoint");
    }
}
