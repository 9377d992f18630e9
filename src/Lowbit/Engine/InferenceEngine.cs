using System.Buffers;
using System.Numerics.Tensors;
using Lowbit.Model;

namespace Lowbit.Engine;

/// <summary>
/// Llama-family decoder (llama, mistral, qwen2, qwen3) running a <see cref="LoadedModel"/> in any
/// codec on the CPU, with a KV cache. Stateful: tokens are appended at <see cref="Position"/>;
/// <see cref="Reset"/> clears the cache. Not thread-safe (one sequence per engine); the engine
/// parallelizes internally. The model must outlive the engine (weights are views of its data).
/// </summary>
public sealed unsafe class InferenceEngine
{
    private sealed class Layer
    {
        public required float[] AttnNorm, FfnNorm;
        public float[]? QBias, KBias, VBias, QNorm, KNorm;
        public required WeightMatrix Wq, Wk, Wv, Wo, Gate, Up, Down;
        private WeightMatrix[]? _qkv, _gateUp, _matrices;
        /// <summary>All seven matrices of the block (for byte and multiply-add counts).</summary>
        public WeightMatrix[] Matrices => _matrices ??= [Wq, Wk, Wv, Wo, Gate, Up, Down];
        /// <summary>The products that read the same input, for one fused decode step each.</summary>
        public WeightMatrix[] Qkv => _qkv ??= [Wq, Wk, Wv];
        public WeightMatrix[] GateUp => _gateUp ??= [Gate, Up];
    }

    private readonly ModelConfig _cfg;
    private readonly Layer[] _layers;
    private readonly WeightMatrix _embedding, _lmHead;
    private readonly float[] _outputNorm;
    private readonly KvCache _cache;
    private readonly ParallelRunner _par;
    private readonly int _maxBatch;
    private readonly float[] _invFreq;

    // Activation buffers, sized for _maxBatch tokens.
    private readonly float[] _x, _xb, _xb2, _q, _k, _v, _att, _hb, _hb2;
    private float[] _logits = []; // grown to the rows a call asks for (vocab × batch can be hundreds of MB)
    private float[] _ropeCos = [], _ropeSin = [];
    private float[] _ropeCos2 = [], _ropeSin2 = []; // per token, per value of a head: RopeKernels.RotatePairs' tables

