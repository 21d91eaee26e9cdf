"""Train a multilingual SentencePiece tokenizer for from-scratch text towers."""

import re
from pathlib import Path

import sentencepiece as spm

from embedding.tokenizer import EOS_ID, PAD_ID, UNK_ID


def train_sentencepiece(texts: list[str], out_prefix: str | Path, vocab_size: int,
                        lowercase: bool = True) -> Path:
    """Train a unigram SentencePiece model on `texts` (at most `vocab_size` pieces; fewer when the
    texts are too small for that many); returns the .model file path."""
    if lowercase:
        texts = [text.lower() for text in texts]
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=str(out_prefix), vocab_size=vocab_size,
            model_type="unigram", character_coverage=0.9995,  # keeps the rarer CJK characters
            hard_vocab_limit=False,
            pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
            input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
        )
    except RuntimeError as error:  # every kept character needs a piece of its own: CJK captions need hundreds
        needed = re.search(r"(\d+) vs (\d+)", str(error))
        if "smaller than required_chars" not in str(error) or not needed:
            raise
        raise ValueError(f"a vocabulary of {vocab_size} pieces cannot hold the {needed[2]} distinct characters "
                         f"of these captions; choose a vocabulary size above {needed[2]}") from None
    return Path(f"{out_prefix}.model")
