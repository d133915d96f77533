"""Data stages: corpus reading (``datasets``), SentencePiece tokenization,
token-budget batching with valid lengths, and the Lightning data module."""

from .batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch
from .corpus import CorpusError, find_split_file, load_parallel_corpus
from .datamodule import TranslationDataModule, encode_sources
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, train_tokenizer

__all__ = [
    "CorpusError", "find_split_file", "load_parallel_corpus", "Tokenizer", "train_tokenizer",
    "PAD_ID", "UNK_ID", "BOS_ID", "EOS_ID", "ParallelDataset", "TokenBudgetBatchSampler",
    "collate_batch", "TranslationDataModule", "encode_sources",
]