    public InferenceEngine(LoadedModel model, EngineOptions? options = null)
    {
        options ??= new EngineOptions();
        _cfg = model.Config;
        var c = _cfg;
        if (c.HiddenSize <= 0 || c.NumLayers <= 0 || c.NumHeads <= 0 || c.NumKvHeads <= 0 || c.HeadDim <= 0 || c.HeadDim % 2 != 0
            || c.NumHeads % c.NumKvHeads != 0)
            throw new LowbitException($"unsupported model shape: hidden {c.HiddenSize}, layers {c.NumLayers}, heads {c.NumHeads}, kv heads {c.NumKvHeads}, head dim {c.HeadDim}");
        _par = new ParallelRunner(options.Threads);
        _maxBatch = Math.Max(1, options.MaxBatch);
        ContextLength = options.ContextLength > 0 ? options.ContextLength : Math.Min(c.MaxPositions > 0 ? c.MaxPositions : 4096, 4096);
        var output = model.TryGet(TensorNames.Output);
        bool qa = options.QuantizedActivations, qaPrefill = options.QuantizedActivationsInPrefill;
        // The interleaved decode copies double the memory of those matrices: skip them when that would take
        // more than half of the memory this process may use (a model near the machine's size still runs).
        bool interleave = options.InterleavedDecode
            && model.Tensors.Where(t => t.Shape.Length == 2 && (output is null || t.Name != TensorNames.TokenEmbedding))
                            .Sum(t => t.ByteCount) <= GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2;
        var decodeMemory = new NativeArena(); // all decode copies in huge pages (see NativeArena)

        WeightMatrix Matrix(string name, long rows, long cols)
        {
            var t = model.Get(name);
            if (t.Rows != rows || t.Cols != cols)
                throw new InvalidModelFileException(model.SourcePath, $"tensor '{name}' has shape [{string.Join(", ", t.Shape)}], expected [{rows}, {cols}]");
            return new WeightMatrix(t, qa, qaPrefill, interleave, decodeMemory);
        }
        float[] Vector(string name, int length)
        {
            var t = model.Get(name);
            if (t.ElementCount != length)
                throw new InvalidModelFileException(model.SourcePath, $"tensor '{name}' has {t.ElementCount} values, expected {length}");
            return t.ToFloat();
        }
        float[]? OptionalVector(string name, int length) => model.TryGet(name) is null ? null : Vector(name, length);

        int h = c.HiddenSize, qd = c.QDim, kvd = c.KvDim, ff = c.IntermediateSize;
        _embedding = new WeightMatrix(model.Get(TensorNames.TokenEmbedding) is var e && e.Cols == h ? e
            : throw new InvalidModelFileException(model.SourcePath, $"'{TensorNames.TokenEmbedding}' must have {h} columns"), false);
        // Tied embeddings: the head is its own matrix over the same tensor (the lookup table never multiplies),
        // so it gets quantized activations and the interleaved copy as an untied head would, as in llama.cpp.
        _lmHead = output is null ? new WeightMatrix(_embedding.Tensor, qa, qaPrefill, interleave, decodeMemory) : Matrix(TensorNames.Output, output.Rows, h);
        VocabSize = _lmHead.Rows;
        _outputNorm = Vector(TensorNames.OutputNorm, h);
        _layers = new Layer[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            _layers[l] = new Layer
            {
                AttnNorm = Vector(TensorNames.AttnNorm(l), h),
                FfnNorm = Vector(TensorNames.FfnNorm(l), h),
                Wq = Matrix(TensorNames.AttnQ(l), qd, h),
                Wk = Matrix(TensorNames.AttnK(l), kvd, h),
                Wv = Matrix(TensorNames.AttnV(l), kvd, h),
                Wo = Matrix(TensorNames.AttnOutput(l), h, qd),
                Gate = Matrix(TensorNames.FfnGate(l), ff, h),
                Up = Matrix(TensorNames.FfnUp(l), ff, h),
                Down = Matrix(TensorNames.FfnDown(l), h, ff),
                QBias = OptionalVector(TensorNames.AttnQBias(l), qd),
                KBias = OptionalVector(TensorNames.AttnKBias(l), kvd),
                VBias = OptionalVector(TensorNames.AttnVBias(l), kvd),
                QNorm = c.QkNorm ? Vector(TensorNames.AttnQNorm(l), c.HeadDim) : OptionalVector(TensorNames.AttnQNorm(l), c.HeadDim),
                KNorm = c.QkNorm ? Vector(TensorNames.AttnKNorm(l), c.HeadDim) : OptionalVector(TensorNames.AttnKNorm(l), c.HeadDim),
            };
        }

        _cache = new KvCache(options.KvCache, c.NumLayers, ContextLength, kvd, c.HeadDim);
        (_x, _xb, _xb2, _q, _k, _v, _att, _hb, _hb2) = AllocateBuffers(c, _maxBatch);

        // RoPE inverse frequencies, as llama2.c computes them (float).
        int half = c.HeadDim / 2;
        _invFreq = new float[half];
        for (int i = 0; i < half; i++) _invFreq[i] = 1.0f / MathF.Pow(c.RopeTheta, 2 * i / (float)c.HeadDim);
        _options = options;
    }

    /// <summary>A second engine over the same weights (shared, read-only) with its own cache and buffers.</summary>
    private InferenceEngine(InferenceEngine source, int threads)
    {
        _cfg = source._cfg;
        _layers = source._layers;
        _embedding = source._embedding;
        _lmHead = source._lmHead;
        _outputNorm = source._outputNorm;
        _invFreq = source._invFreq;
        _maxBatch = source._maxBatch;
        _options = source._options with { Threads = threads };
        _par = new ParallelRunner(threads);
        VocabSize = source.VocabSize;
        ContextLength = source.ContextLength;
        _cache = new KvCache(_options.KvCache, _cfg.NumLayers, ContextLength, _cfg.KvDim, _cfg.HeadDim);
        (_x, _xb, _xb2, _q, _k, _v, _att, _hb, _hb2) = AllocateBuffers(_cfg, _maxBatch);
    }

    private readonly EngineOptions _options;

    /// <summary>
    /// Creates an independent engine sharing this one's weights (no copy) with its own KV cache,
    /// e.g. one per thread to evaluate several sequences at once. The clone starts empty.
    /// </summary>
    public InferenceEngine CreateSibling(int threads = 1) => new(this, threads);

