using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Lowbit.Formats;

namespace Lowbit.Engine;

/// <summary>Storage format of the attention key/value cache.</summary>
public enum KvCacheType
{
    F32,
    F16,
    /// <summary>ggml Q8_0 layout: blocks of 32 int8 with an F16 scale (8.5 bits per value).</summary>
    Q8_0,
    /// <summary>OCP FP8 E4M3 (bias 7, max 448, saturating), one byte per value, no scale.</summary>
    Fp8E4M3,
}

/// <summary>
/// Where K (or V) row values lie in the array <see cref="KvCache.Read"/> returns: head h's values for position p start at
/// h·<see cref="HeadStride"/> + p·<see cref="RowStride"/> (head dim values, contiguous).
/// </summary>
internal readonly record struct KvLayout(int HeadStride, int RowStride);

/// <summary>
/// Per-layer key and value rows (kvDim values per position) for positions [0, capacity).
/// Rows are encoded on write and decoded to F32 for attention.
/// <para>
/// An F32 cache, which attention reads in place, stores each KV head's rows together ([head][position][head dim]):
/// one-token attention walks one head's keys and values at a time, and so reads one contiguous stream per head
/// instead of 256-byte slices of rows kvDim apart, from memory (a token streams all the weights in between). The 1B
/// Q4_0 model decoded 0.9 and 1.7 % faster at positions up to 250 and 7.2 and 4.7 % faster up to 1018 (stop 16: one
/// process, two engines over the same weights, one per layout, alternating every 4 tokens for 60 s); F16 weights,
/// whose tokens take longer, −0.2 % up to 250. Quantized caches decode into a scratch array per step, row by row.
/// </para>
/// <para>
/// The F32 cache is one <see cref="NativeBuffer"/> (huge pages where granted, as for the weights), which attention
/// reads through a pointer. Against pinned managed arrays (4 KiB pages here) the 1B Q4_0 model decoded 1.004, 1.063
/// and 1.019 as fast at positions 0–128, 448–576 and 1900–2040 with the managed engine built first, and 1.002 at
/// 448–576 with it built second (stop 18: two engines in one process, alternating every 4 tokens): no clear gain,
/// no loss.
/// </para>
/// </summary>
internal sealed unsafe class KvCache
{
    private readonly NativeBuffer? _f32; // F32 caches: [layer][K, V][head][position][head dim]
    private readonly long _f32Half;     // floats of one layer's K (or V)
    private readonly byte[][]? _k, _v;
    private readonly float[]? _kDecoded, _vDecoded; // quantized caches: pinned, the rows Read decodes (capacity × kvDim)
    private readonly int _rowBytes;
    private readonly TensorCodec? _q8;

    public KvCache(KvCacheType type, int layers, int capacity, int kvDim, int headDim)
    {
        if (headDim <= 0 || kvDim % headDim != 0) throw new ArgumentException($"KV row of {kvDim} values is not whole heads of {headDim}");
        Type = type;
        Layers = layers;
        Capacity = capacity;
        KvDim = kvDim;
        HeadDim = headDim;
        if (type == KvCacheType.F32)
        {
            _f32Half = (long)capacity * kvDim;
            _f32 = new NativeBuffer(2 * layers * _f32Half * sizeof(float));
            return;
        }
        switch (type)
        {
            case KvCacheType.F16: _rowBytes = kvDim * 2; break;
            case KvCacheType.Fp8E4M3: _rowBytes = kvDim; break;
            case KvCacheType.Q8_0:
                if (kvDim % Q8_0Block.Size != 0)
                    throw new LowbitException($"KV cache q8_0 needs a KV row length that is a multiple of 32; this model has {kvDim}");
                // Prefer the registered ggml Q8_0 codec when present (same layout as our fallback).
                _q8 = CodecRegistry.TryGet("q8_0");
                if (_q8 is not null && (_q8.BlockSize != Q8_0Block.Size || _q8.BlockBytes != Q8_0Block.Bytes)) _q8 = null;
                _rowBytes = kvDim / Q8_0Block.Size * Q8_0Block.Bytes;
                break;
            default: throw new ArgumentOutOfRangeException(nameof(type));
        }
        _k = NewArrays<byte>(layers, (long)capacity * _rowBytes);
        _v = NewArrays<byte>(layers, (long)capacity * _rowBytes);
        _kDecoded = GC.AllocateArray<float>(checked(capacity * kvDim), pinned: true);
        _vDecoded = GC.AllocateArray<float>(checked(capacity * kvDim), pinned: true);
    }

    private static T[][] NewArrays<T>(int n, long length)
    {
        var a = new T[n][];
        for (int i = 0; i < n; i++) a[i] = new T[checked((int)length)];
        return a;
    }

