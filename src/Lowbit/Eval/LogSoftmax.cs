using System.Buffers;
using System.Numerics.Tensors;

namespace Lowbit.Eval;

internal static class LogSoftmax
{
    /// <summary>log(sum(exp(x − max))) and max, so log p_i = x_i − max − lse.</summary>
    public static (float Max, float LogSumExp) Normalizer(ReadOnlySpan<float> logits)
    {
        float max = TensorPrimitives.Max(logits);
        float[] buf = ArrayPool<float>.Shared.Rent(logits.Length);
        try
        {
            var s = buf.AsSpan(0, logits.Length);
            TensorPrimitives.Subtract(logits, max, s);
            TensorPrimitives.Exp(s, s);
            double sum = TensorPrimitives.Sum(s);
            return (max, (float)Math.Log(sum));
        }
        finally { ArrayPool<float>.Shared.Return(buf); }
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