    private static (float[], float[], float[], float[], float[], float[], float[], float[], float[]) AllocateBuffers(ModelConfig c, int n)
    {
        int h = c.HiddenSize, qd = c.QDim, kvd = c.KvDim, ff = c.IntermediateSize;
        return (new float[n * h], new float[n * h], new float[n * h], new float[n * qd], new float[n * kvd], new float[n * kvd],
            new float[n * qd], new float[n * ff], new float[n * ff]);
    }

    public ModelConfig Config => _cfg;
    public int VocabSize { get; }
    /// <summary>KV cache capacity in tokens.</summary>
    public int ContextLength { get; }
    /// <summary>Number of tokens in the KV cache (the position of the next token).</summary>
    public int Position { get; private set; }
    public int Threads => _par.Threads;

    /// <summary>The engine's threads (for measurements that must run on them, e.g. a read alongside decode).</summary>
    internal ParallelRunner Runner => _par;
    public KvCacheType KvCacheType => _cache.Type;

    public void Reset() => Position = 0;

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions [Position, Position + n) and appends them to the
    /// cache. Writes the logits of tokens [firstLogit, n) to <paramref name="logits"/>
    /// ((n − firstLogit) × VocabSize, row-major); firstLogit = n computes none.
    /// </summary>
    public void Evaluate(ReadOnlySpan<int> tokens, int firstLogit, Span<float> logits)
    {
        int n = tokens.Length;
        if (firstLogit < 0 || firstLogit > n) throw new ArgumentOutOfRangeException(nameof(firstLogit));
        if ((long)(n - firstLogit) * VocabSize > logits.Length)
            throw new ArgumentException($"logits span holds {logits.Length} values, {(long)(n - firstLogit) * VocabSize} needed");
        if (Position + n > ContextLength)
            throw new LowbitException($"context full: {Position} + {n} tokens exceed the context length {ContextLength}");
        foreach (int t in tokens)
            if ((uint)t >= (uint)_embedding.Rows)
                throw new LowbitException($"token id {t} is outside the vocabulary (0..{_embedding.Rows - 1})");
        int done = 0;
        while (done < n)
        {
            int b = Math.Min(_maxBatch, n - done);
            int lf = Math.Clamp(firstLogit - done, 0, b);
            int rowsOut = b - lf;
            ForwardBatch(tokens.Slice(done, b), lf);
            if (rowsOut > 0)
                _logits.AsSpan(0, rowsOut * VocabSize).CopyTo(logits.Slice((done + lf - firstLogit) * VocabSize));
            done += b;
        }
    }

    /// <summary>Runs a prompt and returns the logits of its last token.</summary>
    public float[] Prefill(ReadOnlySpan<int> tokens)
    {
        if (tokens.IsEmpty) throw new ArgumentException("empty prompt", nameof(tokens));
        var logits = new float[VocabSize];
        Evaluate(tokens, tokens.Length - 1, logits);
        return logits;
    }

    /// <summary>Runs one token and returns its logits.</summary>
    public float[] Decode(int token)
    {
        var logits = new float[VocabSize];
        Evaluate([token], 0, logits);
        return logits;
    }

    /// <summary>Bytes of weights in all matrices a decoded token reads (one embedding row, every layer, the LM head).</summary>
    public long WeightBytesPerToken
    {
        get
        {
            long b = _embedding.ByteCount / Math.Max(1, _embedding.Rows) + _lmHead.ByteCount;
            foreach (var l in _layers)
                foreach (var w in l.Matrices) b += w.ByteCount;
            return b;
        }
    }

    /// <summary>
    /// The weight memory a decoded token streams (every layer's matrices and the LM head, in that order; the one
    /// embedding row is left out), and the handles pinning managed rows while it is read: dispose them after.
    /// </summary>
    internal (List<(nint Pointer, long Length)> Regions, List<System.Buffers.MemoryHandle> Pins) DecodeWeightMemory()
    {
        var regions = new List<(nint Pointer, long Length)>();
        var pins = new List<System.Buffers.MemoryHandle>();
        foreach (var l in _layers)
            foreach (var w in l.Matrices) w.AddDecodeMemory(regions, pins);
        _lmHead.AddDecodeMemory(regions, pins);
        return (regions, pins);
    }

    /// <summary>Memory traffic of decoding one token at context length <paramref name="contextTokens"/>: weights plus KV cache rows read.</summary>
    public long DecodeBytesPerToken(int contextTokens)
        => WeightBytesPerToken + (long)_cfg.NumLayers * contextTokens * _cache.BytesPerPositionPerLayer;

