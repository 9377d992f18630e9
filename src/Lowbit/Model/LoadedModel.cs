namespace Lowbit.Model;

/// <summary>
/// A model opened from any source (GGUF, HF safetensors directory, llama2.c checkpoint): its
/// configuration, tokenizer (when known) and tensors under canonical GGUF names, already in the
/// engine's conventions (q/k rows arranged for <see cref="ModelConfig.Rope"/>). Owns the file mappings.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private readonly IDisposable[] _owned;
    private readonly Dictionary<string, ModelTensor> _byName;

    public LoadedModel(string sourcePath, string sourceFormat, ModelConfig config, TokenizerInfo? tokenizer,
        IReadOnlyList<ModelTensor> tensors, IReadOnlyDictionary<string, object>? metadata = null, params IDisposable[] owned)
    {
        SourcePath = sourcePath;
        SourceFormat = sourceFormat;
        Config = config;
        Tokenizer = tokenizer;
        Tensors = tensors;
        Metadata = metadata ?? new Dictionary<string, object>();
        _owned = owned;
        _byName = new Dictionary<string, ModelTensor>(StringComparer.Ordinal);
        foreach (var t in tensors)
            if (!_byName.TryAdd(t.Name, t))
                throw new InvalidModelFileException(sourcePath, $"duplicate tensor name '{t.Name}'");
    }

    public string SourcePath { get; }
    /// <summary>"gguf", "safetensors" or "llama2c".</summary>
    public string SourceFormat { get; }
    public ModelConfig Config { get; }
    public TokenizerInfo? Tokenizer { get; }
    public IReadOnlyList<ModelTensor> Tensors { get; }
    /// <summary>Source metadata (GGUF key/values), for inspect and pass-through.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }

    public ModelTensor? TryGet(string name) => _byName.GetValueOrDefault(name);

    public ModelTensor Get(string name) => TryGet(name)
        ?? throw new InvalidModelFileException(SourcePath, $"tensor '{name}' is missing");

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
