"""Stage 1 for Tatoeba: English–French pairs from a manythings.org zip, split by English sentence.

``../shared/data/tatoeba-fra-eng/fra-eng.zip`` holds ``fra.txt``, one pair per
line: ``English<TAB>French<TAB>attribution`` (CC-BY 2.0 France; the third
column is kept as the ``attribution`` column). The corpus has no official
split, and many English sentences have several French translations, so a
random split by pair would put test sentences into training. Here the split is
*grouped*: every pair of one English sentence (compared with runs of
whitespace collapsed) goes to the same split.

The split: shuffle the distinct English sentences with ``numpy``'s
``default_rng(seed)``; the first ones go to ``test`` until it holds at least
``test_size`` pairs, the next ones to ``valid`` until it holds at least
``valid_size`` pairs, the rest to ``train``. A split overshoots its target by
less than the largest group (32 pairs in fra.txt); the same seed always gives
the same split. Rows keep the file's order within each split.

The result is what :func:`data.corpus.load_parallel_corpus` returns for a
directory: a ``datasets.DatasetDict`` with string columns ``src`` and ``tgt``
(plus ``attribution`` and ``line``, the 1-based line number in fra.txt).
"""

from __future__ import annotations

import logging
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from .reading import CorpusError, read_lines

__all__ = ["LANGUAGES", "MEMBER", "SPLITS", "GroupedSplit", "extract_member", "group_ids",
           "grouped_split", "load_tatoeba", "read_tatoeba"]

log = logging.getLogger(__name__)

LANGUAGES = ("en", "fr")
"""Language codes of the first and second column of fra.txt."""

MEMBER = "fra.txt"
"""The file inside the zip that holds the pairs."""

SPLITS = ("train", "valid", "test")
"""Names of the splits a grouped split makes."""


@dataclass(frozen=True)
class GroupedSplit:
    """Sizes and seed of a split grouped by the English sentence."""

    valid_size: int = 5000
    """Pairs in the validation split (at least this many; whole groups)."""

    test_size: int = 5000
    """Pairs in the test split (at least this many; whole groups)."""

    seed: int = 0
    """Seed of ``numpy.random.default_rng`` that shuffles the English sentences."""


def extract_member(zip_path: str | os.PathLike, cache_dir: str | os.PathLike) -> Path:
    """Extract ``fra.txt`` once into ``cache_dir/tatoeba/{zip stem}-{crc}/``; return its path.

    The folder is named by the member's CRC-32, so a changed zip is extracted
    anew and an unchanged one is read from the cache.

    Raises:
        CorpusError: if the file is not a zip archive or holds no fra.txt.
    """
    zip_path = Path(zip_path)
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, EOFError) as err:
        raise CorpusError(
            f"{zip_path} is not a zip archive ({err}); data.source must be a directory of "
            f"{{split}}.{{lang}}[.gz] files, a Tatoeba zip such as fra-eng.zip, or a hub "
            f"dataset id") from err
    with archive:
        names = archive.namelist()
        if MEMBER not in names:
            raise CorpusError(
                f"{zip_path} holds no {MEMBER} (found: {', '.join(names) or 'nothing'}); "
                f"use the manythings.org English-French zip, fra-eng.zip")
        info = archive.getinfo(MEMBER)
        target = Path(cache_dir) / "tatoeba" / f"{zip_path.stem}-{info.CRC:08x}" / MEMBER
        if target.is_file() and target.stat().st_size == info.file_size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{MEMBER}.{os.getpid()}.tmp")
        try:
            with archive.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, EOFError, zlib.error) as err:  # CRC-32, cut short
            tmp.unlink(missing_ok=True)
            raise CorpusError(
                f"{zip_path} is damaged: its member {MEMBER} does not decompress ({err}); "
                f"download fra-eng.zip again from manythings.org/anki") from err
        os.replace(tmp, target)
    log.info("extracted %s from %s to %s", MEMBER, zip_path, target)
    return target


