using Lowbit.Formats;

namespace Lowbit.Methods.Grids;

/// <summary>
/// GPTQ grid of the GGUF legacy 32-value blocks (Q4_0, Q5_0, Q8_0: value d·(q − offset); Q4_1, Q5_1:
/// value d·q + m). <see cref="Fit"/> quantizes the block with the codec itself (its imatrix search with
/// importance = diag(H), σ² taken over the block, or its reference quantizer), so d and m are exactly what
/// the codec stores. Parameters: [decoded d, decoded m, 1/d and m used for rounding]. The reference
/// quantizers round with the unrounded d and min, and so does <see cref="Round"/> after a reference fit
/// (RTN through the grid reproduces the codec's bytes); after an importance fit it rounds to the nearest
/// point of the decoded grid. Round returns the value the decoder produces (level·d [+ m] in float).
/// </summary>
public sealed class LegacyGrid : IQuantGrid
{
    private readonly TensorCodec codec;
    private readonly LegacyLayout layout;

    public LegacyGrid(TensorCodec codec)
    {
        this.codec = codec;
        layout = codec switch
        {
            Q4_0Codec => new LegacyLayout(Bits: 4, Offset: 8, HasMin: false, RoundAway: false),
            Q5_0Codec => new LegacyLayout(Bits: 5, Offset: 16, HasMin: false, RoundAway: false),
            Q8_0Codec => new LegacyLayout(Bits: 8, Offset: 128, HasMin: false, RoundAway: true),
            Q4_1Codec => new LegacyLayout(Bits: 4, Offset: 0, HasMin: true, RoundAway: false),
            Q5_1Codec => new LegacyLayout(Bits: 5, Offset: 0, HasMin: true, RoundAway: false),
            _ => throw new ArgumentException($"{codec.Name} is not a legacy GGUF block codec", nameof(codec)),
        };
    }

    private readonly record struct LegacyLayout(int Bits, int Offset, bool HasMin, bool RoundAway)
    {
        public int MaxCode => (1 << Bits) - 1;
    }

    public int GroupSize => 32;
    public int ParamCount => 4;

    public void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> p)
    {
        Span<byte> block = stackalloc byte[codec.BlockBytes];
        bool reference = GridMath.AllZero(importance) || !codec.UsesImportance;
        codec.QuantizeRows(weights, block, 32, reference ? default : importance);
        float d = LegacyQuantMath.ReadHalf(block, 0);
        float m = layout.HasMin ? LegacyQuantMath.ReadHalf(block, 2) : 0f;
        p[0] = d;
        p[1] = m;
        if (reference)
        {
            // The reference quantizers' unrounded scale and min (quantize_row_q*_ref), which pick the codes.
            var (dRef, minRef) = ReferenceScale(weights);
            p[2] = dRef != 0 ? 1.0f / dRef : 0f;
            p[3] = minRef;
        }
        else
        {
            p[2] = d != 0 ? 1.0f / d : 0f;
            p[3] = m;
        }
    }

    private (float D, float Min) ReferenceScale(ReadOnlySpan<float> x)
    {
        if (layout.HasMin)
        {
            float min = float.MaxValue, max = -float.MaxValue;
            foreach (float v in x)
            {
                if (v < min) min = v;
                if (v > max) max = v;
            }
            return ((max - min) / layout.MaxCode, min);
        }
        if (layout.RoundAway)
        {
            float amax = 0;
            foreach (float v in x) amax = MathF.Max(amax, MathF.Abs(v));
            return (amax / 127, 0f);
        }
        float absMax = 0, signedMax = 0;
        foreach (float v in x)
            if (absMax < MathF.Abs(v)) { absMax = MathF.Abs(v); signedMax = v; }
        return (signedMax / -layout.Offset, 0f);
    }

    /// <summary>The stored code (0..MaxCode) the codec's rounding rule gives <paramref name="w"/>.</summary>
    private int Code(ReadOnlySpan<float> p, float w)
    {
        float id = p[2];
        int code = layout.HasMin
            ? (int)MathF.Floor((w - p[3]) * id + 0.5f)
            : layout.RoundAway
                ? (int)LegacyQuantMath.RoundAwayFromZero(w * id) + layout.Offset
                : (int)MathF.Floor(w * id + (layout.Offset + 0.5f));
        return Math.Clamp(code, 0, layout.MaxCode);
    }

    /// <summary>What the dequantizer computes for a code: level·d (+ m), level = code − offset.</summary>
    private float Decode(ReadOnlySpan<float> p, int code) =>
        layout.HasMin ? code * p[0] + p[1] : (code - layout.Offset) * p[0];

    public float Round(ReadOnlySpan<float> p, int index, float w) => Decode(p, Code(p, w));

    public void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst)
    {
        Span<byte> codes = stackalloc byte[32];
        int bytes = codec.BlockBytes;
        for (int b = 0; b < values.Length / 32; b++)
        {
            var p = rowParameters.Slice(4 * b, 4);
            var v = values.Slice(32 * b, 32);
            for (int i = 0; i < 32; i++)
            {
                int code = Code(p, v[i]);
                if (Decode(p, code) != v[i]) code = FindExactCode(p, v[i]);
                codes[i] = (byte)code;
            }
            var block = dst.Slice(b * bytes, bytes);
            LegacyQuantMath.WriteHalf(block, 0, p[0]);
            if (layout.HasMin) LegacyQuantMath.WriteHalf(block, 2, p[1]);
            var payload = block.Slice(layout.HasMin ? 4 : 2);
            switch (layout.Bits)
            {
                case 4:
                    for (int j = 0; j < 16; j++) payload[j] = (byte)(codes[j] | codes[j + 16] << 4);
                    break;
                case 5:
                    Q5_0Codec.Pack(codes, payload);
                    break;
                default:
                    for (int j = 0; j < 32; j++) payload[j] = (byte)(codes[j] - layout.Offset); // two's complement int8
                    break;
            }
        }
    }

    private int FindExactCode(ReadOnlySpan<float> p, float value)
    {
        for (int c = 0; c <= layout.MaxCode; c++)
            if (Decode(p, c) == value) return c;
        throw new LowbitException($"{codec.Name}: value {value} is not on the fitted grid, cannot encode it exactly");
    }
}
