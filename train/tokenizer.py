"""Train a multilingual SentencePiece tokenizer for from-scratch text towers."""

from pathlib import Path

import sentencepiece as spm

from embedding.tokenizer import EOS_ID, PAD_ID, UNK_ID


def train_sentencepiece(texts: list[str], out_prefix: str | Path, vocab_size: int,
                        lowercase: bool = True) -> Path:
    """Train a unigram SentencePiece model on `texts` (at most `vocab_size` pieces; fewer when the
    texts are too small for that many); returns the .model file path."""
    if lowercase:
        texts = [text.lower() for text in texts]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(out_prefix), vocab_size=vocab_size,
        model_type="unigram", character_coverage=0.9995,  # keeps the rarer CJK characters
        hard_vocab_limit=False,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        input_sentence_size=2_000_000, shuffle_input_sentence=True, minloglevel=2,
    )
    return Path(f"{out_prefix}.model")
