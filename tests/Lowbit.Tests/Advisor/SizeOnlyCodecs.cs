using Lowbit.Formats;

namespace Lowbit.Tests.Advisor;

/// <summary>
/// Test double: a codec with a ggml block geometry but no data path, so the memory math can be
/// tested against hand-computed sizes for formats whose real codecs live on other branches.
/// </summary>
internal sealed class SizeOnlyCodec(string name, int blockSize, int blockBytes) : TensorCodec
{
    public override string Name => name;
    public override int BlockSize => blockSize;
    public override int BlockBytes => blockBytes;

    public override void QuantizeRows(ReadOnlySpan<float> src, Span<byte> dst, int cols, ReadOnlySpan<float> importance)
        => throw new NotSupportedException("size-only test codec");

    public override void DequantizeRows(ReadOnlySpan<byte> src, Span<float> dst, int cols)
        => throw new NotSupportedException("size-only test codec");
}

/// <summary>Codec lookup for tests: the real registry plus size-only stand-ins with ggml's block geometry.</summary>
internal static class TestCodecs
{
    // ggml-common.h block sizes: q4_0 32 values/18 B, q8_0 32/34, q5_0 32/22, q5_1 32/24,
    // iq4_nl 32/18, q4_K 256/144, q5_K 256/176, q6_K 256/210, q2_K 256/84, iq4_xs 256/136.
    private static readonly Dictionary<string, TensorCodec> StandIns = new(StringComparer.OrdinalIgnoreCase)
    {
        ["q4_0"] = new SizeOnlyCodec("q4_0", 32, 18),
        ["q8_0"] = new SizeOnlyCodec("q8_0", 32, 34),
        ["q5_0"] = new SizeOnlyCodec("q5_0", 32, 22),
        ["q5_1"] = new SizeOnlyCodec("q5_1", 32, 24),
        ["iq4_nl"] = new SizeOnlyCodec("iq4_nl", 32, 18),
        ["q4_K"] = new SizeOnlyCodec("q4_K", 256, 144),
        ["q5_K"] = new SizeOnlyCodec("q5_K", 256, 176),
        ["q6_K"] = new SizeOnlyCodec("q6_K", 256, 210),
        ["q2_K"] = new SizeOnlyCodec("q2_K", 256, 84),
        ["iq4_xs"] = new SizeOnlyCodec("iq4_xs", 256, 136),
    };

    /// <summary>Registry first (real codecs win once merged), then the stand-ins.</summary>
    public static TensorCodec? Resolve(string name) => CodecRegistry.TryGet(name) ?? StandIns.GetValueOrDefault(name);

    /// <summary>Only the given names resolve (plus f32/f16/bf16 from the registry).</summary>
    public static Func<string, TensorCodec?> Only(params string[] names) => n =>
        n is "f32" or "f16" or "bf16" || names.Contains(n, StringComparer.OrdinalIgnoreCase) ? Resolve(n) : null;

    public static TensorCodec Get(string name) => Resolve(name) ?? throw new InvalidOperationException(name);
}
