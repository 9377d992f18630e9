using Lowbit.Formats;

namespace Lowbit.Tests;

public sealed class CodecRegistryTests
{
    [Fact]
    public void F32_is_registered_by_name_and_ggml_id()
    {
        Assert.Same(CodecRegistry.Get("f32"), CodecRegistry.Get(GgmlType.F32));
    }
}
