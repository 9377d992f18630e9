namespace Lowbit.IO;

/// <summary>
/// Writes an output file so that nothing the user had is lost and no half-written file remains:
/// data goes to a temporary file beside the target, which is renamed over the target only after
/// it was completely written and flushed. Refuses to overwrite any of the given input paths.
/// </summary>
public sealed class AtomicFile : IDisposable
{
    private readonly string _target;
    private readonly string _temp;
    private FileStream? _stream;
    private bool _committed;

    private AtomicFile(string target, string temp, FileStream stream)
    {
        _target = target;
        _temp = temp;
        _stream = stream;
    }

    public Stream Stream => _stream ?? throw new ObjectDisposedException(nameof(AtomicFile));
    public string TargetPath => _target;

    /// <summary>Creates the temporary file for <paramref name="path"/>.</summary>
    /// <param name="inputs">Paths that must never be overwritten (the model being read).</param>
    public static AtomicFile Create(string path, params string[] inputs)
    {
        string full = System.IO.Path.GetFullPath(path);
        foreach (var input in inputs)
        {
            if (string.IsNullOrEmpty(input)) continue;
            if (string.Equals(System.IO.Path.GetFullPath(input), full, StringComparison.Ordinal))
                throw new LowbitException($"{path}: refusing to overwrite the input file; choose another output path");
        }
        if (Directory.Exists(full))
            throw new LowbitException($"{path}: is a directory; give an output file path");
        string dir = System.IO.Path.GetDirectoryName(full) ?? ".";
        if (!Directory.Exists(dir))
            throw new LowbitException($"{path}: cannot write output: directory '{dir}' does not exist");
        string temp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            return new AtomicFile(full, temp, fs);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LowbitException($"{path}: cannot write output: {e.Message}", e);
        }
    }

    /// <summary>Flushes to disk and renames the temporary file into place.</summary>
    public void Commit()
    {
        var s = _stream ?? throw new ObjectDisposedException(nameof(AtomicFile));
        try
        {
            s.Flush(flushToDisk: true);
            s.Dispose();
            _stream = null;
            File.Move(_temp, _target, overwrite: true);
            _committed = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LowbitException($"{_target}: cannot write output: {e.Message}", e);
        }
    }

    /// <summary>Without a <see cref="Commit"/>, deletes the temporary file: an aborted write leaves nothing.</summary>
    public void Dispose()
    {
        _stream?.Dispose();
        _stream = null;
        if (!_committed)
        {
            try { File.Delete(_temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }
}
