namespace Lowbit;

/// <summary>
/// An error caused by the user's input or environment (bad file, unknown format, unwritable path).
/// The CLI prints its message as one line and exits non-zero; anything else is a bug.
/// </summary>
public class LowbitException : Exception
{
    public LowbitException(string message) : base(message) { }
    public LowbitException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>A malformed or truncated input file: names the file, the offset and what was expected.</summary>
public sealed class InvalidModelFileException : LowbitException
{
    public string Path { get; }
    public long Offset { get; }

    public InvalidModelFileException(string path, long offset, string what)
        : base($"{path}: at offset {offset}: {what}")
    {
        Path = path;
        Offset = offset;
    }

    public InvalidModelFileException(string path, string what)
        : base($"{path}: {what}")
    {
        Path = path;
        Offset = -1;
    }
}
