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
import re
from typing import Iterable

import sentencepiece as spm

from .reading import CorpusError

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
        """Read a ``.model`` file.

        Raises:
            ValueError: if the file is empty, cut short, changed inside (what
                SentencePiece's parser detects) or not a model of this
                project; the message names the file.
        """
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise ValueError(f"{path} is damaged: empty (0 bytes), not a SentencePiece model")
        try:
            return cls(data)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"{path} is damaged: not a SentencePiece model of this project "
                             f"({' '.join(str(err).split())[:200]})") from err

    def save(self, path: str) -> None:
        """Write the ``.model`` file (readable by ``spm_encode`` too)."""
        with open(path, "wb") as f:
            f.write(self.model_proto)

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special ones included."""
        return self.sp.get_piece_size()

    def encode(self, texts: list[str], num_threads: int = -1) -> list[list[int]]:
        """Sentences -> piece ids (no BOS/EOS added).

        Args:
            texts: sentences.
            num_threads: SentencePiece encoder threads; -1 (default) uses every core.
        """
        return self.sp.encode(list(texts), out_type=int, num_threads=num_threads)

    def sample_encode(self, texts: list[str], alpha: float, nbest_size: int = -1,
                      seed: int = 0) -> list[list[int]]:
        """Sentences -> piece ids of a *sampled* segmentation (subword regularization).

        A unigram model samples a segmentation ``x`` of each sentence with
        probability proportional to ``P(x)^alpha`` among its ``nbest_size``
        best segmentations (-1: all of them, by forward-filtering
        backward-sampling); small ``alpha`` flattens the distribution (more,
        shorter pieces), ``alpha`` -> infinity is the deterministic
        :meth:`encode`. A BPE model applies BPE-dropout: each merge is skipped
        with probability ``alpha`` (``nbest_size`` unused). Every sampled
        segmentation decodes back to the same sentence. Within one process
        the same ``seed`` gives the same segmentations (the sentences are
        encoded on one thread for that reason); across processes it does not
        with SentencePiece 0.2.3 (measured: a second process draws other
        segmentations for the same seed), so a resumed or repeated run samples
        other segmentations than the first.

        Args:
            texts: sentences.
            alpha: unigram: smoothing exponent (> 0; Kudo 2018 uses 0.1-1);
                BPE: dropout probability in (0, 1) (Provilkov et al. 2020: 0.1).
            nbest_size: unigram: sample among this many best segmentations
                (>= 2), or -1 for all.
            seed: seed of SentencePiece's random generator.

        Returns:
            One id list per sentence (no BOS/EOS added).

        Source: Kudo 2018, "Subword Regularization" (ACL); Provilkov et al.
        2020, "BPE-Dropout" (ACL); SentencePiece's ``enable_sampling``.
        """
        spm.set_random_generator_seed(int(seed) % (2 ** 32 - 1) + 1)
        return self.sp.encode(list(texts), out_type=int, enable_sampling=True, alpha=alpha,
                              nbest_size=nbest_size, num_threads=1)

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
                    seed_sentences: int = 1_000_000, num_threads: int = 2,
                    corpus: str = "the training split") -> Tokenizer:
    """Train one SentencePiece model on the given sentences (source and target together).

    Args:
        sentences: training sentences of both languages (training split only); any
            iterable, consumed once as a stream (SentencePiece keeps a uniform
            sample of at most ``seed_sentences`` of them, so memory is bounded
            by the sample, not by the corpus).
        vocab_size: number of pieces including the 4 special ones.
        model_type: ``"unigram"`` or ``"bpe"``.
        character_coverage: share of characters covered (1.0 for Latin scripts).
        seed_sentences: SentencePiece trains on a uniform sample of at most this
            many of the sentences (its ``input_sentence_size``; 0: all of them).
        num_threads: SentencePiece trainer threads. The trained model depends on
            it (measured: 1 and 2 threads give different models from the same
            Multi30k sentences), so it is fixed, not the machine's core count:
            the same corpus then gives the same ``spm.model`` everywhere.
        corpus: how error messages name the sentences (e.g. the split and file).

    Returns:
        :class:`Tokenizer` with the fixed special ids of this module.

    Raises:
        data.corpus.CorpusError: (a ``ValueError``) if the sentences cannot
            support ``vocab_size`` pieces. The
            message names ``data.vocab_size``, the requested size, the largest
            (or smallest) size SentencePiece accepts for these sentences, and
            the fix.
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
        raise CorpusError(_vocab_size_message(str(err), vocab_size, model_type, corpus)) from err
    return Tokenizer(model.getvalue())


def _vocab_size_message(error: str, vocab_size: int, model_type: str, corpus: str) -> str:
    """A SentencePiece trainer error -> what ``data.vocab_size`` must be, and why."""
    largest = re.search(r"too high \((\d+)\)\. Please set it to a value <= (\d+)", error)
    if largest:
        return (f"data.vocab_size={vocab_size} is too large for {corpus}: SentencePiece "
                f"({model_type}) can make at most {largest.group(2)} pieces from it. Set "
                f"data.vocab_size to {largest.group(2)} or less, or train on a larger corpus")
    smallest = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", error)
    if smallest:
        return (f"data.vocab_size={vocab_size} is too small for {corpus}: it needs at least "
                f"{smallest.group(2)} pieces (one per character, plus the 4 special ones). Set "
                f"data.vocab_size to {smallest.group(2)} or more")
    return (f"SentencePiece could not train a vocabulary of data.vocab_size={vocab_size} pieces "
            f"({model_type}) on {corpus} ({error}); change data.vocab_size in the config")
