using System.Text.Json;

namespace Lowbit.IO;

/// <summary>
/// The safetensors weights of one Hugging Face model: a single model.safetensors or the shards listed
/// by model.safetensors.index.json ("weight_map": tensor name → shard file). Every shard is validated
/// on open; the index must name existing shards (plain file names in the same folder), map each tensor
/// to exactly one shard that really holds it, and cover every tensor the shards hold.
/// </summary>
public sealed class SafetensorsSet : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly List<SafetensorsFile> _files;
    private readonly Dictionary<string, (SafetensorsFile File, SafetensorsTensor Tensor)> _byName;
    private readonly List<string> _order;

    private SafetensorsSet(string sourcePath, List<SafetensorsFile> files,
        Dictionary<string, (SafetensorsFile, SafetensorsTensor)> byName, List<string> order)
    {
        SourcePath = sourcePath;
        _files = files;
        _byName = byName;
        _order = order;
    }

    /// <summary>The single file or index file the set was opened from.</summary>
    public string SourcePath { get; }
    public IReadOnlyList<SafetensorsFile> Files => _files;
    /// <summary>Tensor names in file order (shard by shard, header order within a shard).</summary>
    public IReadOnlyList<string> TensorNames => _order;
    public int Count => _order.Count;

    public bool Contains(string name) => _byName.ContainsKey(name);

    public (SafetensorsFile File, SafetensorsTensor Tensor)? TryGet(string name) =>
        _byName.TryGetValue(name, out var e) ? e : null;

    /// <summary>
    /// Opens a model folder (model.safetensors.index.json preferred, else model.safetensors, else its
    /// only *.safetensors file), an index file, or a single .safetensors file.
    /// </summary>
    public static SafetensorsSet Open(string path)
    {
        if (Directory.Exists(path))
        {
            string index = System.IO.Path.Combine(path, IndexFileName);
            if (File.Exists(index)) return OpenIndex(index);
            string single = System.IO.Path.Combine(path, SingleFileName);
            if (File.Exists(single)) return OpenSingle(single);
            var candidates = Directory.GetFiles(path, "*.safetensors");
            if (candidates.Length == 1) return OpenSingle(candidates[0]);
            throw new LowbitException(candidates.Length == 0
                ? $"{path}: no {SingleFileName} or {IndexFileName} in this folder"
                : $"{path}: {candidates.Length} .safetensors files but no {IndexFileName} saying how they fit together");
        }
        if (!File.Exists(path)) throw new LowbitException($"{path}: file not found");
        return path.EndsWith(".json", StringComparison.OrdinalIgnoreCase) ? OpenIndex(path) : OpenSingle(path);
    }

    private static SafetensorsSet OpenSingle(string file)
    {
        var st = SafetensorsFile.Open(file);
        var byName = st.Tensors.ToDictionary(t => t.Name, t => (st, t), StringComparer.Ordinal);
        return new SafetensorsSet(file, [st], byName, st.Tensors.Select(t => t.Name).ToList());
    }

    private static SafetensorsSet OpenIndex(string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var files = new List<SafetensorsFile>();
        try
        {
            var shardByName = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (string shard in weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
            {
                string shardPath = System.IO.Path.Combine(dir, shard);
                if (!File.Exists(shardPath))
                    throw new InvalidModelFileException(indexPath, $"shard '{shard}' named in weight_map does not exist ({shardPath})");
                var f = SafetensorsFile.Open(shardPath);
                files.Add(f);
                shardByName[shard] = f;
            }

            var byName = new Dictionary<string, (SafetensorsFile, SafetensorsTensor)>(StringComparer.Ordinal);
            foreach (var (tensor, shard) in weightMap)
            {
                var f = shardByName[shard];
                var t = f.TryGet(tensor)
                    ?? throw new InvalidModelFileException(indexPath, $"weight_map puts tensor '{tensor}' in '{shard}', which does not contain it");
                byName[tensor] = (f, t);
            }

            var order = new List<string>();
            foreach (var f in files)
                foreach (var t in f.Tensors)
                {
                    string shard = System.IO.Path.GetFileName(f.Path);
                    if (!weightMap.TryGetValue(t.Name, out var mapped))
                        throw new InvalidModelFileException(indexPath, $"shard '{shard}' holds tensor '{t.Name}', which weight_map does not list");
                    if (mapped != shard)
                        throw new InvalidModelFileException(indexPath, $"tensor '{t.Name}' is in both '{shard}' and '{mapped}'");
                    order.Add(t.Name);
                }
            return new SafetensorsSet(indexPath, files, byName, order);
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    /// <summary>Reads and checks "weight_map": an object of tensor name → plain shard file name, no duplicates.</summary>
    internal static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllBytes(indexPath));
        }
        catch (JsonException e)
        {
            throw new InvalidModelFileException(indexPath, $"not valid JSON ({e.Message})");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new InvalidModelFileException(indexPath, "expected a JSON object with a \"weight_map\" object");
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var p in wm.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.String)
                    throw new InvalidModelFileException(indexPath, $"weight_map entry '{p.Name}' must be a shard file name string");
                string shard = p.Value.GetString()!;
                if (shard.Length == 0 || shard != System.IO.Path.GetFileName(shard) || shard is "." or "..")
                    throw new InvalidModelFileException(indexPath, $"weight_map entry '{p.Name}' names '{shard}', which is not a plain file name in the model folder");
                if (!map.TryAdd(p.Name, shard))
                    throw new InvalidModelFileException(indexPath, $"weight_map lists tensor '{p.Name}' more than once");
            }
            if (map.Count == 0)
                throw new InvalidModelFileException(indexPath, "weight_map is empty");
            return map;
        }
    }

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