    /// <summary>Multiply-adds per prompt token in matrices whose prefill runs on integer dot products (<see cref="WeightMatrix.IntegerPrefill"/>).</summary>
    public long IntegerPrefillMultiplyAddsPerToken
    {
        get
        {
            long m = _lmHead.IntegerPrefill ? (long)_lmHead.Rows * _lmHead.Cols : 0;
            foreach (var l in _layers)
                foreach (var w in l.Matrices)
                    if (w.IntegerPrefill) m += (long)w.Rows * w.Cols;
            return m;
        }
    }

    /// <summary>Multiply-adds of a forward pass of one token at position <paramref name="pos"/> (matrices + attention).</summary>
    public long MultiplyAddsPerToken(int pos)
    {
        long m = (long)_lmHead.Rows * _lmHead.Cols;
        foreach (var l in _layers)
        {
            foreach (var w in l.Matrices) m += (long)w.Rows * w.Cols;
            m += 2L * _cfg.QDim * (pos + 1);
        }
        return m;
    }

    private void ForwardBatch(ReadOnlySpan<int> tokens, int firstLogit)
    {
        var c = _cfg;
        int n = tokens.Length, h = c.HiddenSize, qd = c.QDim, kvd = c.KvDim, ff = c.IntermediateSize;
        int p0 = Position;

        for (int t = 0; t < n; t++) _embedding.DequantizeRows(tokens[t], 1, _x.AsSpan(t * h, h));
        PrepareRope(p0, n);

        for (int l = 0; l < _layers.Length; l++) ForwardLayer(l, n, p0);
        Position = p0 + n;

        int m = n - firstLogit;
        if (m <= 0) return;
        long need = (long)m * VocabSize;
        if (need > int.MaxValue) throw new LowbitException($"{m} rows of {VocabSize} logits exceed one buffer; evaluate fewer tokens per call");
        if (_logits.Length < need) _logits = new float[need];
        RmsNorm(_x.AsSpan(firstLogit * h), _xb, m, h, _outputNorm);
        if (n == 1) Warm(4 * _layers.Length);
        _lmHead.MatMul(_xb, 0, m, _logits, 0, _par);
    }

    /// <summary>
    /// Bytes of its share of the next decode step that each thread prefetches into its L2 while it waits: while the caller
    /// runs the serial work between two steps (norms, RoPE, SwiGLU, quantizing the next activation) and while the first
    /// thread done waits for the other (<see cref="ParallelRunner.Warmup"/>, <see cref="WeightMatrix.DecodeWarmPlan"/>).
    /// Memory otherwise idles then: a 1B Q4_0 token on the Zen 4 VM spent 0.6–0.7 ms outside the matrix steps and
    /// 0.4–0.5 ms quantizing activations inside them, of 13–19 ms. Synthetic 1B model, one process alternating 0 and this
    /// every 4 tokens for 100 s, each cycle bucketed by a plain read of the weights just after it (stop 21): Q4_0 1.018
    /// with reads near 34 GB/s, 1.018 near 58, 0.989 near 52 (30 cycles); Q4_K 1.020, 1.019, 0.989 (26 cycles); Q8_0
    /// 1.000, 1.016, 0.993; F16 1.003, 1.003, 0.990 (9 cycles). In an earlier run against 256 and 768 KB, 512 KB was best
    /// or level. Half an L2 of Zen 4 or 5.
    /// </summary>
    private const long DecodeWarmBytes = 512 << 10;

    private WarmPlan?[]? _warmPlans;

    /// <summary>
    /// Before decode matrix step <paramref name="step"/> of a token (4 per block: q/k/v, attn_output, gate/up, down;
    /// then the head), sets the runner to warm the step after it while threads wait.
    /// </summary>
    private void Warm(int step)
    {
        if (_par.Threads < 2) return;
        if (_warmPlans is null)
        {
            var plans = new WarmPlan?[4 * _layers.Length + 1];
            for (int l = 0; l < _layers.Length; l++)
            {
                var L = _layers[l];
                plans[4 * l] = WeightMatrix.DecodeWarmPlan(L.Qkv, _par, DecodeWarmBytes);
                plans[4 * l + 1] = WeightMatrix.DecodeWarmPlan([L.Wo], _par, DecodeWarmBytes);
                plans[4 * l + 2] = WeightMatrix.DecodeWarmPlan(L.GateUp, _par, DecodeWarmBytes);
                plans[4 * l + 3] = WeightMatrix.DecodeWarmPlan([L.Down], _par, DecodeWarmBytes);
            }
            plans[^1] = WeightMatrix.DecodeWarmPlan([_lmHead], _par, DecodeWarmBytes);
            _warmPlans = plans;
        }
        _par.Warmup = _warmPlans[(step + 1) % _warmPlans.Length];
    }

