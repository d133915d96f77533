"""The ``LightningDataModule`` that ties stages 1–3 together, with an on-disk cache."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import os
import resource
import shutil
import time
from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from .batching import ParallelDataset, ResumableDataLoader, TokenBudgetBatchSampler, collate_batch
from .cache import (CACHE_VERSION, CacheDamaged, PackedSequences, PackedWriter, load_packed, pack,
                    read_manifest, write_manifest)
from .corpus import CorpusError, find_split_file, load_parallel_corpus
from .reading import column, iter_column
from .tatoeba import GroupedSplit
from .tokenizer import EOS_ID, Tokenizer, train_tokenizer

__all__ = ["TranslationDataModule", "peak_rss_mb"]

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``getrusage``'s ``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _StageClock:
    """Seconds and the running peak RSS after each named stage (logged and kept in the manifest)."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = {}
        self.restart()

    def restart(self) -> None:
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Add the time since the last lap (or restart) to stage ``name``."""
        now = time.perf_counter()
        stage = self.stages.setdefault(name, {"seconds": 0.0})
        stage["seconds"] = round(stage["seconds"] + now - self._last, 3)
        stage["peak_rss_mb"] = round(peak_rss_mb(), 1)
        self._last = now


def _check_settings(max_len: int, max_tokens: int, eval_max_tokens: int, vocab_size: int,
                    num_workers: int, valid_size: int, test_size: int,
                    spm_model_type: str, spm_alpha: float = 0.0,
                    spm_nbest_size: int = -1, spm_input_sentences: int = 500_000) -> None:
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
    if spm_input_sentences < 0:
        raise CorpusError(f"data.spm_input_sentences={spm_input_sentences} must be 0 (train the "
                          f"tokenizer on every training sentence) or more, e.g. 500000")
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
        spm_input_sentences: SentencePiece trains on a uniform sample of at
            most this many training sentences (source and target counted
            together); 0 takes them all. Its memory grows with the sample: a
            unigram model needs about 1.5 KiB per sentence (1.55 GiB for 1 M
            numbered Multi30k sentences, 0.8 GiB for 500 k; BPE about 0.5 KiB),
            so the default of 500 k keeps the data stage of a multi-million-pair
            corpus within 2 GiB. Corpora with fewer sentences (Multi30k's 58 k,
            Tatoeba's 336 k) are used whole.
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
                 spm_alpha: float = 0.0, spm_nbest_size: int = -1,
                 spm_input_sentences: int = 500_000, max_len: int = 128,
                 max_tokens: int = 4096, eval_max_tokens: int = 8192,
                 cache_dir: str = ".cache", num_workers: int = 0, seed: int = 0):
        super().__init__()
        _check_settings(max_len=max_len, max_tokens=max_tokens, eval_max_tokens=eval_max_tokens,
                        vocab_size=vocab_size, num_workers=num_workers, valid_size=valid_size,
                        test_size=test_size, spm_model_type=spm_model_type,
                        spm_alpha=spm_alpha, spm_nbest_size=spm_nbest_size,
                        spm_input_sentences=spm_input_sentences)
        self.save_hyperparameters()
        self.source, self.src_lang, self.tgt_lang = source, src_lang, tgt_lang
        self.splits = {"train": train_split, "valid": valid_split, "test": test_split}
        self.hub_config = hub_config
        self.grouped_split = GroupedSplit(valid_size, test_size, split_seed)
        self.vocab_size, self.spm_model_type = vocab_size, spm_model_type
        self.spm_alpha, self.spm_nbest_size = spm_alpha, spm_nbest_size
        self.spm_input_sentences = spm_input_sentences
        #: The training split's raw sentences (an Arrow dataset), kept for sampling.
        self._train_corpus = None
        #: What :meth:`_open_cache` returned when :meth:`prepare_data` last checked the cache.
        self._opened: tuple | None = None
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
                    "spm_input_sentences": self.spm_input_sentences,
                    "max_len": self.max_len, "version": CACHE_VERSION}
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
        """Folder holding ``spm.model``, the split arrays and ``manifest.json``
        for this data config (layout: :mod:`data.cache`)."""
        return Path(self.cache_dir) / "tokenized" / self._cache_key()

    def _load_text(self, names: list[str] | None = None):
        """The corpus splits ``names`` (default: all three) as ``src``/``tgt`` datasets."""
        splits = {name: self.splits[name] for name in (names or self.splits)}
        return load_parallel_corpus(self.source, self.src_lang, self.tgt_lang, splits,
                                    cache_dir=os.path.join(self.cache_dir, "datasets"),
                                    hub_config=self.hub_config,
                                    grouped_split=self.grouped_split)

    def _open_cache(self, path: Path) -> tuple[dict, Tokenizer, dict[str, tuple]] | None:
        """The manifest, tokenizer and packed ``(src, tgt)`` of every split of a
        built cache; None if it is not built.

        Raises:
            data.cache.CacheDamaged: if it is there but does not hold what its
                manifest says (sizes, lengths, offsets, the tokenizer's checksum).
        """
        manifest = read_manifest(path)
        if manifest is None:
            return None
        model = path / "spm.model"
        data = model.read_bytes() if model.exists() else b""
        if hashlib.sha256(data).hexdigest() != manifest.get("spm_model_sha256"):
            raise CacheDamaged(f"{model} is missing or differs from the checksum written with it")
        try:
            tokenizer = Tokenizer(data)
        except (ValueError, RuntimeError, OSError) as err:
            raise CacheDamaged(f"{model} is not a SentencePiece model of this project "
                               f"({err})") from err
        splits = {}
        for name in self.splits:
            entry = manifest.get("splits", {}).get(name)
            if entry is None:
                raise CacheDamaged(f"{path / 'manifest.json'} lists no split {name!r}")
            splits[name] = (load_packed(path, entry["src"]), load_packed(path, entry["tgt"]))
            if len(splits[name][0]) != len(splits[name][1]):
                raise CacheDamaged(f"{path}: split {name!r} has {len(splits[name][0])} sources "
                                   f"but {len(splits[name][1])} targets")
        return manifest, tokenizer, splits

    def _cache_ready(self) -> bool:
        """Whether the cache is built and intact (kept open for :meth:`setup`); a damaged
        one gets a warning and is replaced by the rebuild."""
        path = self.cache_path
        try:
            self._opened = self._open_cache(path)
        except CacheDamaged as err:
            log.warning("token cache %s is damaged (%s); rebuilding it", path, err)
            self._opened = None
        return self._opened is not None

    def prepare_data(self) -> None:
        """Train the tokenizer and tokenize every split into the cache, unless it is built.

        Linear in the corpus and bounded in memory: the splits are read in Arrow
        chunks (:func:`data.reading.iter_column`), SentencePiece trains on a
        stream of the training sentences (source sentences first, then
        target sentences; a seeded uniform sample of ``spm_input_sentences`` of
        them when there are more), and every chunk is
        encoded on all cores and written straight into the flat ``int32``
        arrays of :mod:`data.cache`. The folder is built under a temporary name
        and renamed when complete, so an interrupted run leaves no half cache;
        a damaged cache is rebuilt with a warning. The seconds and peak RSS of
        each stage (read, tokenizer, encode, write) are logged and kept in
        ``manifest.json``.

        Raises:
            data.corpus.CorpusError: for missing, misaligned or non-UTF-8
                corpus files, or unknown languages or splits; or if a
                multi-node run finds no cache (build it once with
                ``scripts/prepare_data.py``, or every node would write it).
            ValueError: if ``vocab_size`` does not fit the training split (the
                message names ``data.vocab_size`` and the size that fits).
        """
        if self._cache_ready():
            return
        path = self.cache_path
        trainer = self.trainer
        if trainer is not None and getattr(trainer, "num_nodes", 1) > 1:
            raise CorpusError(
                f"the token cache {path} is not built and this run has "
                f"trainer.num_nodes={trainer.num_nodes}: every node would tokenize the corpus "
                f"and write the same files. Build it once before launching: python "
                f"scripts/prepare_data.py --config <this config> (data.cache_dir on a filesystem "
                f"all nodes share)")
        clock = _StageClock()
        corpus = self._load_text()
        clock.lap("read")
        train = corpus["train"]
        sentences = itertools.chain(itertools.chain.from_iterable(iter_column(train, "src")),
                                    itertools.chain.from_iterable(iter_column(train, "tgt")))
        total, sample = 2 * len(train), self.spm_input_sentences
        if 0 < sample < total:  # a seeded uniform sample, streamed (SentencePiece then takes all)
            chosen = np.zeros(total, dtype=bool)
            chosen[np.random.default_rng(0).choice(total, size=sample, replace=False)] = True
            sentences = itertools.compress(sentences, chosen)
        tokenizer = train_tokenizer(
            sentences, vocab_size=self.vocab_size, model_type=self.spm_model_type,
            # SentencePiece's own cap stays 1 M (what it records in spm.model) unless asked
            # for more: a sample of at most 1 M sentences reaches it whole.
            seed_sentences=max(1_000_000, sample) if sample else 0,
            corpus=f"the training split {self.splits['train']!r} of {self.source} "
                   f"({2 * len(train)} {self.src_lang} and {self.tgt_lang} sentences)")
        clock.lap("tokenizer")
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            manifest = {"version": CACHE_VERSION, "source": str(self.source),
                        "languages": [self.src_lang, self.tgt_lang], "splits": {}}
            for name, ds in corpus.items():
                entry = {"corpus_split": self.splits[name], "pairs": len(ds)}
                for side, append in (("src", EOS_ID), ("tgt", None)):
                    writer = PackedWriter(tmp / f"{name}.{side}")
                    try:
                        for chunk in iter_column(ds, side):
                            clock.restart()
                            flat, lengths = pack(tokenizer.encode(chunk), append)
                            clock.lap("encode")
                            writer.add(flat, lengths)
                            clock.lap("write")
                        clock.restart()
                        entry[side] = writer.close()
                        clock.lap("write")
                    except BaseException:
                        writer.abort()
                        raise
                manifest["splits"][name] = entry
            tokenizer.save(str(tmp / "spm.model"))
            manifest["spm_model_sha256"] = hashlib.sha256(tokenizer.model_proto).hexdigest()
            manifest["stages"] = clock.stages
            write_manifest(tmp, manifest)
            self._install(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        total = sum(stage["seconds"] for stage in clock.stages.values())
        log.info("tokenized %s in %.1f s (%s; peak RSS %.0f MiB) -> %s", self.source, total,
                 ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in clock.stages.items()),
                 peak_rss_mb(), path)

    @staticmethod
    def _install(tmp: Path, path: Path) -> None:
        """Move a complete cache folder into place, replacing a damaged one."""
        if path.exists():
            old = path.with_name(f"{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, path)
        except OSError:  # another process installed the same cache meanwhile
            if read_manifest(path) is None:
                raise

    def setup(self, stage: str | None = None) -> None:
        """Open the tokenizer and the memory-mapped token ids; read the raw
        sources and references of the evaluation splits.

        The training split is never held as Python objects: its ids stay in
        the memory-mapped cache, and pairs longer than ``max_len`` are left out
        by an index array. Evaluation sources longer than ``max_len`` are
        truncated (EOS kept last), their targets likewise.

        Raises:
            data.corpus.CorpusError, ValueError: as :meth:`prepare_data`.
        """
        if self.datasets:
            return
        self.prepare_data()
        try:  # opened and checked by prepare_data when it found the cache built
            opened = self._opened or self._open_cache(self.cache_path)
        except CacheDamaged as err:  # damaged after this run's prepare_data checked it
            raise CorpusError(f"the token cache {self.cache_path} was damaged while this run "
                              f"started ({err}); run again, or build it first with "
                              f"scripts/prepare_data.py") from err
        if opened is None:  # removed between prepare_data and here
            raise CorpusError(f"the token cache {self.cache_path} disappeared while this run "
                              f"started; run again (or scripts/prepare_data.py first)")
        _, self.tokenizer, packed = opened
        text_splits = [name for name in self.splits if name != "train"]
        if self.spm_alpha > 0:
            text_splits.append("train")
        corpus = self._load_text(text_splits)
        for name, (src, tgt) in packed.items():
            if name == "train":
                src, tgt = self._drop_long(src, tgt, warn=True)
                if self.spm_alpha > 0:
                    self._train_corpus = corpus[name]
            else:
                src, tgt = self._truncate(src, tgt)
                self.references[name] = column(corpus[name], "tgt")
                self.sources[name] = column(corpus[name], "src")
            self.datasets[name] = ParallelDataset(src, tgt)

    def _truncate(self, src: PackedSequences, tgt: PackedSequences) -> tuple:
        """Evaluation pairs: sources over ``max_len`` cut to ``max_len`` (EOS last), targets
        to ``max_len - 1`` (EOS is added when batched); kept packed when nothing is cut."""
        if (src.lengths() <= self.max_len).all() and (tgt.lengths() < self.max_len).all():
            return src, tgt
        return ([s if len(s) <= self.max_len else np.append(s[: self.max_len - 1], EOS_ID)
                 for s in src], [t[: self.max_len - 1] for t in tgt])

    def _drop_long(self, src: PackedSequences, tgt: PackedSequences,
                   warn: bool = False) -> tuple[PackedSequences, PackedSequences]:
        """Training pairs whose source or target (+ EOS) exceeds ``max_len`` are dropped
        (an index array over the packed ids; nothing is copied)."""
        keep = (src.lengths() <= self.max_len) & (tgt.lengths() + 1 <= self.max_len)
        if keep.all():
            return src, tgt
        if warn:
            log.warning("train: dropped %d of %d pairs longer than max_len=%d tokens",
                        int((~keep).sum()), len(keep), self.max_len)
        index = np.flatnonzero(keep)
        return src.subset(index), tgt.subset(index)

    def sampled_train(self, epoch: int) -> ParallelDataset:
        """The training split segmented by subword sampling for ``epoch``
        (``spm_alpha > 0``): the same ``seed`` and epoch give the same ids
        within one process (not across processes: see
        :meth:`Tokenizer.sample_encode`).
        Sampled segmentations are longer, so pairs over ``max_len`` are
        dropped per epoch.

        The raw sentences are read from the Arrow corpus in chunks and the
        sampled ids packed into flat ``int32`` arrays (4 bytes per token in
        memory, no Python lists of the whole split). Sampling runs on one
        thread so that a seed gives one segmentation: it re-encodes the whole
        training split every epoch, at the speed ``scripts/benchmark_data.py``
        reports.

        Raises:
            RuntimeError: before :meth:`setup`, or with ``spm_alpha == 0``.
        """
        if self._train_corpus is None or self.tokenizer is None:
            raise RuntimeError("sampled_train needs setup() and data.spm_alpha > 0")
        if self._sampled is None or self._sampled[0] != epoch:
            seed = (self.seed + 1) * 1_000_003 + epoch
            sides = []
            for side, side_seed, append in (("src", 2 * seed, EOS_ID), ("tgt", 2 * seed + 1, None)):
                flats, lengths = [], []
                for k, chunk in enumerate(iter_column(self._train_corpus, side)):
                    flat, n = pack(self.tokenizer.sample_encode(
                        chunk, self.spm_alpha, self.spm_nbest_size,
                        seed=side_seed * 7919 + k), append)
                    flats.append(flat)
                    lengths.append(n)
                offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))])
                sides.append(PackedSequences(np.concatenate(flats), offsets))
            self._sampled = (epoch, ParallelDataset(*self._drop_long(*sides)))
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
