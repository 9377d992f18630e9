using Lowbit.Formats;

namespace Lowbit.IO;

/// <summary>GGUF metadata value types, numbered as in the GGUF specification (gguf_type).</summary>
public enum GgufValueType : uint
{
    UInt8 = 0,
    Int8 = 1,
    UInt16 = 2,
    Int16 = 3,
    UInt32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    UInt64 = 10,
    Int64 = 11,
    Float64 = 12,
}

/// <summary>
/// llama.cpp's file types (llama.h enum llama_ftype), written as <c>general.file_type</c>: the
/// "mostly" type of a model's matrices. Values 4–6 and 33–35 were removed upstream and are absent.
/// </summary>
public enum LlamaFileType : uint
{
    AllF32 = 0,
    MostlyF16 = 1,
    MostlyQ4_0 = 2,
    MostlyQ4_1 = 3,
    MostlyQ8_0 = 7,
    MostlyQ5_0 = 8,
    MostlyQ5_1 = 9,
    MostlyQ2_K = 10,
    MostlyQ3_K_S = 11,
    MostlyQ3_K_M = 12,
    MostlyQ3_K_L = 13,
    MostlyQ4_K_S = 14,
    MostlyQ4_K_M = 15,
    MostlyQ5_K_S = 16,
    MostlyQ5_K_M = 17,
    MostlyQ6_K = 18,
    MostlyIQ2_XXS = 19,
    MostlyIQ2_XS = 20,
    MostlyQ2_K_S = 21,
    MostlyIQ3_XS = 22,
    MostlyIQ3_XXS = 23,
    MostlyIQ1_S = 24,
    MostlyIQ4_NL = 25,
    MostlyIQ3_S = 26,
    MostlyIQ3_M = 27,
    MostlyIQ2_S = 28,
    MostlyIQ2_M = 29,
    MostlyIQ4_XS = 30,
    MostlyIQ1_M = 31,
    MostlyBF16 = 32,
    MostlyTQ1_0 = 36,
    MostlyTQ2_0 = 37,
    MostlyMXFP4_MoE = 38,
    MostlyNVFP4 = 39,
}

/// <summary>
/// A GGUF array value: the element type and the elements as a typed .NET array
/// (byte[], sbyte[], ushort[], short[], uint[], int[], float[], bool[], string[], ulong[], long[],
/// double[], or <see cref="GgufArray"/>[] for nested arrays).
/// </summary>
public sealed class GgufArray
{
    public GgufArray(GgufValueType elementType, Array values)
    {
        Type expected = GgufValue.ClrArrayType(elementType);
        if (values.GetType() != expected)
            throw new ArgumentException($"GGUF array of {elementType} needs a {expected.Name}, got {values.GetType().Name}");
        ElementType = elementType;
        Values = values;
    }

    public GgufValueType ElementType { get; }
    public Array Values { get; }
    public int Count => Values.Length;

    /// <summary>The elements as <typeparamref name="T"/>[]; throws when the element type differs.</summary>
    public T[] As<T>() => Values as T[]
        ?? throw new InvalidCastException($"GGUF array holds {ElementType}, not {typeof(T).Name}");

    public override bool Equals(object? obj) =>
        obj is GgufArray other && other.ElementType == ElementType && GgufValue.ArraysEqual(Values, other.Values);

    public override int GetHashCode() => HashCode.Combine(ElementType, Values.Length);

    public override string ToString() => $"[{ElementType} × {Count}]";
}

/// <summary>One metadata key/value pair, with its GGUF type.</summary>
public sealed record GgufMetadataEntry(string Key, GgufValueType Type, object Value)
{
    public override string ToString() => $"{Key} ({Type}) = {GgufValue.Describe(Value)}";
}

/// <summary>Helpers mapping GGUF value types to CLR types.</summary>
public static class GgufValue
{
    /// <summary>The CLR type a scalar value of <paramref name="type"/> is held as.</summary>
    public static Type ClrType(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 => typeof(byte),
        GgufValueType.Int8 => typeof(sbyte),
        GgufValueType.UInt16 => typeof(ushort),
        GgufValueType.Int16 => typeof(short),
        GgufValueType.UInt32 => typeof(uint),
        GgufValueType.Int32 => typeof(int),
        GgufValueType.Float32 => typeof(float),
        GgufValueType.Bool => typeof(bool),
        GgufValueType.String => typeof(string),
        GgufValueType.Array => typeof(GgufArray),
        GgufValueType.UInt64 => typeof(ulong),
        GgufValueType.Int64 => typeof(long),
        GgufValueType.Float64 => typeof(double),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown GGUF value type"),
    };

    public static Type ClrArrayType(GgufValueType elementType) => ClrType(elementType).MakeArrayType();

    public static bool IsKnown(uint type) => type <= (uint)GgufValueType.Float64;

