"""Stage 2: one joint SentencePiece model for source and target.

Special ids are fixed so that every checkpoint agrees on them:

======  ==  ======================================
piece   id  use
======  ==  ======================================
<pad>   0   padding (ignored by the loss and masks)
<unk>   1   unknown characters
<s>     2   BOS: first decoder input token
</s>    3   EOS: ends every source and target
======  ==  ======================================
"""

from __future__ import annotations

import io
from typing import Iterable

import sentencepiece as spm

__all__ = ["PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "Tokenizer", "train_tokenizer"]

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A SentencePiece model held as bytes, so it can live inside a checkpoint.

    Args:
        model_proto: the serialized SentencePiece model (``.model`` file bytes).

    Raises:
        ValueError: if the model's special ids differ from
            ``PAD_ID/UNK_ID/BOS_ID/EOS_ID`` (a model not trained by
            :func:`train_tokenizer`).

    Source: Kudo & Richardson 2018 (SentencePiece).
    """

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, model_proto: bytes):
        self.model_proto = bytes(model_proto)
        self.sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        found = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if found != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(
                f"SentencePiece model has pad/unk/bos/eos ids {found}, expected "
                f"{(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}; train it with data.tokenizer.train_tokenizer")

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        """Read a ``.model`` file."""
        with open(path, "rb") as f:
            return cls(f.read())

    def save(self, path: str) -> None:
        """Write the ``.model`` file (readable by ``spm_encode`` too)."""
        with open(path, "wb") as f:
            f.write(self.model_proto)

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ones included."""
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Sentences -> piece ids (no BOS/EOS added)."""
        return self.sp.encode(list(texts), out_type=int)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Piece ids -> detokenized sentences; cut at the first EOS, specials dropped."""
        cleaned = []
        for seq in ids:
            seq = list(seq)
            if EOS_ID in seq:
                seq = seq[: seq.index(EOS_ID)]
            cleaned.append([i for i in seq if i not in (PAD_ID, BOS_ID)])
        return self.sp.decode(cleaned)

    def pieces(self, ids: list[int]) -> list[str]:
        """Piece strings of ids (for attention plots)."""
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def __getstate__(self):
        return {"model_proto": self.model_proto}

    def __setstate__(self, state):
        self.__init__(state["model_proto"])


def train_tokenizer(sentences: Iterable[str], vocab_size: int = 8000,
                    model_type: str = "unigram", character_coverage: float = 1.0,
                    seed_sentences: int = 1_000_000, num_threads: int = 2) -> Tokenizer:
    """Train one SentencePiece model on the given sentences (source and target together).

    Args:
        sentences: training sentences of both languages (training split only).
        vocab_size: number of pieces including the 4 special ones.
        model_type: ``"unigram"`` or ``"bpe"``.
        character_coverage: share of characters covered (1.0 for Latin scripts).
        seed_sentences: at most this many sentences are used for training.
        num_threads: SentencePiece trainer threads.

    Returns:
        :class:`Tokenizer` with the fixed special ids of this module.

    Raises:
        ValueError: if the sentences cannot support ``vocab_size`` pieces (the
            message gives the largest size SentencePiece would accept and the
            config key to change).
    """
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            input_sentence_size=seed_sentences, shuffle_input_sentence=True,
            num_threads=num_threads, minloglevel=2)
    except RuntimeError as err:
        raise ValueError(
            f"SentencePiece could not train a vocabulary of {vocab_size} pieces on this "
            f"training split ({err}); lower data.vocab_size in the config") from err
    return Tokenizer(model.getvalue())
