namespace Lowbit.IO;

/// <summary>
/// GGUF key/value metadata in file order, with typed setters (the writer) and typed getters (the
/// reader). Setting an existing key replaces its value in place, keeping its position. Getters
/// are strict about types (llama.cpp is, for most keys): a wrong type is an error naming the key.
/// </summary>
public sealed class GgufMetadata
{
    private readonly List<GgufMetadataEntry> _entries = [];
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);

    /// <param name="sourcePath">The file the metadata was read from, for error messages (null when built in memory).</param>
    public GgufMetadata(string? sourcePath = null) => SourcePath = sourcePath;

    public string? SourcePath { get; }
    public int Count => _entries.Count;
    public IReadOnlyList<GgufMetadataEntry> Entries => _entries;
    public IEnumerable<string> Keys => _entries.Select(e => e.Key);

    public bool ContainsKey(string key) => _index.ContainsKey(key);

    public bool TryGet(string key, out GgufMetadataEntry entry)
    {
        if (_index.TryGetValue(key, out int i))
        {
            entry = _entries[i];
            return true;
        }
        entry = null!;
        return false;
    }

    public GgufMetadataEntry Get(string key) =>
        TryGet(key, out var e) ? e : throw Error($"metadata key '{key}' is missing");

    /// <summary>Sets a value of an explicit GGUF type; the CLR type of <paramref name="value"/> must match it.</summary>
    public void SetValue(string key, GgufValueType type, object value)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        ArgumentNullException.ThrowIfNull(value);
        if (value.GetType() != GgufValue.ClrType(type))
            throw new ArgumentException($"metadata '{key}': a {type} value must be a {GgufValue.ClrType(type).Name}, got {value.GetType().Name}");
        var entry = new GgufMetadataEntry(key, type, value);
        if (_index.TryGetValue(key, out int i)) _entries[i] = entry;
        else
        {
            _index.Add(key, _entries.Count);
            _entries.Add(entry);
        }
    }

    /// <summary>Adds a key read from a file; a repeated key is an error (the caller reports the offset).</summary>
    internal bool TryAddNew(GgufMetadataEntry entry)
    {
        if (!_index.TryAdd(entry.Key, _entries.Count)) return false;
        _entries.Add(entry);
        return true;
    }

    public bool Remove(string key)
    {
        if (!_index.Remove(key, out int i)) return false;
        _entries.RemoveAt(i);
        for (int j = i; j < _entries.Count; j++) _index[_entries[j].Key] = j;
        return true;
    }

    // --- typed setters ---
    public void Set(string key, string value) => SetValue(key, GgufValueType.String, value);
    public void Set(string key, byte value) => SetValue(key, GgufValueType.UInt8, value);
    public void Set(string key, sbyte value) => SetValue(key, GgufValueType.Int8, value);
    public void Set(string key, ushort value) => SetValue(key, GgufValueType.UInt16, value);
    public void Set(string key, short value) => SetValue(key, GgufValueType.Int16, value);
    public void Set(string key, uint value) => SetValue(key, GgufValueType.UInt32, value);
    public void Set(string key, int value) => SetValue(key, GgufValueType.Int32, value);
    public void Set(string key, float value) => SetValue(key, GgufValueType.Float32, value);
    public void Set(string key, bool value) => SetValue(key, GgufValueType.Bool, value);
    public void Set(string key, ulong value) => SetValue(key, GgufValueType.UInt64, value);
    public void Set(string key, long value) => SetValue(key, GgufValueType.Int64, value);
    public void Set(string key, double value) => SetValue(key, GgufValueType.Float64, value);
    public void Set(string key, GgufArray value) => SetValue(key, GgufValueType.Array, value);
    public void Set(string key, string[] values) => Set(key, new GgufArray(GgufValueType.String, values));
    public void Set(string key, float[] values) => Set(key, new GgufArray(GgufValueType.Float32, values));
    public void Set(string key, double[] values) => Set(key, new GgufArray(GgufValueType.Float64, values));
    public void Set(string key, int[] values) => Set(key, new GgufArray(GgufValueType.Int32, values));
    public void Set(string key, uint[] values) => Set(key, new GgufArray(GgufValueType.UInt32, values));
    public void Set(string key, long[] values) => Set(key, new GgufArray(GgufValueType.Int64, values));
    public void Set(string key, ulong[] values) => Set(key, new GgufArray(GgufValueType.UInt64, values));
    public void Set(string key, short[] values) => Set(key, new GgufArray(GgufValueType.Int16, values));
    public void Set(string key, ushort[] values) => Set(key, new GgufArray(GgufValueType.UInt16, values));
    public void Set(string key, sbyte[] values) => Set(key, new GgufArray(GgufValueType.Int8, values));
    public void Set(string key, byte[] values) => Set(key, new GgufArray(GgufValueType.UInt8, values));
    public void Set(string key, bool[] values) => Set(key, new GgufArray(GgufValueType.Bool, values));

    // --- typed getters (strict) ---
    public string GetString(string key) => GetTyped<string>(key, GgufValueType.String);
    public uint GetUInt32(string key) => GetTyped<uint>(key, GgufValueType.UInt32);
    public int GetInt32(string key) => GetTyped<int>(key, GgufValueType.Int32);
    public ulong GetUInt64(string key) => GetTyped<ulong>(key, GgufValueType.UInt64);
    public long GetInt64(string key) => GetTyped<long>(key, GgufValueType.Int64);
    public float GetFloat32(string key) => GetTyped<float>(key, GgufValueType.Float32);
    public double GetFloat64(string key) => GetTyped<double>(key, GgufValueType.Float64);
    public bool GetBool(string key) => GetTyped<bool>(key, GgufValueType.Bool);
    public GgufArray GetArray(string key) => GetTyped<GgufArray>(key, GgufValueType.Array);

    public string? TryGetString(string key) => ContainsKey(key) ? GetString(key) : null;
    public uint? TryGetUInt32(string key) => ContainsKey(key) ? GetUInt32(key) : null;
    public float? TryGetFloat32(string key) => ContainsKey(key) ? GetFloat32(key) : null;
    public bool? TryGetBool(string key) => ContainsKey(key) ? GetBool(key) : null;
    public GgufArray? TryGetArray(string key) => ContainsKey(key) ? GetArray(key) : null;

    /// <summary>An array of the given element type, e.g. <c>GetArray&lt;string&gt;("tokenizer.ggml.tokens")</c>.</summary>
    public T[] GetArray<T>(string key)
    {
        var a = GetArray(key);
        return a.Values as T[] ?? throw Error($"metadata key '{key}' is an array of {a.ElementType}, expected an array of {typeof(T).Name}");
    }

    public T[]? TryGetArray<T>(string key) => ContainsKey(key) ? GetArray<T>(key) : null;

    /// <summary>
    /// Any integer-typed value (uint8..int64, or bool) widened to long, for readers that accept the
    /// integer widths different writers use for the same key. Null when absent.
    /// </summary>
    public long? TryGetInteger(string key)
    {
        if (!TryGet(key, out var e)) return null;
        return e.Value switch
        {
            byte v => v,
            sbyte v => v,
            ushort v => v,
            short v => v,
            uint v => v,
            int v => v,
            long v => v,
            ulong v => v <= long.MaxValue ? (long)v : throw Error($"metadata key '{key}' = {v} is out of range"),
            _ => throw Error($"metadata key '{key}' has type {e.Type}, expected an integer"),
        };
    }

    /// <summary>A float32 or float64 value narrowed to float. Null when absent.</summary>
    public float? TryGetReal(string key)
    {
        if (!TryGet(key, out var e)) return null;
        return e.Value switch
        {
            float f => f,
            double d => (float)d,
            _ => throw Error($"metadata key '{key}' has type {e.Type}, expected a float"),
        };
    }

    /// <summary>The metadata as a plain dictionary (for <see cref="Model.LoadedModel.Metadata"/>).</summary>
    public IReadOnlyDictionary<string, object> ToDictionary()
    {
        var d = new Dictionary<string, object>(StringComparer.Ordinal);
        foreach (var e in _entries) d[e.Key] = e.Value;
        return d;
    }

    private T GetTyped<T>(string key, GgufValueType expected)
    {
        var e = Get(key);
        if (e.Type != expected)
            throw Error($"metadata key '{key}' has type {e.Type}, expected {expected}");
        return (T)e.Value;
    }

    private LowbitException Error(string what) =>
        SourcePath is null ? new LowbitException(what) : new InvalidModelFileException(SourcePath, what);
}
