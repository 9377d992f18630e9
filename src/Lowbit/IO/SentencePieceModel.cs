using System.Text;
using Google.Protobuf;

namespace Lowbit.IO;

/// <summary>SentencePiece piece types (sentencepiece_model.proto ModelProto.SentencePiece.Type).</summary>
public enum SentencePieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

public readonly record struct SentencePiece(string Piece, float Score, SentencePieceType Type);

/// <summary>
/// The parts of a SentencePiece tokenizer.model (a serialized ModelProto) Lowbit needs: the pieces
/// (field 1: piece = 1, score = 2, type = 3), the trainer's model type, byte fallback and special ids
/// (field 2), and the normalizer's whitespace flags (field 3). Unknown fields are skipped.
/// </summary>
public sealed class SentencePieceModel
{
    /// <summary>TrainerSpec.ModelType values.</summary>
    public const int ModelTypeUnigram = 1, ModelTypeBpe = 2, ModelTypeWord = 3, ModelTypeChar = 4;

    public required IReadOnlyList<SentencePiece> Pieces { get; init; }
    public required byte[] RawBytes { get; init; }
    public int ModelType { get; init; } = ModelTypeUnigram;
    public bool ByteFallback { get; init; }
    public int UnknownId { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;
    public int PadId { get; init; } = -1;
    public bool AddDummyPrefix { get; init; } = true;
    public bool RemoveExtraWhitespaces { get; init; } = true;
    public bool EscapeWhitespaces { get; init; } = true;
    /// <summary>Normalizer rule name ("identity", "nmt_nfkc", ...).</summary>
    public string NormalizerName { get; init; } = "";

    public static SentencePieceModel Load(string path)
    {
        if (!File.Exists(path)) throw new LowbitException($"{path}: file not found");
        return Parse(File.ReadAllBytes(path), path);
    }

    public static SentencePieceModel Parse(byte[] bytes, string path)
    {
        var pieces = new List<SentencePiece>();
        int modelType = ModelTypeUnigram, unk = 0, bos = 1, eos = 2, pad = -1;
        bool byteFallback = false, addDummyPrefix = true, removeExtra = true, escape = true;
        string normalizerName = "";
        var input = new CodedInputStream(bytes);
        long offset = 0;
        try
        {
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                offset = input.Position;
                int field = WireFormat.GetTagFieldNumber(tag);
                var wire = WireFormat.GetTagWireType(tag);
                if (field == 1 && wire == WireFormat.WireType.LengthDelimited)
                    pieces.Add(ReadPiece(input.ReadBytes(), path, offset, pieces.Count));
                else if (field == 2 && wire == WireFormat.WireType.LengthDelimited)
                {
                    var t = new CodedInputStream(input.ReadBytes().ToByteArray());
                    uint tt;
                    while ((tt = t.ReadTag()) != 0)
                    {
                        switch (WireFormat.GetTagFieldNumber(tt))
                        {
                            case 3 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: modelType = t.ReadEnum(); break;
                            case 35 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: byteFallback = t.ReadBool(); break;
                            case 40 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: unk = t.ReadInt32(); break;
                            case 41 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: bos = t.ReadInt32(); break;
                            case 42 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: eos = t.ReadInt32(); break;
                            case 43 when WireFormat.GetTagWireType(tt) == WireFormat.WireType.Varint: pad = t.ReadInt32(); break;
                            default: t.SkipLastField(); break;
                        }
                    }
                }
                else if (field == 3 && wire == WireFormat.WireType.LengthDelimited)
                {
                    var n = new CodedInputStream(input.ReadBytes().ToByteArray());
                    uint nt;
                    while ((nt = n.ReadTag()) != 0)
                    {
                        switch (WireFormat.GetTagFieldNumber(nt))
                        {
                            case 1 when WireFormat.GetTagWireType(nt) == WireFormat.WireType.LengthDelimited: normalizerName = n.ReadString(); break;
                            case 3 when WireFormat.GetTagWireType(nt) == WireFormat.WireType.Varint: addDummyPrefix = n.ReadBool(); break;
                            case 4 when WireFormat.GetTagWireType(nt) == WireFormat.WireType.Varint: removeExtra = n.ReadBool(); break;
                            case 5 when WireFormat.GetTagWireType(nt) == WireFormat.WireType.Varint: escape = n.ReadBool(); break;
                            default: n.SkipLastField(); break;
                        }
                    }
                }
                else input.SkipLastField();
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidModelFileException(path, offset, $"not a valid SentencePiece model protobuf ({e.Message})");
        }
        if (pieces.Count == 0)
            throw new InvalidModelFileException(path, 0, "SentencePiece model has no pieces");
        return new SentencePieceModel
        {
            Pieces = pieces, RawBytes = bytes, ModelType = modelType, ByteFallback = byteFallback,
            UnknownId = unk, BosId = bos, EosId = eos, PadId = pad,
            AddDummyPrefix = addDummyPrefix, RemoveExtraWhitespaces = removeExtra, EscapeWhitespaces = escape,
            NormalizerName = normalizerName,
        };
    }

    private static SentencePiece ReadPiece(ByteString body, string path, long offset, int index)
    {
        var p = new CodedInputStream(body.ToByteArray());
        string? piece = null;
        float score = 0;
        int type = (int)SentencePieceType.Normal;
        uint tag;
        while ((tag = p.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1 when WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited:
                    var raw = p.ReadBytes().ToByteArray();
                    try { piece = new UTF8Encoding(false, true).GetString(raw); }
                    catch (DecoderFallbackException) { throw new InvalidModelFileException(path, offset, $"piece {index} is not valid UTF-8"); }
                    break;
                case 2 when WireFormat.GetTagWireType(tag) == WireFormat.WireType.Fixed32: score = p.ReadFloat(); break;
                case 3 when WireFormat.GetTagWireType(tag) == WireFormat.WireType.Varint: type = p.ReadEnum(); break;
                default: p.SkipLastField(); break;
            }
        }
        if (piece is null) throw new InvalidModelFileException(path, offset, $"piece {index} has no text");
        if (type is < 1 or > 6) throw new InvalidModelFileException(path, offset, $"piece {index} ('{piece}') has unknown type {type}");
        return new SentencePiece(piece, score, (SentencePieceType)type);
    }
}
