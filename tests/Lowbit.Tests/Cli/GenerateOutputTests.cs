using Lowbit.Cli.Commands;
using Lowbit.IO;
using Lowbit.Model;
using Lowbit.Tests.IO;

namespace Lowbit.Tests.Cli;

public sealed class GenerateOutputTests
{
    private static Tokenizer RefTokenizer()
    {
        var spm = SentencePieceModel.Load(Path.Combine(HfTestFiles.RefModelDir, "tokenizer.model"));
        return Tokenizer.Create(HfTokenizerReader.FromSentencePiece(HfTestFiles.RefModelDir, spm, 4096));
    }

    private static string Stream(Tokenizer.StreamDecoder decoder, IEnumerable<int> ids) =>
        string.Concat(ids.Select(decoder.Push)) + decoder.Flush();

    [Fact]
    public void Printed_prompt_plus_streamed_continuation_equals_the_decoded_sequence()
    {
        // Regression: the continuation's first token lost its word-boundary space ("interpreteris").
        var tok = RefTokenizer();
        const string prompt = "The Python interpreter";
        int[] promptIds = tok.Encode(prompt, addBos: false);
        int[] all = tok.Encode("The Python interpreter is a simple example", addBos: false);
        Assert.Equal(promptIds, all[..promptIds.Length]);
        int[] continuation = all[promptIds.Length..];
        Assert.NotEmpty(continuation);
        string printed = prompt + Stream(GenerateCommand.ContinuationDecoder(tok, prompt), continuation);
        Assert.Equal(tok.Decode([.. promptIds, .. continuation]), printed);
        Assert.Equal("The Python interpreter is a simple example", printed);
    }

    [Fact]
    public void Without_a_prompt_the_stream_drops_the_dummy_prefix_space()
    {
        var tok = RefTokenizer();
        int[] ids = tok.Encode("Hello world", addBos: false);
        Assert.Equal("Hello world", Stream(GenerateCommand.ContinuationDecoder(tok, ""), ids));
    }
}
