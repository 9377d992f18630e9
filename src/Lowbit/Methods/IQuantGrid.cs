namespace Lowbit.Methods;

/// <summary>
/// The rounding grid of a target format, as GPTQ walks it column by column. Columns form groups
/// (contiguous in the original column order) that share parameters (scales, mins, zero points):
/// the parameters of a row's group are fitted once from the current, error-compensated weights
/// (<see cref="Fit"/>), then each weight is rounded to the nearest grid point under them
/// (<see cref="Round"/>), and finally the chosen values are encoded into the codec's bytes
/// exactly (<see cref="EncodeRow"/>) — so GPTQ's decisions survive into the file bit for bit.
/// </summary>
public interface IQuantGrid
{
    /// <summary>Columns per parameter group (the codec's block, or super-block for k-quants).</summary>
    int GroupSize { get; }

    /// <summary>Floats of parameters stored per (row, group).</summary>
    int ParamCount { get; }

    /// <summary>Chooses a group's parameters from its <see cref="GroupSize"/> weights; importance may be empty.</summary>
    void Fit(ReadOnlySpan<float> weights, ReadOnlySpan<float> importance, Span<float> parameters);

    /// <summary>The grid value nearest to <paramref name="w"/> at position <paramref name="index"/> of the group.</summary>
    float Round(ReadOnlySpan<float> parameters, int index, float w);

    /// <summary>
    /// Encodes one row whose values all lie on the grid given by <paramref name="rowParameters"/>
    /// (ParamCount floats per group, groups in column order) into the codec's row bytes.
    /// </summary>
    void EncodeRow(ReadOnlySpan<float> values, ReadOnlySpan<float> rowParameters, Span<byte> dst);
}
