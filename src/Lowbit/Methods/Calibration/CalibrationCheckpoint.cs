using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Lowbit.Formats;
using Lowbit.IO;
using Lowbit.Model;

namespace Lowbit.Methods.Calibration;

/// <summary>
/// Resumable state of a <see cref="CalibrationPipeline"/> run in a directory: per finished block its
/// encoded tensors (block-N.tensors), the hidden states after the last finished block (hidden-N.f32),
/// and state.json naming the last finished block and a fingerprint of the inputs (model shape and
/// tensors, plan, samples), so a resume never mixes runs. Every file is written atomically and
/// state.json last: a crash leaves the previous consistent state.
/// </summary>
public static class CalibrationCheckpoint
{
    private const string StateFile = "state.json";

    public sealed record Saved(int LastBlock, IReadOnlyList<ModelTensor> Tensors, float[][] Hidden);

    private sealed record State(string Fingerprint, int LastBlock);

    public static string Fingerprint(LoadedModel model, CalibrationData data, IReadOnlyDictionary<string, TensorTarget> plan, bool trueSequential)
    {
        var sb = new StringBuilder();
        sb.Append(model.SourcePath).Append('\n').Append(JsonSerializer.Serialize(model.Config)).Append('\n').Append(trueSequential).Append('\n');
        foreach (var t in model.Tensors) sb.Append(t.Name).Append(' ').Append(t.Codec.Name).Append(' ').Append(string.Join(",", t.Shape)).Append('\n');
        foreach (var (name, target) in plan.OrderBy(p => p.Key, StringComparer.Ordinal))
            sb.Append(name).Append(' ').Append(target).Append(' ').Append(target.GptqOptions).Append(' ').Append(target.UseImportance).Append('\n');
        using var sha = SHA256.Create();
        var bytes = Encoding.UTF8.GetBytes(sb.ToString());
        sha.TransformBlock(bytes, 0, bytes.Length, null, 0);
        foreach (var s in data.Samples)
        {
            var b = MemoryMarshal.AsBytes(s.AsSpan()).ToArray();
            sha.TransformBlock(b, 0, b.Length, null, 0);
        }
        sha.TransformFinalBlock([], 0, 0);
        return Convert.ToHexString(sha.Hash!);
    }

    /// <summary>Loads the state in <paramref name="directory"/> if it exists and belongs to this run (same fingerprint); otherwise null.</summary>
    public static Saved? TryLoad(string directory, string fingerprint, LoadedModel model, int samples, int floatsPerSample)
    {
        string statePath = Path.Combine(directory, StateFile);
        if (!File.Exists(statePath)) return null;
        State state;
        try
        {
            state = JsonSerializer.Deserialize<State>(File.ReadAllText(statePath)) ?? throw new LowbitException($"{statePath}: empty checkpoint state");
        }
        catch (JsonException e)
        {
            throw new LowbitException($"{statePath}: unreadable checkpoint state: {e.Message}");
        }
        if (state.Fingerprint != fingerprint)
            throw new LowbitException($"{directory}: checkpoint belongs to a different model, plan or calibration set; use another directory or delete it");
        var tensors = new List<ModelTensor>();
        for (int l = 0; l <= state.LastBlock; l++) tensors.AddRange(ReadTensors(Path.Combine(directory, $"block-{l}.tensors"), model));
        var hidden = ReadHidden(Path.Combine(directory, $"hidden-{state.LastBlock}.f32"), samples, floatsPerSample);
        return new Saved(state.LastBlock, tensors, hidden);
    }

    /// <summary>Records block <paramref name="layer"/> as finished: its tensors and the hidden states it produced.</summary>
    public static void SaveBlock(string directory, string fingerprint, int layer, IReadOnlyList<ModelTensor> tensors, float[][] hidden, int floatsPerSample)
    {
        Directory.CreateDirectory(directory);
        WriteTensors(Path.Combine(directory, $"block-{layer}.tensors"), tensors);
        using (var f = AtomicFile.Create(Path.Combine(directory, $"hidden-{layer}.f32")))
        {
            using (var bw = new BinaryWriter(f.Stream, Encoding.UTF8, leaveOpen: true))
            {
                bw.Write(hidden.Length);
                bw.Write(floatsPerSample);
                foreach (var hs in hidden) bw.Write(MemoryMarshal.AsBytes(hs.AsSpan(0, floatsPerSample)));
            }
            f.Commit();
        }
        using (var f = AtomicFile.Create(Path.Combine(directory, StateFile)))
        {
            f.Stream.Write(JsonSerializer.SerializeToUtf8Bytes(new State(fingerprint, layer)));
            f.Commit();
        }
        // Older hidden states are no longer needed once the state names this block.
        for (int l = 0; l < layer; l++)
        {
            string old = Path.Combine(directory, $"hidden-{l}.f32");
            if (File.Exists(old)) File.Delete(old);
        }
    }

    private static void WriteTensors(string path, IReadOnlyList<ModelTensor> tensors)
    {
        using var f = AtomicFile.Create(path);
        using (var bw = new BinaryWriter(f.Stream, Encoding.UTF8, leaveOpen: true))
        {
            bw.Write(tensors.Count);
            foreach (var t in tensors)
            {
                bw.Write(t.Name);
                bw.Write(t.Codec.Name);
                bw.Write(t.Shape.Length);
                foreach (var d in t.Shape) bw.Write(d);
                var data = t.Data;
                bw.Write((long)data.Length);
                bw.Write(data.Span);
            }
        }
        f.Commit();
    }

    private static List<ModelTensor> ReadTensors(string path, LoadedModel model)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: checkpoint block file is missing");
        try
        {
            using var br = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
            int count = br.ReadInt32();
            var list = new List<ModelTensor>(count);
            for (int i = 0; i < count; i++)
            {
                string name = br.ReadString();
                var codec = CodecRegistry.Get(br.ReadString());
                var shape = new long[br.ReadInt32()];
                for (int d = 0; d < shape.Length; d++) shape[d] = br.ReadInt64();
                long length = br.ReadInt64();
                if (model.TryGet(name) is not { } original || !original.Shape.SequenceEqual(shape) || length != codec.TensorBytes(original.Rows, original.Cols))
                    throw new InvalidModelFileException(path, $"checkpoint tensor '{name}' does not match the model");
                list.Add(new ModelTensor(name, shape, codec, br.ReadBytes(checked((int)length))));
            }
            return list;
        }
        catch (EndOfStreamException)
        {
            throw new InvalidModelFileException(path, "checkpoint block file is truncated");
        }
    }

    private static float[][] ReadHidden(string path, int samples, int floatsPerSample)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: checkpoint hidden states are missing");
        using var br = new BinaryReader(File.OpenRead(path));
        if (br.BaseStream.Length != 8 + 4L * samples * floatsPerSample || br.ReadInt32() != samples || br.ReadInt32() != floatsPerSample)
            throw new InvalidModelFileException(path, "checkpoint hidden states do not match the calibration set");
        var hidden = new float[samples][];
        for (int s = 0; s < samples; s++)
        {
            hidden[s] = new float[floatsPerSample];
            br.BaseStream.ReadExactly(MemoryMarshal.AsBytes(hidden[s].AsSpan()));
        }
        return hidden;
    }
}
