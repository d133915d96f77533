"""Stage 1: read a parallel corpus with Hugging Face ``datasets``.

Three sources are supported:

* a local directory of line-aligned raw text files named ``{split}.{lang}`` or
  ``{split}.{lang}.gz`` (the layout of ``../shared/data/multi30k``);
* a Tatoeba zip from manythings.org (``../shared/data/tatoeba-fra-eng/fra-eng.zip``),
  which has no official split: :mod:`data.tatoeba` makes a seeded split
  grouped by the English sentence;
* a Hugging Face hub dataset id whose rows have a ``translation`` column
  ``{lang: sentence}`` (e.g. ``bentrevett/multi30k``-style or ``wmt14``),
  read when the hub is reachable.

Either way the result is a ``datasets.DatasetDict`` with one ``Dataset`` per
split and two string columns, ``src`` and ``tgt``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import datasets

if TYPE_CHECKING:
    from .tatoeba import GroupedSplit

__all__ = ["CorpusError", "find_split_file", "load_parallel_corpus"]

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus that cannot be read as asked; the message says what to fix."""


def find_split_file(data_dir: str | os.PathLike, split: str, lang: str) -> Path:
    """Path of ``{split}.{lang}`` or ``{split}.{lang}.gz`` in ``data_dir``.

    Raises:
        CorpusError: if neither exists; the message lists the files found.
    """
    data_dir = Path(data_dir)
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    found = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []
    where = f"found: {', '.join(found)}" if found else "the directory is missing or empty"
    raise CorpusError(
        f"no file for split {split!r}, language {lang!r} in {data_dir}: expected "
        f"{split}.{lang} or {split}.{lang}.gz ({where}); check the split names and "
        f"languages in the data config")


def _read_lines(path: Path, cache_dir: str | None) -> datasets.Dataset:
    """One ``datasets`` text dataset (column ``text``) per file, line by line."""
    return datasets.load_dataset("text", data_files={"lines": str(path)}, split="lines",
                                 cache_dir=cache_dir, keep_linebreaks=False)


def _drop_empty(ds: datasets.Dataset, split: str) -> datasets.Dataset:
    """Drop pairs where either side is empty or whitespace-only; log how many."""
    kept = ds.filter(lambda batch: [bool(s.strip()) and bool(t.strip())
                                    for s, t in zip(batch["src"], batch["tgt"])],
                     batched=True, load_from_cache_file=False)
    dropped = len(ds) - len(kept)
    if dropped:
        log.warning("split %s: dropped %d of %d pairs with an empty or whitespace-only side",
                    split, dropped, len(ds))
    return kept


def load_parallel_corpus(source: str | os.PathLike, src_lang: str, tgt_lang: str,
                         splits: dict[str, str] | list[str],
                         cache_dir: str | None = None,
                         hub_config: str | None = None,
                         grouped_split: GroupedSplit | None = None) -> datasets.DatasetDict:
    """Read the given splits of a parallel corpus into ``src``/``tgt`` columns.

    Args:
        source: a local directory (files ``{split}.{lang}[.gz]``), a Tatoeba
            zip file (:func:`data.tatoeba.load_tatoeba`: splits ``train``,
            ``valid``, ``test``), or a hub dataset id with a ``translation`` column.
        src_lang, tgt_lang: language codes, e.g. ``"en"``, ``"de"``.
        splits: split names to read, or a mapping ``{our_name: corpus_name}``
            (e.g. ``{"test": "test_2016_flickr"}``); the result is keyed by
            ``our_name``.
        cache_dir: where ``datasets`` keeps its Arrow caches.
        hub_config: configuration name of a hub dataset (e.g. ``"de-en"``).
        grouped_split: sizes and seed of the split of a Tatoeba zip (default
            :class:`data.tatoeba.GroupedSplit()`); unused for other sources.

    Returns:
        ``DatasetDict`` of ``Dataset``s with string columns ``src`` and ``tgt``,
        line-aligned, without empty pairs (the count dropped is logged).

    Raises:
        CorpusError: if a split or language file is missing (naming what was
            found), or the two files of a split differ in line count (naming
            both files and both counts).
    """
    if not isinstance(splits, dict):
        splits = {name: name for name in splits}
    if Path(source).is_file():
        from .tatoeba import load_tatoeba  # here: data.tatoeba imports CorpusError from this module
        return load_tatoeba(source, src_lang, tgt_lang, splits, cache_dir, grouped_split)
    if Path(source).exists():
        out = {}
        for name, corpus_split in splits.items():
            src_path = find_split_file(source, corpus_split, src_lang)
            tgt_path = find_split_file(source, corpus_split, tgt_lang)
            src_ds, tgt_ds = _read_lines(src_path, cache_dir), _read_lines(tgt_path, cache_dir)
            if len(src_ds) != len(tgt_ds):
                raise CorpusError(
                    f"split {corpus_split!r}: {src_path} has {len(src_ds)} lines but "
                    f"{tgt_path} has {len(tgt_ds)}; the files of a split must be "
                    f"line-aligned (one sentence per line, same order)")
            ds = src_ds.rename_column("text", "src").add_column("tgt", tgt_ds["text"])
            out[name] = _drop_empty(ds, corpus_split)
        return datasets.DatasetDict(out)
    return _load_hub_corpus(str(source), src_lang, tgt_lang, splits, cache_dir, hub_config)


def _load_hub_corpus(dataset_id: str, src_lang: str, tgt_lang: str, splits: dict[str, str],
                     cache_dir: str | None, hub_config: str | None) -> datasets.DatasetDict:
    """Hub dataset with a ``translation`` column -> ``src``/``tgt`` columns."""
    out = {}
    for name, corpus_split in splits.items():
        try:
            ds = datasets.load_dataset(dataset_id, hub_config, split=corpus_split,
                                       cache_dir=cache_dir)
        except (ConnectionError, OSError) as err:
            raise CorpusError(
                f"could not load hub dataset {dataset_id!r} (split {corpus_split!r}): {err}. "
                f"If the hub is unreachable, download the corpus and point the data "
                f"config at a local directory of {{split}}.{{lang}}[.gz] files") from err
        if "translation" not in ds.column_names:
            raise CorpusError(
                f"hub dataset {dataset_id!r} split {corpus_split!r} has columns "
                f"{ds.column_names}, not a 'translation' column of {{lang: text}}")
        ds = ds.map(lambda row: {"src": row["translation"][src_lang],
                                 "tgt": row["translation"][tgt_lang]},
                    remove_columns=ds.column_names)
        out[name] = _drop_empty(ds, corpus_split)
    return datasets.DatasetDict(out)

