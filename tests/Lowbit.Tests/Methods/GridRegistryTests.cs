using Lowbit.Formats;
using Lowbit.Methods.Grids;

namespace Lowbit.Tests.Methods;

/// <summary>Which registered codecs GPTQ can target: every weight format except those with nothing to round or a tensor-level header.</summary>
public sealed class GridRegistryTests
{
    /// <summary>
    /// No GPTQ grid, on purpose: float formats (nothing to compensate), the activation formats q8_1/q8_K, and the
    /// tensor-level codecs whose header (per-row or per-tensor scales, double-quantized absmax) GPTQ's per-row encoder
    /// cannot write; and the W8A8 formats, whose rows carry their own per-channel scale (they are paired with
    /// SmoothQuant, not GPTQ).
    /// </summary>
    private static readonly HashSet<string> WithoutGrid = new(StringComparer.OrdinalIgnoreCase)
    {
        "f32", "f16", "bf16", "q8_1", "q8_K",
        "fp8_e4m3-channel", "fp8_e5m2-channel", "nf4", "nf4-nodq", "nvfp4-ts",
        "w8a8-int8", "w8a8-fp8", "llm-int8",
    };

    [Fact]
    public void Every_registered_weight_codec_has_a_grid_with_its_block_geometry()
    {
        foreach (var codec in CodecRegistry.Codecs)
        {
            var grid = QuantGrids.TryFor(codec);
            if (WithoutGrid.Contains(codec.Name))
            {
                Assert.Null(grid);
                continue;
            }
            Assert.True(grid is not null, $"{codec.Name} has no GPTQ grid");
            // Groups cover whole codec blocks, so EncodeRow writes whole blocks.
            Assert.Equal(0, grid.GroupSize % codec.BlockSize);
        }
    }

    [Fact]
    public void Unsupported_codec_is_a_clear_error()
    {
        var ex = Assert.Throws<LowbitException>(() => QuantGrids.For(CodecRegistry.Get("nf4")));
        Assert.Contains("nf4", ex.Message);
    }
}