    public KvCacheType Type { get; }
    public int Layers { get; }
    public int Capacity { get; }
    public int KvDim { get; }
    public int HeadDim { get; }

    /// <summary>Bytes per position per layer for K and V together.</summary>
    public long BytesPerPositionPerLayer => 2L * (Type == KvCacheType.F32 ? KvDim * 4 : _rowBytes);

    public void Write(int layer, int pos, ReadOnlySpan<float> k, ReadOnlySpan<float> v)
    {
        if (_f32 is not null)
        {
            float* kd = F32(layer, false), vd = F32(layer, true);
            for (int h = 0; h < KvDim / HeadDim; h++)
            {
                long at = ((long)h * Capacity + pos) * HeadDim;
                k.Slice(h * HeadDim, HeadDim).CopyTo(new Span<float>(kd + at, HeadDim));
                v.Slice(h * HeadDim, HeadDim).CopyTo(new Span<float>(vd + at, HeadDim));
            }
            return;
        }
        Encode(k, _k![layer].AsSpan(pos * _rowBytes, _rowBytes));
        Encode(v, _v![layer].AsSpan(pos * _rowBytes, _rowBytes));
    }

    /// <summary>
    /// K (or V) rows for positions [0, count) as F32, laid out as <paramref name="layout"/> says: the cache's own memory
    /// for F32 caches, else decoded into the cache's pinned K (or V) scratch (count × KvDim, row p at p × KvDim), which
    /// the next Read of the same kind overwrites. Valid while this cache lives.
    /// </summary>
    public float* Read(int layer, bool values, int count, out KvLayout layout, ParallelRunner? par = null)
    {
        if (_f32 is not null)
        {
            layout = new KvLayout(Capacity * HeadDim, HeadDim);
            return F32(layer, values);
        }
        layout = new KvLayout(HeadDim, KvDim);
        var rows = (values ? _v! : _k!)[layer];
        var decoded = values ? _vDecoded! : _kDecoded!;
        const int BlockRows = 64;
        int blocks = (count + BlockRows - 1) / BlockRows;
        void DecodeBlock(int b)
        {
            int r0 = b * BlockRows, n = Math.Min(BlockRows, count - r0);
            Decode(rows.AsSpan(r0 * _rowBytes, n * _rowBytes), decoded.AsSpan(r0 * KvDim, n * KvDim));
        }
        if (par is null) for (int b = 0; b < blocks; b++) DecodeBlock(b);
        else par.For(blocks, (long)count * KvDim < 1 << 15, DecodeBlock);
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(decoded));
    }

    /// <summary>
    /// The warm-up (<see cref="ParallelRunner.Warmup"/>) for one-token attention over positions [<paramref name="start"/>,
    /// <paramref name="end"/>) of <paramref name="layer"/>, run on <paramref name="par"/> as one item per KV head: for
    /// each thread, the front of the K and V rows of the heads in its share, head by head as the attention reads them,
    /// at most <paramref name="bytesPerThread"/> in all. <paramref name="capped"/>: every run was cut short by the budget,
    /// so the plan holds for any later end. Null unless the cache is F32 (the others are decoded first).
    /// </summary>
    public WarmPlan? AttentionWarmPlan(int layer, int start, int end, ParallelRunner par, long bytesPerThread, out bool capped)
    {
        capped = false;
        if (_f32 is null || par.Threads < 2 || end <= start) return null;
        int heads = KvDim / HeadDim;
        long rowBytes = HeadDim * sizeof(float);
        var plan = new (nint, long)[par.Threads][];
        capped = true;
        for (int t = 0; t < plan.Length; t++)
        {
            var (front, count) = par.FirstPiece(heads, 1, 1, t);
            if (count == 0) { plan[t] = []; continue; }
            var next = t + 1 < plan.Length ? par.FirstPiece(heads, 1, 1, t + 1) : default;
            int back = next.Count > 0 ? next.Front : heads;
            long perRun = bytesPerThread / (2L * (back - front)) / rowBytes * rowBytes;
            long bytes = Math.Min((long)(end - start) * rowBytes, perRun);
            capped &= bytes == perRun;
            var runs = new (nint, long)[2 * (back - front)];
            for (int h = front, i = 0; h < back; h++)
            {
                long offset = ((long)h * Capacity + start) * HeadDim;
                runs[i++] = ((nint)(F32(layer, false) + offset), bytes);
                runs[i++] = ((nint)(F32(layer, true) + offset), bytes);
            }
            plan[t] = runs;
        }
        return new WarmPlan(plan, this);
    }

    /// <summary>Layer <paramref name="layer"/>'s K (or V) block of an F32 cache.</summary>
    private float* F32(int layer, bool values) => (float*)_f32!.Pointer + (2L * layer + (values ? 1 : 0)) * _f32Half;

    private void Encode(ReadOnlySpan<float> src, Span<byte> dst)
    {
        switch (Type)
        {
            case KvCacheType.F16:
                TensorPrimitives.ConvertToHalf(src, MemoryMarshal.Cast<byte, Half>(dst));
                break;
            case KvCacheType.Fp8E4M3:
                for (int i = 0; i < src.Length; i++) dst[i] = Fp8E4M3.FromFloat(src[i]);
                break;
            case KvCacheType.Q8_0:
                if (_q8 is not null) _q8.QuantizeRows(src, dst, src.Length, default);
                else Q8_0Block.Quantize(src, dst);
                break;
        }
    }

    private void Decode(ReadOnlySpan<byte> src, Span<float> dst)
    {
        switch (Type)
        {
            case KvCacheType.F16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(src), dst);
                break;
            case KvCacheType.Fp8E4M3:
                for (int i = 0; i < dst.Length; i++) dst[i] = Fp8E4M3.ToFloat(src[i]);
                break;
            case KvCacheType.Q8_0:
                if (_q8 is not null) _q8.DequantizeRows(src, dst, KvDim);
                else Q8_0Block.Dequantize(src, dst);
                break;
        }
    }
}

