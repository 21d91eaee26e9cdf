"""The SentencePiece tokenizer that our own checkpoints carry.

SigLIP-style text towers pool the *last* position of a fixed-length sequence, so every text is
padded (or truncated) to exactly `context_length` tokens, with the end-of-text token kept last.
"""

from pathlib import Path

import sentencepiece as spm
import torch

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class SentencePieceTokenizer:
    """Callable like an open_clip tokenizer: list of texts -> LongTensor [N, context_length]."""

    def __init__(self, model_file: str | Path, context_length: int, lowercase: bool = True):
        self.model_file = Path(model_file)
        self.processor = spm.SentencePieceProcessor(model_file=str(model_file))
        self.context_length = context_length
        self.lowercase = lowercase
        self.vocab_size = self.processor.get_piece_size()

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else texts
        tokens = torch.full((len(texts), self.context_length), PAD_ID, dtype=torch.long)
        for row, ids in enumerate(self.ids(texts)):
            ids = ids[: self.context_length - 1] + [EOS_ID]
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens

    def ids(self, texts: list[str]) -> list[list[int]]:
        """The texts' piece ids, normalised as the model reads them, without EOS or padding."""
        return self.processor.encode([text.lower() for text in texts] if self.lowercase else texts)

    def config(self) -> dict:
        """What a checkpoint stores to rebuild this tokenizer."""
        return {"type": "sentencepiece", "file": self.model_file.name,
                "context_length": self.context_length, "lowercase": self.lowercase}