    /// <summary>Encoded size of one scalar of the type; 0 for variable-size types (string, array).</summary>
    public static int FixedSize(GgufValueType type) => type switch
    {
        GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
        GgufValueType.UInt16 or GgufValueType.Int16 => 2,
        GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
        GgufValueType.UInt64 or GgufValueType.Int64 or GgufValueType.Float64 => 8,
        _ => 0,
    };

    /// <summary>The fewest bytes one element of the type can take in a file (a string takes its 8-byte length).</summary>
    public static int MinEncodedSize(GgufValueType type) => type switch
    {
        GgufValueType.String => 8,
        GgufValueType.Array => 12,
        _ => FixedSize(type),
    };

    internal static bool ArraysEqual(Array a, Array b)
    {
        if (a.GetType() != b.GetType() || a.Length != b.Length) return false;
        for (int i = 0; i < a.Length; i++)
        {
            object? x = a.GetValue(i), y = b.GetValue(i);
            // Floats compare bitwise so that NaN payloads and -0 round-trip as "equal" exactly when identical.
            bool same = (x, y) switch
            {
                (float fx, float fy) => BitConverter.SingleToInt32Bits(fx) == BitConverter.SingleToInt32Bits(fy),
                (double dx, double dy) => BitConverter.DoubleToInt64Bits(dx) == BitConverter.DoubleToInt64Bits(dy),
                _ => Equals(x, y),
            };
            if (!same) return false;
        }
        return true;
    }

    internal static string Describe(object value) => value switch
    {
        string s => s.Length > 60 ? $"\"{s[..57]}...\"" : $"\"{s}\"",
        GgufArray a => a.ToString(),
        float f => f.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        double d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "",
    };
}

/// <summary>
/// Block geometry of every ggml tensor type (ggml's type_traits: values per block, bytes per block),
/// independent of which types Lowbit has codecs for, so that any GGUF file can be validated.
/// </summary>
public static class GgmlTypeTraits
{
    /// <summary>Values per block and bytes per block of <paramref name="type"/>; false for unknown or removed ids.</summary>
    public static bool TryGet(GgmlType type, out int blockSize, out int typeSize)
    {
        (blockSize, typeSize) = type switch
        {
            GgmlType.F32 => (1, 4),
            GgmlType.F16 => (1, 2),
            GgmlType.Q4_0 => (32, 18),
            GgmlType.Q4_1 => (32, 20),
            GgmlType.Q5_0 => (32, 22),
            GgmlType.Q5_1 => (32, 24),
            GgmlType.Q8_0 => (32, 34),
            GgmlType.Q8_1 => (32, 36),
            GgmlType.Q2_K => (256, 84),
            GgmlType.Q3_K => (256, 110),
            GgmlType.Q4_K => (256, 144),
            GgmlType.Q5_K => (256, 176),
            GgmlType.Q6_K => (256, 210),
            GgmlType.Q8_K => (256, 292),
            GgmlType.IQ2_XXS => (256, 66),
            GgmlType.IQ2_XS => (256, 74),
            GgmlType.IQ3_XXS => (256, 98),
            GgmlType.IQ1_S => (256, 50),
            GgmlType.IQ4_NL => (32, 18),
            GgmlType.IQ3_S => (256, 110),
            GgmlType.IQ2_S => (256, 82),
            GgmlType.IQ4_XS => (256, 136),
            GgmlType.I8 => (1, 1),
            GgmlType.I16 => (1, 2),
            GgmlType.I32 => (1, 4),
            GgmlType.I64 => (1, 8),
            GgmlType.F64 => (1, 8),
            GgmlType.IQ1_M => (256, 56),
            GgmlType.BF16 => (1, 2),
            GgmlType.TQ1_0 => (256, 54),
            GgmlType.TQ2_0 => (256, 66),
            GgmlType.MXFP4 => (32, 17),
            GgmlType.NVFP4 => (64, 36),
            _ => (0, 0),
        };
        return blockSize != 0;
    }

    /// <summary>Names of type ids that ggml once had and removed (files using them cannot be loaded by llama.cpp either).</summary>
    public static string? RemovedTypeName(uint id) => id switch
    {
        4 => "Q4_2",
        5 => "Q4_3",
        31 => "Q4_0_4_4",
        32 => "Q4_0_4_8",
        33 => "Q4_0_8_8",
        36 => "IQ4_NL_4_4",
        37 => "IQ4_NL_4_8",
        38 => "IQ4_NL_8_8",
        _ => null,
    };

    /// <summary>Bytes of a tensor with ggml dims (innermost first); the caller has validated the dims.</summary>
    public static long TensorBytes(GgmlType type, ReadOnlySpan<long> ggmlDims)
    {
        if (!TryGet(type, out int bs, out int ts)) throw new ArgumentException($"unknown ggml type {type}");
        long bytes = checked(ggmlDims[0] / bs * ts);
        for (int i = 1; i < ggmlDims.Length; i++) bytes = checked(bytes * ggmlDims[i]);
        return bytes;
    }
}
