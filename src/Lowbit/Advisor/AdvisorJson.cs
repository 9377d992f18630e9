using System.Text.Json;
using System.Text.Json.Serialization;

namespace Lowbit.Advisor;

/// <summary>JSON form of advisor results (System.Text.Json; camelCase, enums as strings, nulls kept).</summary>
public static class AdvisorJson
{
    /// <summary>Fresh options each call so callers may tweak them (no shared mutable state).</summary>
    public static JsonSerializerOptions CreateOptions(bool indented = true)
    {
        var o = new JsonSerializerOptions
        {
            PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
            WriteIndented = indented,
            NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        };
        // Specific spellings first (the first converter that accepts a type wins): cache types as
        // the CLI spells them ("q8_0", "iq4_nl"), price kinds as the catalog spells them ("cloud-hourly").
        o.Converters.Add(new LowerCaseEnumConverter<KvCacheType>(t => t.ToString().ToLowerInvariant()));
        o.Converters.Add(new LowerCaseEnumConverter<PriceKind>(k => k == PriceKind.CloudHourly ? "cloud-hourly" : k.ToString().ToLowerInvariant()));
        o.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase));
        return o;
    }

    private sealed class LowerCaseEnumConverter<T>(Func<T, string> name) : JsonConverter<T> where T : struct, Enum
    {
        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            string? text = reader.GetString();
            foreach (var v in Enum.GetValues<T>())
                if (string.Equals(name(v), text, StringComparison.OrdinalIgnoreCase)) return v;
            throw new JsonException($"unknown {typeof(T).Name} '{text}'.");
        }

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options) =>
            writer.WriteStringValue(name(value));
    }

    public static string Serialize<T>(T value, bool indented = true) =>
        JsonSerializer.Serialize(value, CreateOptions(indented));
}