/// <summary>
/// ggml's Q8_0 block (used here only when the q8_0 codec is not registered): an F16 scale
/// d = max|x| / 127 followed by 32 int8 values round(x / d).
/// </summary>
internal static class Q8_0Block
{
    public const int Size = 32;
    public const int Bytes = 34;

    public static void Quantize(ReadOnlySpan<float> src, Span<byte> dst)
    {
        for (int b = 0; b < src.Length / Size; b++)
        {
            var x = src.Slice(b * Size, Size);
            var o = dst.Slice(b * Bytes, Bytes);
            float amax = 0;
            foreach (float v in x) amax = Math.Max(amax, Math.Abs(v));
            float d = amax / 127f;
            float id = d != 0 ? 1f / d : 0f;
            MemoryMarshal.Write(o, (Half)d);
            for (int i = 0; i < Size; i++) o[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero);
        }
    }

    public static void Dequantize(ReadOnlySpan<byte> src, Span<float> dst)
    {
        for (int b = 0; b < dst.Length / Size; b++)
        {
            var q = src.Slice(b * Bytes, Bytes);
            float d = (float)MemoryMarshal.Read<Half>(q);
            for (int i = 0; i < Size; i++) dst[b * Size + i] = d * (sbyte)q[2 + i];
        }
    }
}

/// <summary>OCP FP8 E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities, 0x7F/0xFF are NaN; max 448.</summary>
public static class Fp8E4M3
{
    private static readonly float[] Table = BuildTable();

    private static float[] BuildTable()
    {
        var t = new float[256];
        for (int i = 0; i < 256; i++)
        {
            int sign = i >> 7, exp = (i >> 3) & 15, man = i & 7;
            float v;
            if (exp == 15 && man == 7) v = float.NaN;
            else if (exp == 0) v = man / 8f * MathF.Pow(2, -6);
            else v = (1 + man / 8f) * MathF.Pow(2, exp - 7);
            t[i] = sign != 0 ? -v : v;
        }
        return t;
    }

    public static float ToFloat(byte b) => Table[b];

    /// <summary>Round to nearest even, saturating to ±448; NaN → 0x7F.</summary>
    public static byte FromFloat(float f)
    {
        if (float.IsNaN(f)) return 0x7F;
        uint bits = BitConverter.SingleToUInt32Bits(f);
        byte sign = (byte)((bits >> 24) & 0x80);
        float a = MathF.Abs(f);
        if (a >= 448f) return (byte)(sign | 0x7E);
        // Smallest subnormal step is 2^-9; values are multiples of 2^(e-3) within a binade.
        int e = a < MathF.Pow(2, -6) ? -6 : (int)MathF.Floor(MathF.Log2(a));
        if (e > 8) e = 8;
        // Guard against Log2 rounding at binade edges.
        if (e > -6 && a < MathF.Pow(2, e)) e--;
        if (a >= MathF.Pow(2, e + 1)) e++;
        float step = MathF.Pow(2, e - 3);
        float q = MathF.Round(a / step, MidpointRounding.ToEven) * step; // exact: power-of-two scaling
        if (q >= 448f) return (byte)(sign | 0x7E);
        // Encode q.
        if (q < MathF.Pow(2, -6))
            return (byte)(sign | (int)(q / MathF.Pow(2, -9)));
        int qe = (int)MathF.Floor(MathF.Log2(q));
        if (q < MathF.Pow(2, qe)) qe--;
        if (q >= MathF.Pow(2, qe + 1)) qe++;
        int man = (int)((q / MathF.Pow(2, qe) - 1) * 8);
        return (byte)(sign | ((qe + 7) << 3) | man);
    }
}