    /// <summary>
    /// Bytes of K and V rows each thread prefetches for the attention step while it waits after the q/k/v step (its KV
    /// heads' first rows, <see cref="KvCache.AttentionWarmPlan"/>): a token streams all the weights between two reads of
    /// a layer's cache, so the attention starts from DRAM. Synthetic 1B Q4_0 model at positions 0–640, one process
    /// alternating with and without it every 4 tokens for 150 s, each cycle bucketed by a plain read of the weights after
    /// it (stop 22, two runs): 1.010 and 1.017 with reads near 50 GB/s, 1.012 and 1.021 near 58, 1.003 and 0.997 near 33.
    /// </summary>
    private const long AttentionWarmBytes = 256 << 10;

    private WarmPlan?[]? _attentionWarm;
    private bool[]? _attentionWarmCapped;

    /// <summary>
    /// Sets the runner to warm, while threads wait after the q/k/v step, the K and V rows that the attention of the token
    /// at <paramref name="pos"/> in layer <paramref name="l"/> reads first. A plan is kept once its runs are as long as the
    /// budget allows (with no sliding window, it then holds for every later position).
    /// </summary>
    private void WarmAttention(int l, int pos)
    {
        if (_par.Threads < 2) return;
        int window = _cfg.SlidingWindow, start = window > 0 ? Math.Max(0, pos - window + 1) : 0;
        _attentionWarm ??= new WarmPlan?[_layers.Length];
        _attentionWarmCapped ??= new bool[_layers.Length];
        if (!_attentionWarmCapped[l] || start > 0)
            _attentionWarm[l] = _cache.AttentionWarmPlan(l, start, pos + 1, _par, AttentionWarmBytes, out _attentionWarmCapped[l]);
        if (_attentionWarm[l] is { } plan) _par.Warmup = plan;
    }

    /// <summary>One transformer block over the n tokens in _x at positions [p0, p0 + n).</summary>
    private void ForwardLayer(int l, int n, int p0)
    {
        var c = _cfg;
        int h = c.HiddenSize, qd = c.QDim, kvd = c.KvDim, ff = c.IntermediateSize;
        var L = _layers[l];
        RmsNorm(_x, _xb, n, h, L.AttnNorm);
        Observer?.Observe(l, LinearInput.Attention, _xb.AsSpan(0, n * h), n, h);
        if (n == 1)
        {
            Warm(4 * l);
            WarmAttention(l, p0);
            WeightMatrix.MatVecShared(L.Qkv, [_q, _k, _v], _xb, 0, _par);
        }
        else
        {
            _par.Warmup = null; // prefill: every step is long, nothing to warm
            L.Wq.MatMul(_xb, 0, n, _q, 0, _par);
            L.Wk.MatMul(_xb, 0, n, _k, 0, _par);
            L.Wv.MatMul(_xb, 0, n, _v, 0, _par);
        }
        if (L.QBias is not null) AddBias(_q, n, L.QBias);
        if (L.KBias is not null) AddBias(_k, n, L.KBias);
        if (L.VBias is not null) AddBias(_v, n, L.VBias);
        if (L.QNorm is not null) RmsNorm(_q, _q, n * c.NumHeads, c.HeadDim, L.QNorm);
        if (L.KNorm is not null) RmsNorm(_k, _k, n * c.NumKvHeads, c.HeadDim, L.KNorm);
        ApplyRope(_q, n, c.NumHeads);
        ApplyRope(_k, n, c.NumKvHeads);
        for (int t = 0; t < n; t++)
            _cache.Write(l, p0 + t, _k.AsSpan(t * kvd, kvd), _v.AsSpan(t * kvd, kvd));
        if (n == 1) Warm(4 * l); // after the attention step: attn_output's weights (WarmAttention replaced them)
        Attention(l, p0, n);
        Observer?.Observe(l, LinearInput.AttentionOutput, _att.AsSpan(0, n * qd), n, qd);
        if (n == 1) Warm(4 * l + 1);
        L.Wo.MatMul(_att, 0, n, _xb2, 0, _par);
        TensorPrimitives.Add(_x.AsSpan(0, n * h), _xb2.AsSpan(0, n * h), _x.AsSpan(0, n * h));

        RmsNorm(_x, _xb, n, h, L.FfnNorm);
        Observer?.Observe(l, LinearInput.Ffn, _xb.AsSpan(0, n * h), n, h);
        if (n == 1)
        {
            Warm(4 * l + 2);
            WeightMatrix.MatVecShared(L.GateUp, [_hb, _hb2], _xb, 0, _par);
        }
        else
        {
            L.Gate.MatMul(_xb, 0, n, _hb, 0, _par);
            L.Up.MatMul(_xb, 0, n, _hb2, 0, _par);
        }
        SwiGlu(n, ff);
        Observer?.Observe(l, LinearInput.FfnDown, _hb.AsSpan(0, n * ff), n, ff);
        if (n == 1) Warm(4 * l + 3);
        L.Down.MatMul(_hb, 0, n, _xb2, 0, _par);
        TensorPrimitives.Add(_x.AsSpan(0, n * h), _xb2.AsSpan(0, n * h), _x.AsSpan(0, n * h));
    }

