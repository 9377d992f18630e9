using System.Numerics.Tensors;
using Lowbit.Engine;

namespace Lowbit.Eval;

internal static class LogSoftmax
{
    /// <summary>log(sum(exp(x − max))) and max, so log p_i = x_i − max − lse.</summary>
    public static (float Max, float LogSumExp) Normalizer(ReadOnlySpan<float> logits)
    {
        float max = TensorPrimitives.Max(logits);
        return (max, (float)Math.Log(FastMath.SumExp(logits, max)));
    }

    public static double LogProb(ReadOnlySpan<float> logits, int token)
    {
        var (max, lse) = Normalizer(logits);
        return (double)logits[token] - max - lse;
    }

    /// <summary>Full log-softmax into dst.</summary>
    public static void Compute(ReadOnlySpan<float> logits, Span<float> dst)
    {
        var (max, lse) = Normalizer(logits);
        TensorPrimitives.Subtract(logits, max + lse, dst);
    }
}
