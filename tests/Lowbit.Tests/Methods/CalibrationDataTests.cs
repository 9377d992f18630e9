using Lowbit.Methods.Calibration;
using Parquet;
using Parquet.Schema;

namespace Lowbit.Tests.Methods;

public sealed class CalibrationDataTests
{
    private static int[] FakeTokenize(string s) => s.Select(c => (int)c).ToArray();

    [Fact]
    public void Samples_are_seeded_reproducible_and_start_with_bos()
    {
        var docs = new[] { string.Concat(Enumerable.Range(0, 5000).Select(i => (char)('a' + i % 26))) };
        var a = CalibrationData.Create(docs, FakeTokenize, 8, 64, seed: 42, bosToken: 1, "t");
        var b = CalibrationData.Create(docs, FakeTokenize, 8, 64, seed: 42, bosToken: 1, "t");
        var c = CalibrationData.Create(docs, FakeTokenize, 8, 64, seed: 43, bosToken: 1, "t");
        Assert.Equal(8, a.Samples.Count);
        Assert.All(a.Samples, s => { Assert.Equal(64, s.Length); Assert.Equal(1, s[0]); });
        Assert.Equal(a.Samples, b.Samples);
        Assert.NotEqual(a.Samples, c.Samples);
    }

    [Fact]
    public void Too_little_text_gives_fewer_sequential_samples()
    {
        var d = CalibrationData.Create(["x".PadRight(200, 'y')], FakeTokenize, 10, 64, 0, 1, "t");
        Assert.Equal(3, d.Samples.Count); // 200 tokens / 63 per sample
    }

    [Fact]
    public async Task Jsonl_and_parquet_text_fields_are_read()
    {
        var dir = Directory.CreateTempSubdirectory("lowbit-calib");
        try
        {
            var jsonl = Path.Combine(dir.FullName, "c.jsonl");
            File.WriteAllLines(jsonl, ["{\"text\": \"hello\"}", "", "{\"text\": \"world\", \"id\": 2}"]);
            Assert.Equal(new[] { "hello", "world" }, CalibrationData.ReadDocuments(jsonl));

            var bad = Path.Combine(dir.FullName, "bad.jsonl");
            File.WriteAllLines(bad, ["{\"text\": \"ok\"}", "{\"body\": 1}"]);
            var e = Assert.Throws<LowbitException>(() => CalibrationData.ReadDocuments(bad));
            Assert.Contains("line 2", e.Message);

            var pq = Path.Combine(dir.FullName, "c.parquet");
            var field = new DataField<string>("text");
            using (var fs = File.Create(pq))
            {
                var w = await ParquetWriter.CreateAsync(new ParquetSchema(field), fs, null, false, CancellationToken.None);
                using (var rg = w.CreateRowGroup())
                    await rg.WriteAsync(field, new[] { "alpha", "beta" }, null);
                await w.DisposeAsync();
            }
            Assert.Equal(new[] { "alpha", "beta" }, CalibrationData.ReadDocuments(pq));
            var missing = Assert.Throws<LowbitException>(() => CalibrationData.ReadDocuments(pq, "content"));
            Assert.Contains("no column 'content'", missing.Message);
        }
        finally { dir.Delete(true); }
    }
}