def _parse_lines(batch: dict, indices: list[int], path: str) -> dict:
    """``text`` lines -> ``en``/``fr``/``attribution``/``line`` columns, empty pairs left out."""
    out = {"en": [], "fr": [], "attribution": [], "line": []}
    for index, text in zip(indices, batch["text"]):
        fields = text.split("\t")
        if len(fields) == 1 and text.strip():
            raise CorpusError(
                f"{path} line {index + 1} has no tab: expected English<TAB>French<TAB>"
                f"attribution, got {text[:60]!r}; is this a manythings.org Tatoeba file?")
        if len(fields) > 3:
            raise CorpusError(
                f"{path} line {index + 1} has {len(fields)} tab-separated fields, expected 3 "
                f"(English<TAB>French<TAB>attribution)")
        en, fr, attribution = (fields + ["", ""])[:3]
        if en.strip() and fr.strip():
            out["en"].append(en)
            out["fr"].append(fr)
            out["attribution"].append(attribution)
            out["line"].append(index + 1)
    return out


def read_tatoeba(zip_path: str | os.PathLike, cache_dir: str | None = None) -> datasets.Dataset:
    """All non-empty pairs of the zip's fra.txt, read and cached by ``datasets``.

    Args:
        zip_path: the manythings.org zip (``fra-eng.zip``).
        cache_dir: where fra.txt is extracted and ``datasets`` keeps its Arrow
            caches (default: the ``datasets`` cache).

    Returns:
        ``Dataset`` with columns ``en``, ``fr``, ``attribution`` (strings) and
        ``line`` (1-based line number in fra.txt), in file order. Lines that
        are blank or have an empty or whitespace-only side are left out; their
        count is logged.

    Raises:
        CorpusError: for a missing or malformed file (a line without a tab or
            with more than 3 fields, or not UTF-8, named by its number), or no
            pairs at all.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise CorpusError(f"Tatoeba zip {zip_path} does not exist; check data.source")
    text_path = extract_member(zip_path, cache_dir or datasets.config.HF_DATASETS_CACHE)
    lines = read_lines(text_path, cache_dir, name=f"{MEMBER} in {zip_path}",
                       fix=f"re-encode {MEMBER} as UTF-8 (e.g. `iconv -f latin1 -t utf-8`) and "
                           f"zip it again, or download {zip_path.name} again from "
                           f"manythings.org/anki")
    pairs = lines.map(_parse_lines, batched=True, with_indices=True, remove_columns=["text"],
                      fn_kwargs={"path": str(text_path)}, desc=f"parsing {MEMBER}")
    dropped = len(lines) - len(pairs)
    if dropped:
        log.warning("%s: dropped %d of %d lines that are blank or have an empty or "
                    "whitespace-only side", text_path, dropped, len(lines))
    if not len(pairs):
        raise CorpusError(f"{text_path} (from {zip_path}) holds no non-empty pairs")
    return pairs


def group_ids(sentences: list[str]) -> np.ndarray:
    """Group id of each sentence: equal after collapsing whitespace -> same id.

    Ids count distinct sentences in order of first occurrence, so they do not
    depend on Python's string hashing.

    Shapes:
        returns ``(N,)`` int64 for N sentences, values in ``[0, number of groups)``.
    """
    ids: dict[str, int] = {}
    return np.fromiter((ids.setdefault(" ".join(s.split()), len(ids)) for s in sentences),
                       dtype=np.int64, count=len(sentences))


def grouped_split(groups: np.ndarray, split: GroupedSplit) -> dict[str, np.ndarray]:
    """Row indices of ``train``/``valid``/``test`` such that no group is in two splits.

    Args:
        groups: ``(N,)`` group id of each row (:func:`group_ids`).
        split: target sizes and seed.

    Returns:
        ``{"train", "valid", "test"}`` -> sorted ``(n_split,)`` row indices;
        together they hold every row exactly once. ``test`` holds at least
        ``split.test_size`` rows and ``valid`` at least ``split.valid_size``,
        each fewer than (target + largest group).

    Raises:
        CorpusError: if a size is below 1, or valid + test leave no training pair.
    """
    groups = np.asarray(groups, dtype=np.int64)
    if split.valid_size < 1 or split.test_size < 1:
        raise CorpusError(
            f"data.valid_size={split.valid_size} and data.test_size={split.test_size}: "
            f"each split needs at least 1 pair; set both to a positive number of pairs")
    sizes = np.bincount(groups)
    order = np.random.default_rng(split.seed).permutation(len(sizes))
    cumulative = np.cumsum(sizes[order])  # pairs in the first k+1 shuffled groups
    # Shortest prefix of the shuffled groups with >= test_size pairs, then the next groups
    # up to >= valid_size more.
    test_end = int(np.searchsorted(cumulative, split.test_size)) + 1
    test_pairs = cumulative[min(test_end, len(sizes)) - 1]
    valid_end = int(np.searchsorted(cumulative, test_pairs + split.valid_size)) + 1
    if valid_end >= len(sizes):
        raise CorpusError(
            f"data.valid_size={split.valid_size} plus data.test_size={split.test_size} leave no "
            f"training pair of the {len(groups)} pairs ({len(sizes)} distinct English "
            f"sentences); lower them")
    split_of_group = np.zeros(len(sizes), dtype=np.int8)  # 0 train, 1 valid, 2 test
    split_of_group[order[test_end:valid_end]] = 1
    split_of_group[order[:test_end]] = 2
    split_of_row = split_of_group[groups]
    return {name: np.flatnonzero(split_of_row == code)
            for code, name in enumerate(("train", "valid", "test"))}


def load_tatoeba(zip_path: str | os.PathLike, src_lang: str, tgt_lang: str,
                 splits: dict[str, str] | list[str], cache_dir: str | None = None,
                 split: GroupedSplit | None = None) -> datasets.DatasetDict:
    """Read the zip and return the requested splits of a grouped split.

    Args:
        zip_path: the manythings.org zip (``fra-eng.zip``).
        src_lang, tgt_lang: ``"en"`` and ``"fr"`` in either order (the direction).
        splits: names among ``train``/``valid``/``test``, or a mapping
            ``{our_name: one_of_those}``; the result is keyed by ``our_name``.
        cache_dir: extraction folder and ``datasets`` Arrow caches.
        split: sizes and seed of the grouped split (default :class:`GroupedSplit()`).

    Returns:
        ``DatasetDict`` with columns ``src``, ``tgt``, ``attribution``, ``line``.

    Raises:
        CorpusError: for languages other than en/fr, an unknown split name, or
            a missing or malformed file.
    """
    if sorted((src_lang, tgt_lang)) != sorted(LANGUAGES):
        unknown = [lang for lang in dict.fromkeys((src_lang, tgt_lang)) if lang not in LANGUAGES]
        codes = "codes" if len(unknown) > 1 else "code"
        problem = (f"unknown language {codes} {', '.join(map(repr, unknown))}" if unknown
                   else "the two languages must differ")
        raise CorpusError(
            f"{zip_path} ({MEMBER}) holds English (en) and French (fr) pairs, but "
            f"src_lang={src_lang!r} and tgt_lang={tgt_lang!r}: {problem}; the valid codes are "
            f"{', '.join(LANGUAGES)}. Set data.src_lang and data.tgt_lang to en and fr "
            f"(either order)")
    if not isinstance(splits, dict):
        splits = {name: name for name in splits}
    unknown = sorted(set(splits.values()) - set(SPLITS))
    if unknown:
        raise CorpusError(
            f"{zip_path} has no split {', '.join(map(repr, unknown))}: a Tatoeba zip is split "
            f"into {', '.join(SPLITS)} by data.valid_size/test_size/split_seed; set "
            f"data.train_split/valid_split/test_split to these names")
    pairs = read_tatoeba(zip_path, cache_dir)
    english = pairs["en"][:]  # a list in one read (iterating the column row by row is slow)
    rows = grouped_split(group_ids(english), split or GroupedSplit())
    columns = {src_lang: "src", tgt_lang: "tgt"}
    out = {}
    for name, corpus_split in splits.items():
        out[name] = pairs.select(rows[corpus_split]).rename_columns(columns) \
                         .select_columns(["src", "tgt", "attribution", "line"])
    return datasets.DatasetDict(out)
