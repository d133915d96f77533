"""Data stages: corpus reading (``datasets``), SentencePiece tokenization,
token-budget batching with valid lengths, the token cache, and the Lightning
data module.

Layer: the bottom, beside :mod:`model`; imports neither :mod:`inference` nor
:mod:`training`. Only :mod:`data.datamodule` (and :mod:`data.prepare`) import
Lightning. This package imports its modules when a name is first asked for, so
``from data.tokenizer import Tokenizer`` stays Lightning-free and ``data.files``
needs no torch; ``datasets`` likewise loads with the first corpus read.
"""

__all__ = [
    "CorpusError", "find_split_file", "load_parallel_corpus", "Tokenizer", "train_tokenizer",
    "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "ParallelDataset", "TokenBudgetBatchSampler",
    "collate_batch", "TranslationDataModule", "encode_sources",
]

#: public name -> the module that defines it, imported on first use (PEP 562), so that
#: ``import data.files`` or a command's ``--help`` loads neither torch nor Lightning.
_HOMES = {"ParallelDataset": "batching", "TokenBudgetBatchSampler": "batching",
          "collate_batch": "batching", "encode_sources": "batching", "CorpusError": "reading",
          "Tokenizer": "tokenizer", "train_tokenizer": "tokenizer", "PAD_ID": "tokenizer",
          "UNK_ID": "tokenizer", "BOS_ID": "tokenizer", "EOS_ID": "tokenizer",
          "TranslationDataModule": "datamodule", "find_split_file": "corpus",
          "load_parallel_corpus": "corpus"}


def __getattr__(name: str):
    """Import ``name`` from its module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
