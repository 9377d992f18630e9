using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Lowbit.Advisor;

[JsonConverter(typeof(JsonStringEnumConverter<DeviceKind>))]
public enum DeviceKind { Gpu, Cpu, Apple }

[JsonConverter(typeof(JsonStringEnumConverter<PriceKind>))]
public enum PriceKind
{
    /// <summary>Launch list price of the part (USD).</summary>
    Msrp,
    /// <summary>Typical retail price at the given date (USD).</summary>
    Street,
    /// <summary>Typical on-demand cloud rental per GPU-hour (USD).</summary>
    CloudHourly,
}

/// <summary>A price with what kind of price it is and when it was true.</summary>
public sealed record DevicePrice(double Usd, PriceKind Kind, string Date);

/// <summary>
/// One device of the hardware catalog. Compute rates are dense (no 2:4 sparsity) peak tensor
/// rates as vendors publish them; null where the device has no native support for that type.
/// </summary>
public sealed record DeviceSpec
{
    public required string Id { get; init; }
    public required string Name { get; init; }
    public required string Vendor { get; init; }
    public required DeviceKind Kind { get; init; }
    public string? Architecture { get; init; }
    /// <summary>Device (or unified) memory in GB as vendors state it for GPU/unified memory, i.e. binary GB (GiB).</summary>
    public required double MemoryGB { get; init; }
    /// <summary>Peak memory bandwidth, decimal GB/s (10^9 bytes/s).</summary>
    public required double MemoryBandwidthGBps { get; init; }
    public required double Fp16Tflops { get; init; }
    public double? Int8Tops { get; init; }
    public double? Fp8Tflops { get; init; }
    public double? Fp4Tflops { get; init; }
    /// <summary>Formats (advisor vocabulary) with fast kernels in a mainstream engine on this device.</summary>
    public required IReadOnlyList<string> FastFormats { get; init; }
    public DevicePrice? Price { get; init; }
    public required IReadOnlyList<string> Sources { get; init; }
    public string? Note { get; init; }

    public long MemoryBytes => (long)Math.Round(MemoryGB * (1L << 30));

    public bool HasFastKernel(string format) => FastFormats.Contains(format, StringComparer.OrdinalIgnoreCase);
}

/// <summary>
/// The hardware catalog: a JSON data file (embedded as Lowbit.Advisor.hardware-catalog.json),
/// validated on load — required fields, positive numbers, known kinds and formats, unique ids,
/// no unknown fields — with errors that name the entry.
/// <para>Format: <c>{ "schemaVersion": 1, "formatSets": { "name": [formats] }, "devices": [ entry ] }</c>;
/// an entry's <c>fastFormats</c> may use "@name" to include a format set; an entry with
/// <c>memoryOptionsGB</c> instead of <c>memoryGB</c> expands to one device per option
/// (id suffixed "-{n}gb", name suffixed ", {n} GB").</para>
/// </summary>
public sealed class HardwareCatalog
{
    public const string ResourceName = "Lowbit.Advisor.hardware-catalog.json";

    public IReadOnlyList<DeviceSpec> Devices { get; }

    private HardwareCatalog(IReadOnlyList<DeviceSpec> devices) => Devices = devices;

    /// <summary>The catalog shipped inside the library.</summary>
    public static HardwareCatalog LoadBuiltIn()
    {
        using var stream = typeof(HardwareCatalog).Assembly.GetManifestResourceStream(ResourceName)
            ?? throw new InvalidOperationException($"embedded resource {ResourceName} is missing from the build.");
        using var reader = new StreamReader(stream);
        return Parse(reader.ReadToEnd(), "built-in hardware catalog");
    }

