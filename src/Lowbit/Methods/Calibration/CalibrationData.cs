using System.Text;
using System.Text.Json;
using Parquet;

namespace Lowbit.Methods.Calibration;

/// <summary>
/// Calibration samples: N token windows of L tokens drawn from a text source, seeded and reproducible
/// (like GPTQ's and llm-compressor's calibration loaders). Sources: plain text, JSONL with a text
/// field, or Parquet in the Hugging Face datasets layout (a string column, "text" by default).
/// </summary>
public sealed class CalibrationData
{
    private CalibrationData(IReadOnlyList<int[]> samples, string source, long tokensAvailable)
    {
        Samples = samples;
        Source = source;
        TokensAvailable = tokensAvailable;
    }

    public IReadOnlyList<int[]> Samples { get; }
    public string Source { get; }
    public long TokensAvailable { get; }
    public int SampleLength => Samples.Count == 0 ? 0 : Samples[0].Length;

    /// <summary>Reads the documents of a calibration file, by extension: .jsonl/.json, .parquet, anything else as text.</summary>
    public static IReadOnlyList<string> ReadDocuments(string path, string textField = "text")
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: calibration file not found");
        string ext = Path.GetExtension(path).ToLowerInvariant();
        return ext switch
        {
            ".jsonl" or ".json" => ReadJsonl(path, textField),
            ".parquet" => ReadParquet(path, textField),
            _ => [File.ReadAllText(path, Encoding.UTF8)],
        };
    }

    private static List<string> ReadJsonl(string path, string field)
    {
        var docs = new List<string>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(path, Encoding.UTF8))
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty(field, out var v) || v.ValueKind != JsonValueKind.String)
                    throw new LowbitException($"{path}: line {lineNo}: expected a JSON object with a string field '{field}'");
                docs.Add(v.GetString()!);
            }
            catch (JsonException e)
            {
                throw new LowbitException($"{path}: line {lineNo}: invalid JSON: {e.Message}");
            }
        }
        if (docs.Count == 0) throw new LowbitException($"{path}: no '{field}' values found");
        return docs;
    }

    private static List<string> ReadParquet(string path, string field)
    {
        try
        {
            using var stream = File.OpenRead(path);
            var reader = ParquetReader.CreateAsync(stream, null, false, CancellationToken.None).GetAwaiter().GetResult();
            try
            {
                var column = reader.Schema.GetDataFields().FirstOrDefault(f => f.Name == field)
                    ?? throw new LowbitException($"{path}: no column '{field}' (columns: {string.Join(", ", reader.Schema.GetDataFields().Select(f => f.Name))})");
                var docs = new List<string>();
                for (int g = 0; g < reader.RowGroupCount; g++)
                {
                    using var rg = reader.OpenRowGroupReader(g);
                    var values = new string?[checked((int)rg.RowCount)];
                    rg.ReadAsync(column, values.AsMemory(), null, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                    foreach (var v in values)
                        if (v is not null) docs.Add(v);
                }
                if (docs.Count == 0) throw new LowbitException($"{path}: column '{field}' holds no strings");
                return docs;
            }
            finally
            {
                reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        catch (Exception e) when (e is not LowbitException)
        {
            throw new LowbitException($"{path}: cannot read Parquet: {e.Message}", e);
        }
    }

    /// <summary>
    /// Tokenizes the documents once (joined by blank lines, BOS added by the tokenizer per sample) and
    /// draws <paramref name="count"/> windows of <paramref name="length"/> tokens at seeded random offsets.
    /// With too little text, windows are taken sequentially and fewer samples are returned.
    /// </summary>
    public static CalibrationData Create(IReadOnlyList<string> documents, Func<string, int[]> tokenize, int count, int length,
        int seed, int bosToken, string source)
    {
        if (count <= 0 || length < 2) throw new LowbitException($"calibration needs at least one sample of at least 2 tokens (got {count} × {length})");
        var tokens = tokenize(string.Join("\n\n", documents));
        int body = length - 1; // each sample starts with BOS, like the evaluation chunks
        var samples = new List<int[]>();
        if (tokens.Length < body) throw new LowbitException($"{source}: only {tokens.Length} tokens of text; calibration needs at least {body}");
        long windows = tokens.Length - body + 1;
        if ((long)count * body > tokens.Length)
        {
            for (int off = 0; off + body <= tokens.Length && samples.Count < count; off += body)
                samples.Add(Sample(tokens, off, body, bosToken));
        }
        else
        {
            var rng = new Random(seed);
            for (int i = 0; i < count; i++)
                samples.Add(Sample(tokens, (int)rng.NextInt64(windows), body, bosToken));
        }
        return new CalibrationData(samples, source, tokens.Length);
    }

    private static int[] Sample(int[] tokens, int offset, int body, int bos)
    {
        var s = new int[body + 1];
        s[0] = bos;
        // Skip a leading BOS of the tokenized text so a window never holds two.
        Array.Copy(tokens, offset, s, 1, body);
        return s;
    }
}
