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
        o.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.CamelCase));
        return o;
    }

    public static string Serialize<T>(T value, bool indented = true) =>
        JsonSerializer.Serialize(value, CreateOptions(indented));
}
