using System.Diagnostics;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Recipes;

namespace Lowbit.Pipeline;

/// <summary>What happened to one tensor during an export.</summary>
public sealed record TensorReport(string Name, long[] Shape, string SourceFormat, string Format, long SourceBytes, long Bytes, string? Note);

/// <summary>The outcome of writing a model to GGUF.</summary>
public sealed record ExportReport(string OutputPath, IReadOnlyList<TensorReport> Tensors, long SourceBytes, long OutputFileBytes,
    long ParameterCount, TimeSpan Elapsed)
{
    /// <summary>Bits per weight over all tensors (file payload, without the header).</summary>
    public double BitsPerWeight => 8.0 * Tensors.Sum(t => t.Bytes) / Math.Max(1, ParameterCount);
    /// <summary>Throughput in GB/s of source (input) tensor bytes.</summary>
    public double InputGBps => SourceBytes / 1e9 / Math.Max(1e-9, Elapsed.TotalSeconds);
}

/// <summary>
/// Streams a model into a GGUF file: tensor by tensor, each read from its memory-mapped source,
/// re-encoded on all cores (<see cref="TensorQuantizer"/>) and written straight out, so memory holds
/// one output tensor at a time. The file appears atomically when complete.
/// </summary>
public static class GgufExporter
{
    /// <param name="metadata">The GGUF key/values (architecture, hyper-parameters, tokenizer, file type).</param>
    /// <param name="plan">Output tensors in file order with their GGUF types.</param>
    /// <param name="importance">Per-tensor importance vectors (imatrix), or null.</param>
    public static ExportReport Write(LoadedModel model, GgufMetadata metadata, IReadOnlyList<MixtureEntry> plan, string outputPath,
        int threads, Func<string, ReadOnlyMemory<float>>? importance = null, IProgress<GgufWriteProgress>? progress = null,
        CancellationToken cancel = default)
    {
        var sw = Stopwatch.StartNew();
        var writer = new GgufWriter();
        foreach (var e in metadata.Entries) writer.Metadata.SetValue(e.Key, e.Type, e.Value);
        var codecs = new TensorCodec[plan.Count];
        for (int i = 0; i < plan.Count; i++)
        {
            codecs[i] = CodecRegistry.Get(plan[i].Type);
            writer.AddTensor(plan[i].Tensor.Name, plan[i].Tensor.Shape, codecs[i]);
        }
        var reports = new TensorReport[plan.Count];
        long sourceBytes = 0;
        writer.Write(outputPath, (i, stream) =>
        {
            var src = plan[i].Tensor;
            var target = codecs[i];
            var data = src.Data; // materializes permuted tensors once
            var imp = importance?.Invoke(src.Name) ?? default;
            if (!imp.IsEmpty && !target.UsesImportance) imp = default;
            var bytes = new byte[target.TensorBytes(src.Rows, src.Cols)];
            TensorQuantizer.Quantize(src, data, target, imp, bytes, threads, cancel);
            stream.Write(bytes);
            sourceBytes += src.ByteCount;
            reports[i] = new TensorReport(src.Name, src.Shape, src.Codec.Name, target.Name, src.ByteCount, bytes.Length, plan[i].FallbackNote);
        }, progress, cancel, model.SourcePath);
        sw.Stop();
        long fileBytes = new FileInfo(outputPath).Length;
        long parameters = plan.Sum(p => p.Tensor.ElementCount);
        return new ExportReport(outputPath, reports, sourceBytes, fileBytes, parameters, sw.Elapsed);
    }
}