    /// <summary>Loads a user catalog file (same format).</summary>
    public static HardwareCatalog Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LowbitException($"{path}: cannot read hardware catalog: {e.Message}", e);
        }
        return Parse(text, path);
    }

    /// <summary>
    /// This catalog with <paramref name="overrides"/> applied: entries with an existing id replace
    /// it in place (e.g. a user's current prices), new ids are appended.
    /// </summary>
    public HardwareCatalog With(HardwareCatalog overrides)
    {
        ArgumentNullException.ThrowIfNull(overrides);
        var byId = overrides.Devices.ToDictionary(d => d.Id, StringComparer.OrdinalIgnoreCase);
        var merged = Devices.Select(d => byId.Remove(d.Id, out var o) ? o : d).ToList();
        merged.AddRange(overrides.Devices.Where(d => byId.ContainsKey(d.Id)));
        return new HardwareCatalog(merged);
    }

    /// <summary>Finds a device by id or name (case-insensitive), or null.</summary>
    public DeviceSpec? Find(string idOrName) =>
        Devices.FirstOrDefault(d => string.Equals(d.Id, idOrName, StringComparison.OrdinalIgnoreCase))
        ?? Devices.FirstOrDefault(d => string.Equals(d.Name, idOrName, StringComparison.OrdinalIgnoreCase));

    public DeviceSpec Get(string idOrName) =>
        Find(idOrName) ?? throw new LowbitException($"unknown device '{idOrName}'. Known ids: {string.Join(", ", Devices.Select(d => d.Id))}.");

    private static readonly HashSet<string> EntryFields =
    [
        "id", "name", "vendor", "kind", "architecture", "memoryGB", "memoryOptionsGB", "memoryBandwidthGBps",
        "fp16Tflops", "int8Tops", "fp8Tflops", "fp4Tflops", "fastFormats", "price", "sources", "note",
    ];

    public static HardwareCatalog Parse(string json, string sourceName)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new LowbitException($"{sourceName}: not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new LowbitException($"{sourceName}: the catalog must be a JSON object with a \"devices\" array.");
            if (!root.TryGetProperty("schemaVersion", out var ver) || ver.ValueKind != JsonValueKind.Number || ver.GetInt32() != 1)
                throw new LowbitException($"{sourceName}: \"schemaVersion\" must be 1.");

            var sets = new Dictionary<string, string[]>(StringComparer.Ordinal);
            if (root.TryGetProperty("formatSets", out var fs))
            {
                if (fs.ValueKind != JsonValueKind.Object)
                    throw new LowbitException($"{sourceName}: \"formatSets\" must be an object of format lists.");
                foreach (var p in fs.EnumerateObject())
                    sets[p.Name] = ReadFormats(p.Value, $"{sourceName}: format set '{p.Name}'", null);
            }

            if (!root.TryGetProperty("devices", out var devs) || devs.ValueKind != JsonValueKind.Array)
                throw new LowbitException($"{sourceName}: missing \"devices\" array.");
            var list = new List<DeviceSpec>();
            var ids = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
            int index = 0;
            foreach (var e in devs.EnumerateArray())
            {
                foreach (var d in ReadEntry(e, sourceName, index, sets))
                {
                    if (!ids.Add(d.Id))
                        throw new LowbitException($"{sourceName}: device '{d.Id}': duplicate id.");
                    list.Add(d);
                }
                index++;
            }
            if (list.Count == 0) throw new LowbitException($"{sourceName}: the catalog lists no devices.");
            return new HardwareCatalog(list);
        }
    }

    private static IEnumerable<DeviceSpec> ReadEntry(JsonElement e, string sourceName, int index, Dictionary<string, string[]> sets)
    {
        string where = $"{sourceName}: device #{index}";
        if (e.ValueKind != JsonValueKind.Object) throw new LowbitException($"{where}: must be an object.");
        string id = RequiredString(e, "id", where);
        where = $"{sourceName}: device '{id}'";
        foreach (var p in e.EnumerateObject())
            if (!EntryFields.Contains(p.Name))
                throw new LowbitException($"{where}: unknown field \"{p.Name}\".");

        string name = RequiredString(e, "name", where);
        string vendor = RequiredString(e, "vendor", where);
        string kindText = RequiredString(e, "kind", where);
        DeviceKind kind = kindText switch
        {
            "gpu" => DeviceKind.Gpu,
            "cpu" => DeviceKind.Cpu,
            "apple" => DeviceKind.Apple,
            _ => throw new LowbitException($"{where}: \"kind\" must be gpu, cpu or apple, got '{kindText}'."),
        };
        string? arch = OptionalString(e, "architecture", where);
        double bandwidth = RequiredPositive(e, "memoryBandwidthGBps", where);
        double fp16 = RequiredPositive(e, "fp16Tflops", where);
        double? int8 = OptionalPositive(e, "int8Tops", where);
        double? fp8 = OptionalPositive(e, "fp8Tflops", where);
        double? fp4 = OptionalPositive(e, "fp4Tflops", where);
        if (!e.TryGetProperty("fastFormats", out var ff))
            throw new LowbitException($"{where}: missing required field \"fastFormats\".");
        var formats = ReadFormats(ff, where, sets);
        var price = ReadPrice(e, where);
        if (!e.TryGetProperty("sources", out var src) || src.ValueKind != JsonValueKind.Array || src.GetArrayLength() == 0)
            throw new LowbitException($"{where}: \"sources\" must be a non-empty array of strings.");
        var sources = src.EnumerateArray().Select(s => s.ValueKind == JsonValueKind.String && !string.IsNullOrWhiteSpace(s.GetString())
            ? s.GetString()! : throw new LowbitException($"{where}: every entry of \"sources\" must be a non-empty string.")).ToArray();
        string? note = OptionalString(e, "note", where);

        bool hasMemory = e.TryGetProperty("memoryGB", out _);
        bool hasOptions = e.TryGetProperty("memoryOptionsGB", out var opts);
        if (hasMemory == hasOptions)
            throw new LowbitException($"{where}: give exactly one of \"memoryGB\" or \"memoryOptionsGB\".");

        var template = new DeviceSpec
        {
            Id = id, Name = name, Vendor = vendor, Kind = kind, Architecture = arch,
            MemoryGB = hasMemory ? RequiredPositive(e, "memoryGB", where) : 1,
            MemoryBandwidthGBps = bandwidth, Fp16Tflops = fp16, Int8Tops = int8, Fp8Tflops = fp8, Fp4Tflops = fp4,
            FastFormats = formats, Price = price, Sources = sources, Note = note,
        };
        if (hasMemory)
        {
            yield return template;
            yield break;
        }
        if (opts.ValueKind != JsonValueKind.Array || opts.GetArrayLength() == 0)
            throw new LowbitException($"{where}: \"memoryOptionsGB\" must be a non-empty array of positive numbers.");
        foreach (var o in opts.EnumerateArray())
        {
            if (o.ValueKind != JsonValueKind.Number || o.GetDouble() <= 0)
                throw new LowbitException($"{where}: \"memoryOptionsGB\" must contain only positive numbers.");
            double gb = o.GetDouble();
            string g = gb.ToString(CultureInfo.InvariantCulture);
            yield return template with { Id = $"{id}-{g}gb", Name = $"{name}, {g} GB", MemoryGB = gb };
        }
    }

    private static string[] ReadFormats(JsonElement a, string where, Dictionary<string, string[]>? sets)
    {
        if (a.ValueKind != JsonValueKind.Array)
            throw new LowbitException($"{where}: \"fastFormats\" must be an array of format names.");
        var result = new List<string>();
        foreach (var f in a.EnumerateArray())
        {
            if (f.ValueKind != JsonValueKind.String)
                throw new LowbitException($"{where}: format names must be strings.");
            string text = f.GetString()!;
            if (text.StartsWith('@'))
            {
                if (sets is null)
                    throw new LowbitException($"{where}: format sets cannot include other sets ('{text}').");
                if (!sets.TryGetValue(text[1..], out var set))
                    throw new LowbitException($"{where}: unknown format set '{text}'.");
                result.AddRange(set);
                continue;
            }
            var info = AdvisorFormats.TryGet(text) ?? throw new LowbitException(
                $"{where}: unknown format '{text}' (known: {string.Join(", ", AdvisorFormats.Known.Select(k => k.Name))}).");
            result.Add(info.Name);
        }
        return result.Distinct(StringComparer.OrdinalIgnoreCase).ToArray();
    }

    private static DevicePrice? ReadPrice(JsonElement e, string where)
    {
        if (!e.TryGetProperty("price", out var p) || p.ValueKind == JsonValueKind.Null) return null;
        if (p.ValueKind != JsonValueKind.Object)
            throw new LowbitException($"{where}: \"price\" must be an object {{ usd, kind, date }} or null.");
        foreach (var f in p.EnumerateObject())
            if (f.Name is not ("usd" or "kind" or "date"))
                throw new LowbitException($"{where}: unknown field \"price.{f.Name}\".");
        double usd = RequiredPositive(p, "usd", where + " price");
        string kindText = RequiredString(p, "kind", where + " price");
        PriceKind kind = kindText switch
        {
            "msrp" => PriceKind.Msrp,
            "street" => PriceKind.Street,
            "cloud-hourly" => PriceKind.CloudHourly,
            _ => throw new LowbitException($"{where}: \"price.kind\" must be msrp, street or cloud-hourly, got '{kindText}'."),
        };
        string date = RequiredString(p, "date", where + " price");
        if (!DateOnly.TryParseExact(date, ["yyyy-MM", "yyyy-MM-dd"], CultureInfo.InvariantCulture, DateTimeStyles.None, out _))
            throw new LowbitException($"{where}: \"price.date\" must be YYYY-MM or YYYY-MM-DD, got '{date}'.");
        return new DevicePrice(usd, kind, date);
    }

    private static string RequiredString(JsonElement e, string field, string where)
    {
        if (!e.TryGetProperty(field, out var v))
            throw new LowbitException($"{where}: missing required field \"{field}\".");
        if (v.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(v.GetString()))
            throw new LowbitException($"{where}: \"{field}\" must be a non-empty string.");
        return v.GetString()!;
    }

    private static string? OptionalString(JsonElement e, string field, string where)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String)
            throw new LowbitException($"{where}: \"{field}\" must be a string.");
        return v.GetString();
    }

    private static double RequiredPositive(JsonElement e, string field, string where) =>
        OptionalPositive(e, field, where) ?? throw new LowbitException($"{where}: missing required field \"{field}\".");

    private static double? OptionalPositive(JsonElement e, string field, string where)
    {
        if (!e.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number)
            throw new LowbitException($"{where}: \"{field}\" must be a number.");
        double d = v.GetDouble();
        if (!(d > 0) || double.IsInfinity(d))
            throw new LowbitException($"{where}: \"{field}\" must be positive, got {d.ToString(CultureInfo.InvariantCulture)}.");
        return d;
    }
}
