using System.Text;
using System.Text.Json;

namespace Lowbit.Tests.IO;

/// <summary>Locates bundled data and builds small safetensors files / model folders for tests.</summary>
internal static class HfTestFiles
{
    public static string RepoRoot
    {
        get
        {
            var d = new DirectoryInfo(AppContext.BaseDirectory);
            while (d is not null && !File.Exists(Path.Combine(d.FullName, "Lowbit.slnx"))) d = d.Parent;
            return d?.FullName ?? throw new InvalidOperationException("repository root (Lowbit.slnx) not found");
        }
    }

    public static string RefModelDir => Path.Combine(RepoRoot, "models", "refmodel-llama-6m");

    /// <summary>A fresh temporary folder, deleted when disposed.</summary>
    public sealed class TempDir : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("lowbit-hfio-").FullName;
        public string File(string name) => System.IO.Path.Combine(Path, name);
        public void Dispose()
        {
            try { Directory.Delete(Path, true); } catch (IOException) { }
        }
    }

    /// <summary>Writes a safetensors file from a header JSON string and a data buffer (no validation: tests craft bad files).</summary>
    public static void WriteRaw(string path, string headerJson, byte[] data, long? headerLengthOverride = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes(headerLengthOverride ?? header.Length));
        fs.Write(header);
        fs.Write(data);
    }

    /// <summary>A valid safetensors file of F32 tensors laid out contiguously in the given order.</summary>
    public static void WriteF32(string path, params (string Name, long[] Shape, float[] Values)[] tensors)
    {
        var header = new Dictionary<string, object>();
        var data = new MemoryStream();
        foreach (var (name, shape, values) in tensors)
        {
            long start = data.Length;
            foreach (var v in values) data.Write(BitConverter.GetBytes(v));
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { start, data.Length } };
        }
        WriteRaw(path, JsonSerializer.Serialize(header), data.ToArray());
    }
}
