using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.Pipeline;

/// <summary>
/// In-memory model variants: the same model with some tensors re-encoded. Used to evaluate a
/// quantization without writing a file (quantize --eval, sensitivity, budgeted mixed precision).
/// A variant shares every unchanged tensor (and so the memory maps) with its base: dispose the base last.
/// </summary>
public static class ModelTransforms
{
    /// <summary>Encodes one tensor with <paramref name="target"/> into a new in-memory tensor.</summary>
    public static ModelTensor QuantizeTensor(ModelTensor source, TensorCodec target, ReadOnlyMemory<float> importance,
        int threads, CancellationToken cancel = default)
    {
        var data = source.Data;
        var bytes = new byte[target.TensorBytes(source.Rows, source.Cols)];
        TensorQuantizer.Quantize(source, data, target, importance, bytes, threads, cancel);
        return new ModelTensor(source.Name, source.Shape, target, bytes);
    }

    /// <summary>A model whose tensors named in <paramref name="replacements"/> are swapped; everything else is shared.</summary>
    public static LoadedModel WithTensors(LoadedModel model, IReadOnlyDictionary<string, ModelTensor> replacements)
    {
        var tensors = new List<ModelTensor>(model.Tensors.Count);
        foreach (var t in model.Tensors)
        {
            if (replacements.TryGetValue(t.Name, out var r))
            {
                if (!r.Shape.SequenceEqual(t.Shape))
                    throw new ArgumentException($"replacement for '{t.Name}' has shape [{string.Join(", ", r.Shape)}], expected [{string.Join(", ", t.Shape)}]");
                tensors.Add(r);
            }
            else tensors.Add(t);
        }
        foreach (var name in replacements.Keys)
            if (model.TryGet(name) is null) throw new ArgumentException($"model has no tensor '{name}' to replace");
        return new LoadedModel(model.SourcePath, model.SourceFormat, model.Config, model.Tokenizer, tensors, model.Metadata);
    }

    /// <summary>
    /// Encodes every tensor whose entry in <paramref name="plan"/> names a codec different from its own,
    /// in memory (bounded by the model's quantized size). Tensors absent from the plan stay as they are.
    /// </summary>
    public static LoadedModel Quantize(LoadedModel model, IReadOnlyDictionary<string, TensorCodec> plan, int threads,
        Func<string, ReadOnlyMemory<float>>? importance = null, IProgress<(int Done, int Total, string Name)>? progress = null,
        CancellationToken cancel = default)
    {
        var replacements = new Dictionary<string, ModelTensor>();
        int done = 0;
        foreach (var t in model.Tensors)
        {
            cancel.ThrowIfCancellationRequested();
            if (plan.TryGetValue(t.Name, out var codec) && !ReferenceEquals(codec, t.Codec))
                replacements[t.Name] = QuantizeTensor(t, codec, importance?.Invoke(t.Name) ?? default, threads, cancel);
            progress?.Report((++done, model.Tensors.Count, t.Name));
        }
        return WithTensors(model, replacements);
    }
}