    /// <summary>Receives the inputs of every linear layer during forward passes (calibration statistics); null = none.</summary>
    public IActivationObserver? Observer { get; set; }

    /// <summary>Writes the token embeddings of <paramref name="tokens"/> into <paramref name="hidden"/> (tokens × hidden).</summary>
    public void Embed(ReadOnlySpan<int> tokens, Span<float> hidden)
    {
        int h = _cfg.HiddenSize;
        for (int t = 0; t < tokens.Length; t++)
        {
            if ((uint)tokens[t] >= (uint)_embedding.Rows) throw new LowbitException($"token id {tokens[t]} is outside the vocabulary");
            _embedding.DequantizeRows(tokens[t], 1, hidden.Slice(t * h, h));
        }
    }

    /// <summary>
    /// Runs one sequence, given as hidden states at positions 0..n−1, through blocks [firstLayer, lastLayer)
    /// and writes the result back into <paramref name="hidden"/>: the block-by-block step of calibrated
    /// quantization (GPTQ/AWQ pipelines). Resets the cache.
    /// </summary>
    public void ForwardLayers(Span<float> hidden, int n, int firstLayer, int lastLayer)
    {
        int h = _cfg.HiddenSize;
        if (n <= 0 || n > _maxBatch || n > ContextLength)
            throw new ArgumentOutOfRangeException(nameof(n), $"{n} tokens; at most {Math.Min(_maxBatch, ContextLength)} per call");
        if (hidden.Length < n * h) throw new ArgumentException("hidden too small");
        if (firstLayer < 0 || lastLayer > _layers.Length || firstLayer > lastLayer) throw new ArgumentOutOfRangeException(nameof(firstLayer));
        Reset();
        hidden.Slice(0, n * h).CopyTo(_x);
        PrepareRope(0, n);
        for (int l = firstLayer; l < lastLayer; l++) ForwardLayer(l, n, 0);
        _x.AsSpan(0, n * h).CopyTo(hidden);
    }

    private void RmsNorm(float[] src, float[] dst, int rows, int dim, float[] weight) => RmsNorm(src.AsSpan(), dst, rows, dim, weight);

    private void RmsNorm(ReadOnlySpan<float> src, float[] dst, int rows, int dim, float[] weight)
    {
        float eps = _cfg.RmsNormEps;
        for (int r = 0; r < rows; r++)
        {
            var x = src.Slice(r * dim, dim);
            float ss = TensorPrimitives.SumOfSquares(x) / dim + eps;
            float scale = 1f / MathF.Sqrt(ss);
            var o = dst.AsSpan(r * dim, dim);
            TensorPrimitives.Multiply(x, scale, o);
            TensorPrimitives.Multiply(o, weight, o);
        }
    }

    private static void AddBias(float[] y, int n, float[] bias)
    {
        int d = bias.Length;
        for (int t = 0; t < n; t++) TensorPrimitives.Add(y.AsSpan(t * d, d), bias, y.AsSpan(t * d, d));
    }

