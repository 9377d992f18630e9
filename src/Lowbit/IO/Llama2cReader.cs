using System.Buffers.Binary;
using Lowbit.Formats;
using Lowbit.Model;

namespace Lowbit.IO;

/// <summary>
/// Reads a llama2.c checkpoint (Karpathy's run.c "version 0" format): a header of seven int32
/// (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size
/// means the classifier is stored separately) followed by float32 weights in run.c's order.
/// The weights are exposed as zero-copy views of the memory-mapped file under canonical names.
/// run.c rotates adjacent pairs, and the exporter already wrote q/k in that layout, so the
/// model is <see cref="RopeStyle.Interleaved"/> as stored.
/// </summary>
public static class Llama2cReader
{
    private const int HeaderBytes = 7 * sizeof(int);

    public static LoadedModel Load(string path)
    {
        var file = MappedFile.Open(path);
        try
        {
            return Parse(file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static LoadedModel Parse(MappedFile file)
    {
        string path = file.Path;
        if (file.Length < HeaderBytes)
            throw new InvalidModelFileException(path, 0, $"file of {file.Length} bytes is shorter than the 28-byte llama2.c header");
        var header = new int[7];
        for (int i = 0; i < 7; i++) header[i] = BinaryPrimitives.ReadInt32LittleEndian(file.Span(i * 4, 4));
        int Field(int i) => header[i];
        int dim = Field(0), hiddenDim = Field(1), nLayers = Field(2), nHeads = Field(3), nKvHeads = Field(4),
            vocabRaw = Field(5), seqLen = Field(6);

        void Require(bool ok, int field, string what)
        {
            if (!ok) throw new InvalidModelFileException(path, field * 4, $"invalid llama2.c header: {what}");
        }
        Require(dim > 0 && dim <= 1 << 16, 0, $"dim = {dim}");
        Require(hiddenDim > 0 && hiddenDim <= 1 << 18, 1, $"hidden_dim = {hiddenDim}");
        Require(nLayers > 0 && nLayers <= 1024, 2, $"n_layers = {nLayers}");
        Require(nHeads > 0 && dim % nHeads == 0, 3, $"n_heads = {nHeads} does not divide dim = {dim}");
        Require(nKvHeads > 0 && nHeads % nKvHeads == 0, 4, $"n_kv_heads = {nKvHeads} does not divide n_heads = {nHeads}");
        Require(vocabRaw != 0 && vocabRaw != int.MinValue && Math.Abs(vocabRaw) <= 1 << 24, 5, $"vocab_size = {vocabRaw}");
        Require(seqLen > 0 && seqLen <= 1 << 24, 6, $"seq_len = {seqLen}");
        int headSize = dim / nHeads;
        Require(headSize % 2 == 0, 3, $"head size {headSize} (dim / n_heads) must be even for RoPE");

        bool shared = vocabRaw > 0;
        int vocab = Math.Abs(vocabRaw);
        int kvDim = headSize * nKvHeads;

        long L = nLayers;
        long expectedFloats =
            (long)vocab * dim                       // token_embedding_table
            + L * dim                               // rms_att_weight
            + L * dim * dim                         // wq
            + 2 * L * dim * kvDim                   // wk, wv
            + L * dim * dim                         // wo
            + L * dim                               // rms_ffn_weight
            + 3 * L * dim * hiddenDim               // w1, w2, w3
            + dim                                   // rms_final_weight
            + (long)seqLen * headSize               // freq_cis_real + freq_cis_imag (seq_len * head_size/2 each)
            + (shared ? 0 : (long)vocab * dim);     // wcls
        long expectedBytes = HeaderBytes + expectedFloats * sizeof(float);
        if (file.Length != expectedBytes)
            throw new InvalidModelFileException(path, Math.Min(file.Length, expectedBytes),
                $"llama2.c checkpoint with dim={dim} hidden_dim={hiddenDim} n_layers={nLayers} n_heads={nHeads} " +
                $"n_kv_heads={nKvHeads} vocab_size={vocabRaw} seq_len={seqLen} must be exactly {expectedBytes} bytes, but the file has {file.Length}");

        var f32 = CodecRegistry.Get("f32");
        var tensors = new List<ModelTensor>(nLayers * 9 + 3);
        long offset = HeaderBytes;

        ReadOnlyMemory<byte> Take(long floats)
        {
            var m = file.Slice(offset, floats * sizeof(float));
            offset += floats * sizeof(float);
            return m;
        }

        // One stacked [n_layers, ...] array per kind, in file order; each layer is a slice of it.
        void PerLayer(Func<int, string> name, long rows, long cols)
        {
            for (int l = 0; l < nLayers; l++)
            {
                long[] shape = rows == 1 ? [cols] : [rows, cols];
                tensors.Add(new ModelTensor(name(l), shape, f32, Take(rows * cols)));
            }
        }

        tensors.Add(new ModelTensor(TensorNames.TokenEmbedding, [vocab, dim], f32, Take((long)vocab * dim)));
        PerLayer(TensorNames.AttnNorm, 1, dim);
        PerLayer(TensorNames.AttnQ, dim, dim);
        PerLayer(TensorNames.AttnK, kvDim, dim);
        PerLayer(TensorNames.AttnV, kvDim, dim);
        PerLayer(TensorNames.AttnOutput, dim, dim);
        PerLayer(TensorNames.FfnNorm, 1, dim);
        PerLayer(TensorNames.FfnGate, hiddenDim, dim);   // w1
        PerLayer(TensorNames.FfnDown, dim, hiddenDim);   // w2
        PerLayer(TensorNames.FfnUp, hiddenDim, dim);     // w3
        tensors.Add(new ModelTensor(TensorNames.OutputNorm, [dim], f32, Take(dim)));
        offset += (long)seqLen * headSize * sizeof(float); // freq_cis_real/imag: recomputed by the engine
        if (!shared)
            tensors.Add(new ModelTensor(TensorNames.Output, [vocab, dim], f32, Take((long)vocab * dim)));

        var config = new ModelConfig
        {
            Architecture = "llama",
            VocabSize = vocab,
            HiddenSize = dim,
            IntermediateSize = hiddenDim,
            NumLayers = nLayers,
            NumHeads = nHeads,
            NumKvHeads = nKvHeads,
            HeadDim = headSize,
            RmsNormEps = 1e-5f,
            RopeTheta = 10000f,
            MaxPositions = seqLen,
            TieEmbeddings = shared,
            Rope = RopeStyle.Interleaved,
            BosTokenId = 1,
            EosTokenId = 2,
        };
        var metadata = new Dictionary<string, object>
        {
            ["llama2c.dim"] = dim,
            ["llama2c.hidden_dim"] = hiddenDim,
            ["llama2c.n_layers"] = nLayers,
            ["llama2c.n_heads"] = nHeads,
            ["llama2c.n_kv_heads"] = nKvHeads,
            ["llama2c.vocab_size"] = vocabRaw,
            ["llama2c.seq_len"] = seqLen,
        };
        return new LoadedModel(path, "llama2c", config, tokenizer: null, tensors, metadata, file);
    }
}
