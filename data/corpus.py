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

import datasets
import numpy as np

from .reading import CorpusError, invalid_utf8_error, iter_column, read_lines
from .tatoeba import GroupedSplit, load_tatoeba

__all__ = ["CorpusError", "find_split_file", "invalid_utf8_error", "load_parallel_corpus",
           "read_lines"]

log = logging.getLogger(__name__)


def _languages_of_split(names: list[str], split: str) -> list[str]:
    """Language codes of the files ``{split}.{lang}[.gz]`` among ``names``."""
    langs = set()
    for name in names:
        stem = name[:-3] if name.endswith(".gz") else name
        if stem.startswith(f"{split}.") and "." not in stem[len(split) + 1:]:
            langs.add(stem[len(split) + 1:])
    return sorted(lang for lang in langs if lang)


def _splits_of(names: list[str]) -> list[str]:
    """Split names of the files ``{split}.{lang}[.gz]`` among ``names``."""
    stems = (name[:-3] if name.endswith(".gz") else name for name in names)
    return sorted({stem.rsplit(".", 1)[0] for stem in stems if "." in stem.strip(".")})


def find_split_file(data_dir: str | os.PathLike, split: str, lang: str) -> Path:
    """Path of ``{split}.{lang}`` or ``{split}.{lang}.gz`` in ``data_dir``.

    Raises:
        CorpusError: if neither exists. The message lists the files found and,
            when the split has files of other languages, those languages
            (``languages found for split 'train': cs, de, en``); when it has
            none, the splits that do have files.
    """
    data_dir = Path(data_dir)
    for name in (f"{split}.{lang}", f"{split}.{lang}.gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    found = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []
    where = f"found: {', '.join(found)}" if found else "the directory is missing or empty"
    expected = f"expected {split}.{lang} or {split}.{lang}.gz ({where})"
    languages = _languages_of_split(found, split)
    if languages:
        raise CorpusError(
            f"no file for language {lang!r} of split {split!r} in {data_dir}: {expected}; "
            f"languages found for split {split!r}: {', '.join(languages)}. Set data.src_lang "
            f"and data.tgt_lang to languages that have files")
    splits = _splits_of(found)
    hint = f"splits found: {', '.join(splits)}; " if splits else ""
    raise CorpusError(
        f"no file for split {split!r}, language {lang!r} in {data_dir}: {expected}; {hint}"
        f"check the split names (data.train_split/valid_split/test_split) and languages "
        f"in the data config")


def looks_like_local_path(source: str) -> bool:
    """Whether a ``data.source`` value names a local path rather than a hub id
    (``name`` or ``owner/name``): absolute, ``./``, ``../``, ``~``, a Windows
    drive, or more than one ``/``."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
            or (len(source) > 1 and source[1] == ":"))


def _drop_empty(ds: datasets.Dataset, split: str) -> datasets.Dataset:
    """Drop pairs where either side is empty or whitespace-only; log how many.

    Both columns are read in Arrow chunks (:func:`data.reading.iter_column`);
    when nothing is dropped ``ds`` is returned as it is (no indices mapping,
    so later reads stay contiguous).
    """
    keep = np.fromiter(
        (bool(s.strip()) and bool(t.strip())
         for src, tgt in zip(iter_column(ds, "src"), iter_column(ds, "tgt"))
         for s, t in zip(src, tgt)), dtype=bool, count=len(ds))
    if keep.all():
        return ds
    log.warning("split %s: dropped %d of %d pairs with an empty or whitespace-only side",
                split, int((~keep).sum()), len(ds))
    return ds.select(np.flatnonzero(keep))


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
        CorpusError: if a split or language file is missing (naming the files
            found and the languages the split does have), a file is not UTF-8
            (naming the file and its first bad line), the two files of a split
            differ in line count (naming both files and both counts), a hub
            dataset's ``translation`` column lacks a language (naming those it
            has), the hub is unreachable, or a Tatoeba zip is asked for other
            languages than en/fr (see :func:`data.tatoeba.load_tatoeba`).
    """
    if not isinstance(splits, dict):
        splits = {name: name for name in splits}
    if Path(source).is_file():
        return load_tatoeba(source, src_lang, tgt_lang, splits, cache_dir, grouped_split)
    if Path(source).exists():
        out = {}
        for name, corpus_split in splits.items():
            src_path = find_split_file(source, corpus_split, src_lang)
            tgt_path = find_split_file(source, corpus_split, tgt_lang)
            src_ds, tgt_ds = read_lines(src_path, cache_dir), read_lines(tgt_path, cache_dir)
            if len(src_ds) != len(tgt_ds):
                raise CorpusError(
                    f"split {corpus_split!r}: {src_path} has {len(src_ds)} lines but "
                    f"{tgt_path} has {len(tgt_ds)}; the files of a split must be "
                    f"line-aligned (one sentence per line, same order)")
            # Side by side at the Arrow level: no Python pass over the rows.
            ds = datasets.concatenate_datasets([src_ds.rename_column("text", "src"),
                                                tgt_ds.rename_column("text", "tgt")], axis=1)
            out[name] = _drop_empty(ds, corpus_split)
        return datasets.DatasetDict(out)
    if looks_like_local_path(str(source)):
        parent = Path(source).expanduser().parent
        raise CorpusError(
            f"data.source={source}: no such directory or file (a path, not a hub dataset id); "
            f"point it at a directory of {{split}}.{{lang}}[.gz] files"
            + (f" ({parent} exists)" if parent.is_dir() else ""))
    return _load_hub_corpus(str(source), src_lang, tgt_lang, splits, cache_dir, hub_config)


def _translation_languages(ds: datasets.Dataset) -> list[str]:
    """Language codes of a ``translation`` column: from its feature, else its first row."""
    feature = ds.features["translation"]
    languages = getattr(feature, "languages", None)  # datasets.Translation
    if languages is None and isinstance(feature, dict):  # a struct of one string per language
        languages = list(feature)
    if languages is None:
        languages = list(ds[0]["translation"]) if len(ds) else []
    return sorted(languages)


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
        languages = _translation_languages(ds)
        missing = [lang for lang in (src_lang, tgt_lang) if lang not in languages]
        if missing:
            raise CorpusError(
                f"hub dataset {dataset_id!r}"
                f"{f' (config {hub_config!r})' if hub_config else ''} split {corpus_split!r} has "
                f"no language {', '.join(map(repr, missing))} in its 'translation' column; "
                f"languages present: {', '.join(languages) or 'none'}. Set data.src_lang and "
                f"data.tgt_lang to two of them (or pick another data.hub_config)")
        # The struct column's fields become columns at the Arrow level (no pass over rows).
        ds = ds.select_columns(["translation"]).flatten()
        ds = ds.rename_columns({f"translation.{src_lang}": "src", f"translation.{tgt_lang}": "tgt"})
        ds = ds.select_columns(["src", "tgt"])
        out[name] = _drop_empty(ds, corpus_split)
    return datasets.DatasetDict(out)