    /// <summary>silu(gate) * up = gate * sigmoid(gate) * up, in place into gate (SIMD, parallel over tokens).</summary>
    private void SwiGlu(int n, int ff)
    {
        _par.For(n, (long)n * ff < 1 << 14, t => FastMath.SwiGlu(_hb.AsSpan(t * ff, ff), _hb2.AsSpan(t * ff, ff)));
    }

    private void PrepareRope(int p0, int n)
    {
        int half = _cfg.HeadDim / 2;
        if (_ropeCos.Length < n * half)
        {
            _ropeCos = new float[_maxBatch * half];
            _ropeSin = new float[_maxBatch * half];
            _ropeCos2 = new float[_maxBatch * 2 * half];
            _ropeSin2 = new float[_maxBatch * 2 * half];
        }
        for (int t = 0; t < n; t++)
        {
            int pos = p0 + t;
            for (int i = 0; i < half; i++)
            {
                float angle = pos * _invFreq[i];
                _ropeCos[t * half + i] = MathF.Cos(angle);
                _ropeSin[t * half + i] = MathF.Sin(angle);
            }
            if (_cfg.Rope != RopeStyle.NeoX)
                RopeKernels.ExpandPairs(_ropeCos.AsSpan(t * half, half), _ropeSin.AsSpan(t * half, half),
                    _ropeCos2.AsSpan(t * 2 * half, 2 * half), _ropeSin2.AsSpan(t * 2 * half, 2 * half));
        }
    }

    private void ApplyRope(float[] vecs, int n, int heads)
    {
        int hd = _cfg.HeadDim, half = hd / 2;
        bool neox = _cfg.Rope == RopeStyle.NeoX;
        for (int t = 0; t < n; t++)
        {
            var cos = _ropeCos.AsSpan(t * half, half);
            var sin = _ropeSin.AsSpan(t * half, half);
            var cos2 = _ropeCos2.AsSpan(t * 2 * half, 2 * half);
            var sin2 = _ropeSin2.AsSpan(t * 2 * half, 2 * half);
            for (int hh = 0; hh < heads; hh++)
            {
                var v = vecs.AsSpan((t * heads + hh) * hd, 2 * half);
                if (neox) RopeKernels.RotateHalves(v, cos, sin);
                else RopeKernels.RotatePairs(v, cos2, sin2);
            }
        }
    }

    /// <summary>
    /// Attention of one new token at <paramref name="pos"/> (decode), the same arithmetic per query head as
    /// <see cref="Attention"/>: work items are KV heads, so the keys of a head are read once for all the query
    /// heads that share them (the dot kernel's token blocking, same bits per score), and each thread takes one
    /// contiguous run of KV heads. Against the batched path's items of one query head each, decode of the
    /// synthetic 1B model (Q4_0, 32 query / 8 KV heads) ran 5.5 % faster after 512 positions and 11.6 % after 2000
    /// (one process, switching every 4 tokens), and level at short contexts. The values, too, are read once per KV
    /// head (<see cref="MatKernels.WeightedRowSums"/>: four query heads a pass), and both kernels prefetch the cache's
    /// rows ahead, as a token streams all the weights between two reads of a layer's cache: against scores in a 4x3
    /// and a 4x1 tile and one value pass per query head, the 1B Q4_0 model decoded 2.4 and 2.9 % faster at positions
    /// 0–128, 3.2 % at 448–576 and 6.6 % at 1900–2040, Q4_K 6.5 % at 448–576 (stop 18: one process, switching every
    /// 4 tokens for 40 s); in cache the four-head value pass is 2.8x faster (1.30 against 3.60 µs at 512 positions).
    /// </summary>
    private void AttentionOneToken(int layer, int pos)
    {
        var c = _cfg;
        int hd = c.HeadDim, kvHeads = c.NumKvHeads, group = c.NumHeads / kvHeads, window = c.SlidingWindow;
        float* pk = _cache.Read(layer, false, pos + 1, out var kl, _par);
        float* pv = _cache.Read(layer, true, pos + 1, out var vl, _par);
        int start = window > 0 ? Math.Max(0, pos - window + 1) : 0, span = pos - start + 1;
        float scale = 1f / MathF.Sqrt(hd);
        long work = (long)span * c.QDim;
        _par.ForRanges(kvHeads, 1, 1, work < 1 << 15, (k0, count) =>
        {
            float[] scores = ArrayPool<float>.Shared.Rent(group * span);
            try
            {
                fixed (float* pq = _q) fixed (float* po = _att) fixed (float* ps = scores)
                    for (int kv = k0; kv < k0 + count; kv++)
                    {
                        int h0 = kv * group;
                        float* headValues = pv + (long)kv * vl.HeadStride + (long)start * vl.RowStride;
                        MatKernels.MatMulTile(pk + (long)kv * kl.HeadStride + (long)start * kl.RowStride, kl.RowStride, span, pq + (long)h0 * hd, hd, group, hd, ps, span,
                            rowsFromMemory: true);
                        for (int j = 0; j < group; j++) Softmax(ps + (long)j * span, span, scale);
                        MatKernels.WeightedRowSums(ps, span, group, span, headValues, vl.RowStride, po + (long)h0 * hd, hd, hd);
                    }
            }
            finally { ArrayPool<float>.Shared.Return(scores); }
        });
    }

