namespace Lowbit.Engine;

/// <summary>Which linear layers read an observed activation.</summary>
public enum LinearInput
{
    /// <summary>attn_norm output: read by attn_q, attn_k, attn_v.</summary>
    Attention,
    /// <summary>Attention result: read by attn_output.</summary>
    AttentionOutput,
    /// <summary>ffn_norm output: read by ffn_gate, ffn_up.</summary>
    Ffn,
    /// <summary>silu(gate)·up: read by ffn_down.</summary>
    FfnDown,
}

/// <summary>
/// Sees the input of every linear layer during a forward pass, like llama.cpp's eval callback that
/// llama-imatrix uses: the hook for importance matrices, GPTQ Hessians and AWQ/SmoothQuant statistics.
/// Called on the engine's thread; <paramref name="input"/> is tokens × width, valid only during the call.
/// </summary>
public interface IActivationObserver
{
    void Observe(int layer, LinearInput kind, ReadOnlySpan<float> input, int tokens, int width);
}
