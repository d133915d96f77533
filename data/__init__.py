"""Data stages: corpus reading (``datasets``), SentencePiece tokenization,
token-budget batching with valid lengths, the token cache, and the Lightning
data module.

Layer: the bottom, beside :mod:`model`; imports neither :mod:`inference` nor
:mod:`training`. Only :mod:`data.datamodule` (and :mod:`data.prepare`) import
Lightning, and this package loads it when ``TranslationDataModule`` is first
asked for, so ``from data.tokenizer import Tokenizer`` stays Lightning-free;
``datasets`` likewise loads with the first corpus read.
"""

from .batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch, encode_sources
from .reading import CorpusError
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

__all__ = [
    "CorpusError", "find_split_file", "load_parallel_corpus", "Tokenizer", "train_tokenizer",
    "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "ParallelDataset", "TokenBudgetBatchSampler",
    "collate_batch", "TranslationDataModule", "encode_sources",
]


def __getattr__(name: str):
    """``TranslationDataModule`` (it imports Lightning) and the corpus readers (they
    import ``datasets``) are imported on first use."""
    if name == "TranslationDataModule":
        from .datamodule import TranslationDataModule

        return TranslationDataModule
    if name in ("find_split_file", "load_parallel_corpus"):
        from . import corpus

        return getattr(corpus, name)
    raise AttributeError(f"module 'data' has no attribute {name!r}")