    /// <summary>
    /// One query's attention output from its <paramref name="count"/> raw scores q·k (overwritten): softmax of
    /// score·<paramref name="scale"/>, shifted by the maximum, then the probability-weighted sum of the value rows.
    /// </summary>
    private static void SoftmaxWeightedSum(float* scores, int count, float scale, float* values, int ldv, float* output, int hd)
    {
        Softmax(scores, count, scale);
        MatKernels.WeightedRowSum(scores, count, values, ldv, output, hd);
    }

    /// <summary>Softmax of score·<paramref name="scale"/> in place, shifted by the maximum.</summary>
    private static void Softmax(float* scores, int count, float scale)
    {
        var s = new Span<float>(scores, count);
        float max = TensorPrimitives.Max(s);
        float sum = FastMath.ExpInPlace(s, max, scale);
        TensorPrimitives.Multiply(s, 1f / sum, s);
    }

    /// <summary>
    /// Causal GQA attention of the n new tokens over cache positions [0, p0 + n). Work items are
    /// (head, block of 16 queries): scores for the block against all keys it may see come from the
    /// register-blocked dot kernel (same per-element arithmetic as a single dot), then a masked
    /// softmax per query and a weighted sum of value rows.
    /// </summary>
    private void Attention(int layer, int p0, int n)
    {
        if (n == 1)
        {
            AttentionOneToken(layer, p0);
            return;
        }
        var c = _cfg;
        int end = p0 + n, hd = c.HeadDim, heads = c.NumHeads, qd = c.QDim;
        int group = heads / c.NumKvHeads, window = c.SlidingWindow;
        float* pk = _cache.Read(layer, false, end, out var kl, _par);
        float* pv = _cache.Read(layer, true, end, out var vl, _par);
        float scale = 1f / MathF.Sqrt(hd);
        const int tokenBlock = 16;
        int blocks = (n + tokenBlock - 1) / tokenBlock;
        long work = (long)n * end * qd;
        _par.For(heads * blocks, work < 1 << 15, item =>
        {
            int head = item % heads, t0 = item / heads * tokenBlock, t1 = Math.Min(n, t0 + tokenBlock);
            int kvHead = head / group;
            int bt = t1 - t0;
            int kEnd = p0 + t1;                                           // keys visible to the last query of the block
            int kStart = window > 0 ? Math.Max(0, p0 + t0 - window + 1) : 0; // first key visible to the first query
            int span = kEnd - kStart;
            float[] scores = ArrayPool<float>.Shared.Rent(bt * span);
            try
            {
                fixed (float* pq = _q) fixed (float* po = _att) fixed (float* ps = scores)
                {
                    MatKernels.MatMulTile(pk + (long)kvHead * kl.HeadStride + (long)kStart * kl.RowStride, kl.RowStride, span, pq + (long)t0 * qd + head * hd, qd, bt, hd, ps, span);
                    for (int t = t0; t < t1; t++)
                    {
                        int pos = p0 + t;
                        int start = window > 0 ? Math.Max(0, pos - window + 1) : 0;
                        SoftmaxWeightedSum(ps + (long)(t - t0) * span + (start - kStart), pos - start + 1, scale,
                            pv + (long)kvHead * vl.HeadStride + (long)start * vl.RowStride, vl.RowStride, po + (long)t * qd + head * hd, hd);
                    }
                }
            }
            finally { ArrayPool<float>.Shared.Return(scores); }
        });
    }
}
