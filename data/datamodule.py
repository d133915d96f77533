"""The ``LightningDataModule`` that ties stages 1–3 together, with an on-disk cache."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from .batching import ParallelDataset, ResumableDataLoader, TokenBudgetBatchSampler, collate_batch
from .corpus import CorpusError, find_split_file, load_parallel_corpus
from .tatoeba import GroupedSplit
from .tokenizer import EOS_ID, Tokenizer, train_tokenizer

__all__ = ["TranslationDataModule", "encode_sources"]

log = logging.getLogger(__name__)


def encode_sources(tokenizer: Tokenizer, sentences: list[str], max_len: int,
                   ids: list[list[int]] | None = None) -> list[np.ndarray]:
    """Sentences -> source id arrays ending with EOS, truncated to ``max_len`` tokens.

    ``ids``: ``tokenizer.encode(sentences)`` where the caller has it already
    (the sentences are then not encoded again).
    """
    ids = tokenizer.encode(sentences) if ids is None else ids
    return [np.asarray(seq[: max_len - 1] + [EOS_ID], dtype=np.int32) for seq in ids]


def _pack(seqs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id lists -> flat ``int32`` array and ``(N + 1,)`` offsets."""
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    flat = np.fromiter((i for s in seqs for i in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _unpack(flat: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    return [flat[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]


def _check_settings(max_len: int, max_tokens: int, eval_max_tokens: int, vocab_size: int,
                    num_workers: int, valid_size: int, test_size: int,
                    spm_model_type: str, spm_alpha: float = 0.0,
                    spm_nbest_size: int = -1) -> None:
    """One clear error for a data setting that cannot work, before any work starts.

    Raises:
        data.corpus.CorpusError: naming the ``data.*`` key, its value and the fix.
    """
    if max_len < 2:
        raise CorpusError(f"data.max_len={max_len} must be at least 2 (one token plus EOS)")
    for key, value in (("max_tokens", max_tokens), ("eval_max_tokens", eval_max_tokens)):
        if value < max_len:
            raise CorpusError(
                f"data.{key}={value} is smaller than data.max_len={max_len}: a batch must hold "
                f"the longest pair; set data.{key} to at least {max_len} (e.g. 4096) or lower "
                f"data.max_len")
    if vocab_size < 5:
        raise CorpusError(f"data.vocab_size={vocab_size} must be at least 5 (4 special pieces "
                          f"and one more); e.g. 8000")
    if spm_model_type not in ("unigram", "bpe"):
        raise CorpusError(f"data.spm_model_type={spm_model_type!r} is unknown; use unigram or bpe")
    if not spm_alpha >= 0 or (spm_model_type == "bpe" and spm_alpha >= 1):
        raise CorpusError(
            f"data.spm_alpha={spm_alpha} is out of range: 0 turns subword sampling off; "
            + ("for bpe it is the BPE-dropout probability, in [0, 1) (e.g. 0.1)"
               if spm_model_type == "bpe" else
               "for unigram it is the sampling exponent, > 0 (e.g. 0.1 with "
               "data.spm_nbest_size=64, or 0.5 with -1)"))
    if spm_nbest_size not in (-1,) and spm_nbest_size < 2:
        raise CorpusError(f"data.spm_nbest_size={spm_nbest_size} must be -1 (sample among all "
                          f"segmentations) or at least 2 (among the n best), e.g. 64")
    if num_workers < 0:
        raise CorpusError(f"data.num_workers={num_workers} must be 0 (load in the main process) "
                          f"or more")
    for key, value in (("valid_size", valid_size), ("test_size", test_size)):
        if value < 1:
            raise CorpusError(f"data.{key}={value} must be at least 1 (sentences held out of a "
                              f"Tatoeba zip)")


class TranslationDataModule(L.LightningDataModule):
    """Read a parallel corpus, train/load the tokenizer, and serve token-budget batches.

    Token ids and the SentencePiece model are cached under ``cache_dir`` in a
    folder named by a hash of everything they depend on (corpus files and
    their sizes/mtimes, languages, splits, vocabulary settings; for a
    Tatoeba zip also the split sizes and seed), so a second run reads them
    instead of re-tokenizing.

    Args:
        source: local directory of ``{split}.{lang}[.gz]`` files, a Tatoeba zip
            (``fra-eng.zip``; splits ``train``/``valid``/``test`` made by
            :mod:`data.tatoeba`), or a hub dataset id with a ``translation`` column.
        src_lang: source language code.
        tgt_lang: target language code.
        train_split: corpus name of the training split.
        valid_split: corpus name of the validation split.
        test_split: corpus name of the test split.
        hub_config: configuration name of a hub dataset (unused for directories).
        valid_size: Tatoeba zip only: pairs in the validation split (whole
            English-sentence groups, so slightly more).
        test_size: Tatoeba zip only: pairs in the test split (likewise).
        split_seed: Tatoeba zip only: seed of the grouped split (not of batch
            shuffling, so ``seed`` can change without changing the test set).
        vocab_size: joint SentencePiece vocabulary size (special pieces included).
        spm_model_type: ``unigram`` or ``bpe``.
        spm_alpha: subword regularization of the training split: 0 (default)
            segments every sentence the one deterministic way; > 0 samples a new
            segmentation of every training sentence, source and target, each
            epoch (:meth:`data.tokenizer.Tokenizer.sample_encode`: the unigram
            sampling exponent, or the BPE-dropout probability). Validation,
            test and translation keep the deterministic segmentation. Needs
            ``trainer.reload_dataloaders_every_n_epochs: 1`` (the epoch's
            batches are made from its segmentation).
        spm_nbest_size: unigram sampling among the n best segmentations, or
            -1 (default) among all.
        max_len: longest sequence in tokens; longer training pairs are dropped
            (count logged), longer evaluation sources truncated.
        max_tokens: training batch budget in padded tokens (``B * max(S, T)``).
        eval_max_tokens: batch budget for validation/test.
        cache_dir: folder for ``datasets`` caches and token ids.
        num_workers: DataLoader worker processes.
        seed: seed of batch shuffling.

    Raises:
        data.corpus.CorpusError: in ``prepare_data``/``setup``, for missing,
            misaligned or non-UTF-8 corpus files, or unknown languages or splits.
        ValueError: in ``prepare_data``, if the vocabulary size cannot be
            trained on the training split.
    """

    def __init__(self, source: str = "../shared/data/multi30k", src_lang: str = "en",
                 tgt_lang: str = "de", train_split: str = "train", valid_split: str = "val",
                 test_split: str = "test_2016_flickr", hub_config: str | None = None,
                 valid_size: int = 5000, test_size: int = 5000, split_seed: int = 0,
                 vocab_size: int = 8000, spm_model_type: str = "unigram",
                 spm_alpha: float = 0.0, spm_nbest_size: int = -1, max_len: int = 128,
                 max_tokens: int = 4096, eval_max_tokens: int = 8192,
                 cache_dir: str = ".cache", num_workers: int = 0, seed: int = 0):
        super().__init__()
        _check_settings(max_len=max_len, max_tokens=max_tokens, eval_max_tokens=eval_max_tokens,
                        vocab_size=vocab_size, num_workers=num_workers, valid_size=valid_size,
                        test_size=test_size, spm_model_type=spm_model_type,
                        spm_alpha=spm_alpha, spm_nbest_size=spm_nbest_size)
        self.save_hyperparameters()
        self.source, self.src_lang, self.tgt_lang = source, src_lang, tgt_lang
        self.splits = {"train": train_split, "valid": valid_split, "test": test_split}
        self.hub_config = hub_config
        self.grouped_split = GroupedSplit(valid_size, test_size, split_seed)
        self.vocab_size, self.spm_model_type = vocab_size, spm_model_type
        self.spm_alpha, self.spm_nbest_size = spm_alpha, spm_nbest_size
        #: The training split's raw (source, target) sentences, kept for sampling.
        self._train_text: tuple[list[str], list[str]] | None = None
        self._sampled: tuple[int, ParallelDataset] | None = None  # (epoch, its dataset)
        self.max_len, self.max_tokens, self.eval_max_tokens = max_len, max_tokens, eval_max_tokens
        self.cache_dir, self.num_workers, self.seed = cache_dir, num_workers, seed
        self.tokenizer: Tokenizer | None = None
        self.datasets: dict[str, ParallelDataset] = {}
        self.references: dict[str, list[str]] = {}
        self.sources: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ cache
    def _cache_key(self) -> str:
        identity = {"source": str(self.source), "langs": [self.src_lang, self.tgt_lang],
                    "splits": self.splits, "hub_config": self.hub_config,
                    "vocab_size": self.vocab_size, "model_type": self.spm_model_type,
                    "max_len": self.max_len, "version": 1}
        if Path(self.source).is_file():  # a Tatoeba zip: split by data.tatoeba
            identity["source"] = str(Path(self.source).resolve())
            stat = Path(self.source).stat()
            identity["files"] = {Path(self.source).name: [stat.st_size, stat.st_mtime_ns]}
            identity["grouped_split"] = dataclasses.asdict(self.grouped_split)
        elif Path(self.source).exists():
            identity["source"] = str(Path(self.source).resolve())
            files = {}
            for split in self.splits.values():
                for lang in (self.src_lang, self.tgt_lang):
                    path = find_split_file(self.source, split, lang)
                    stat = path.stat()
                    files[path.name] = [stat.st_size, stat.st_mtime_ns]
            identity["files"] = files
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.src_lang}-{self.tgt_lang}-{digest[:16]}"

    @property
    def cache_path(self) -> Path:
        """Folder holding ``spm.model`` and ``{split}.npz`` for this data config."""
        return Path(self.cache_dir) / "tokenized" / self._cache_key()

    def _load_text(self):
        corpus = load_parallel_corpus(self.source, self.src_lang, self.tgt_lang, self.splits,
                                      cache_dir=os.path.join(self.cache_dir, "datasets"),
                                      hub_config=self.hub_config,
                                      grouped_split=self.grouped_split)
        return corpus

    def prepare_data(self) -> None:
        """Train the tokenizer and tokenize every split, unless cached already.

        Raises:
            data.corpus.CorpusError: for missing, misaligned or non-UTF-8
                corpus files, or unknown languages or splits.
            ValueError: if ``vocab_size`` does not fit the training split (the
                message names ``data.vocab_size`` and the size that fits).
        """
        path = self.cache_path
        if (path / "done").exists():
            return
        start = time.perf_counter()
        corpus = self._load_text()
        train = corpus["train"]
        sentences = list(train["src"]) + list(train["tgt"])
        tokenizer = train_tokenizer(
            sentences, vocab_size=self.vocab_size, model_type=self.spm_model_type,
            corpus=f"the training split {self.splits['train']!r} of {self.source} "
                   f"({len(sentences)} {self.src_lang} and {self.tgt_lang} sentences)")
        path.mkdir(parents=True, exist_ok=True)
        for name, ds in corpus.items():
            src_flat, src_off = _pack([ids + [EOS_ID] for ids in tokenizer.encode(ds["src"])])
            tgt_flat, tgt_off = _pack(tokenizer.encode(ds["tgt"]))
            tmp = path / f"{name}.tmp.npz"
            np.savez(tmp, src=src_flat, src_offsets=src_off, tgt=tgt_flat, tgt_offsets=tgt_off)
            os.replace(tmp, path / f"{name}.npz")
        tokenizer.save(str(path / "spm.model"))
        (path / "done").write_text(json.dumps({"seconds": time.perf_counter() - start}))
        log.info("tokenized %s in %.1f s -> %s", self.source, time.perf_counter() - start, path)

    def setup(self, stage: str | None = None) -> None:
        """Load the tokenizer, token ids and raw references from the cache.

        Raises:
            data.corpus.CorpusError, ValueError: as :meth:`prepare_data`.
        """
        if self.datasets:
            return
        self.prepare_data()
        path = self.cache_path
        self.tokenizer = Tokenizer.load(str(path / "spm.model"))
        corpus = self._load_text()
        for name in self.splits:
            arrays = np.load(path / f"{name}.npz")
            src = _unpack(arrays["src"], arrays["src_offsets"])
            tgt = _unpack(arrays["tgt"], arrays["tgt_offsets"])
            if name == "train":
                src, tgt = self._drop_long(src, tgt, warn=True)
                if self.spm_alpha > 0:
                    self._train_text = (list(corpus[name]["src"]), list(corpus[name]["tgt"]))
            else:
                src = [s if len(s) <= self.max_len else np.append(s[: self.max_len - 1], EOS_ID)
                       for s in src]
                tgt = [t[: self.max_len - 1] for t in tgt]
                self.references[name] = list(corpus[name]["tgt"])
                self.sources[name] = list(corpus[name]["src"])
            self.datasets[name] = ParallelDataset(src, tgt)

    def _drop_long(self, src: list, tgt: list, warn: bool = False) -> tuple[list, list]:
        """Training pairs whose source or target (+ EOS) exceeds ``max_len`` are dropped."""
        keep = [i for i in range(len(src))
                if len(src[i]) <= self.max_len and len(tgt[i]) + 1 <= self.max_len]
        if warn and len(keep) < len(src):
            log.warning("train: dropped %d of %d pairs longer than max_len=%d tokens",
                        len(src) - len(keep), len(src), self.max_len)
        return [src[i] for i in keep], [tgt[i] for i in keep]

    def sampled_train(self, epoch: int) -> ParallelDataset:
        """The training split segmented by subword sampling for ``epoch``
        (``spm_alpha > 0``): the same ``seed`` and epoch give the same ids
        within one process (not across processes: see
        :meth:`Tokenizer.sample_encode`).
        Sampled segmentations are longer, so pairs over ``max_len`` are
        dropped per epoch.

        Raises:
            RuntimeError: before :meth:`setup`, or with ``spm_alpha == 0``.
        """
        if self._train_text is None or self.tokenizer is None:
            raise RuntimeError("sampled_train needs setup() and data.spm_alpha > 0")
        if self._sampled is None or self._sampled[0] != epoch:
            seed = (self.seed + 1) * 1_000_003 + epoch
            src_text, tgt_text = self._train_text
            src = [np.asarray(ids + [EOS_ID], dtype=np.int32) for ids in self.tokenizer.sample_encode(
                src_text, self.spm_alpha, self.spm_nbest_size, seed=2 * seed)]
            tgt = [np.asarray(ids, dtype=np.int32) for ids in self.tokenizer.sample_encode(
                tgt_text, self.spm_alpha, self.spm_nbest_size, seed=2 * seed + 1)]
            self._sampled = (epoch, ParallelDataset(*self._drop_long(src, tgt)))
        return self._sampled[1]

    # ------------------------------------------------------------ dataloaders
    def _loader(self, name: str, max_tokens: int, shuffle: bool) -> DataLoader:
        ds = self.datasets[name]
        trainer = self.trainer
        if name == "train" and self.spm_alpha > 0:
            reload = getattr(trainer, "reload_dataloaders_every_n_epochs", 1)
            if trainer is not None and reload != 1:
                raise CorpusError(
                    f"data.spm_alpha={self.spm_alpha} samples a new segmentation every epoch, "
                    f"but trainer.reload_dataloaders_every_n_epochs={reload} would train every "
                    f"epoch on the first one; set trainer.reload_dataloaders_every_n_epochs: 1 "
                    f"(or data.spm_alpha: 0)")
            ds = self.sampled_train(trainer.current_epoch if trainer is not None else 0)
        replicas = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        sampler = TokenBudgetBatchSampler(ds.src_lens(), ds.tgt_lens(), max_tokens,
                                          shuffle=shuffle, seed=self.seed,
                                          num_replicas=replicas, rank=rank)
        consumed = None
        if trainer is not None and name == "train":
            # Batches of this epoch the training loop has trained on: what a
            # checkpoint must record so a resumed run continues with the next one.
            def consumed() -> int:
                return trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return ResumableDataLoader(ds, sampler, consumed=consumed, seed=self.seed,
                                   collate_fn=collate_batch, num_workers=self.num_workers,
                                   persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.max_tokens, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_max_tokens, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_max_tokens, shuffle=False)
