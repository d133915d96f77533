"""The token cache: every split's ids as flat ``int32`` arrays plus offsets, memory-mapped.

A split of ``N`` pairs is four ``.npy`` files in the cache folder::

    {split}.src.npy          (n_src_tokens,) int32   source ids, each sentence ending with EOS
    {split}.src.offsets.npy  (N + 1,)        int64   sentence i is src[offsets[i]:offsets[i+1]]
    {split}.tgt.npy          (n_tgt_tokens,) int32   target ids (no BOS/EOS)
    {split}.tgt.offsets.npy  (N + 1,)        int64

``.npy`` files (unlike ``np.savez`` archives) can be opened with
``np.load(mmap_mode="r")``: a split is then indexed in place
(:class:`PackedSequences`), nothing is copied per sentence, and the data-parallel
processes of one machine share the same pages of the page cache.

The arrays are written chunk by chunk (:class:`PackedWriter`), so peak memory is
bounded by one chunk of ids, not by the corpus. ``manifest.json``, written last
and atomically, records what the folder holds: per file its array length, byte
size and SHA-256 of the array data. :func:`load_packed` checks lengths, sizes
and offsets on every load (cheap: no pass over the ids); :func:`verify_checksums`
re-reads every byte when asked to.

Source: the same layout as fairseq's ``IndexedDataset``/``MMapIndexedDataset``
(a data file plus an index of sizes and pointers), in plain ``.npy`` files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

__all__ = ["CACHE_VERSION", "CacheDamaged", "PackedSequences", "PackedWriter", "load_packed",
           "pack", "read_manifest", "verify_checksums", "write_manifest"]

CACHE_VERSION = 2
"""Layout version of the token cache (1: one ``np.savez`` archive per split)."""

MANIFEST = "manifest.json"

_COPY_BYTES = 1 << 24  # 16 MiB blocks when the raw ids are turned into a .npy file


class CacheDamaged(ValueError):
    """A token-cache folder that does not hold what its manifest says (it is rebuilt)."""


def pack(seqs: Sequence[Sequence[int]], append: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id lists -> flat ``int32`` ids and their ``(N,)`` lengths.

    Args:
        seqs: N id sequences (e.g. what ``SentencePieceProcessor.encode`` returns).
        append: an id put at the end of every sequence (EOS for sources), or None.

    Returns:
        ``(flat, lengths)``: ``(sum of lengths,)`` int32 and ``(N,)`` int64
        (``append`` included in the lengths).
    """
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32, count=total)
    if append is None:
        return ids, lengths
    lengths += 1
    flat = np.full(total + len(seqs), append, dtype=np.int32)
    keep = np.ones(len(flat), dtype=bool)
    keep[np.cumsum(lengths) - 1] = False  # the last position of every sequence holds `append`
    flat[keep] = ids
    return flat, lengths


class PackedWriter:
    """Writes one packed array (``{prefix}.npy`` + ``{prefix}.offsets.npy``) chunk by chunk.

    The ids go to a temporary raw file as they come; :meth:`close` turns it
    into the ``.npy`` files (the header needs the final length) and returns
    their manifest entry. Memory: one chunk of ids plus the ``(N + 1,)`` offsets.

    Args:
        prefix: path without extension, e.g. ``cache/train.src``.

    Raises:
        OSError: if the folder cannot be written.
    """

    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        self._raw_path = self.prefix.with_name(self.prefix.name + ".raw.tmp")
        self._raw = open(self._raw_path, "wb")
        self._lengths: list[np.ndarray] = []
        self._sha = hashlib.sha256()
        self._count = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> None:
        """Append sequences given as flat ``int32`` ids and their ``(n,)`` lengths."""
        data = np.ascontiguousarray(flat, dtype=np.int32).tobytes()
        self._raw.write(data)
        self._sha.update(data)
        self._count += len(flat)
        self._lengths.append(np.asarray(lengths, dtype=np.int64))

    def close(self) -> dict:
        """Write ``{prefix}.npy`` and ``{prefix}.offsets.npy``; return their manifest entry."""
        self._raw.close()
        ids_path = self.prefix.with_name(self.prefix.name + ".npy")
        offsets_path = self.prefix.with_name(self.prefix.name + ".offsets.npy")
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        assert offsets[-1] == self._count, (offsets[-1], self._count)
        tmp = ids_path.with_name(ids_path.name + ".tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int32, shape=(self._count,))
        step = _COPY_BYTES // 4
        with open(self._raw_path, "rb") as raw:
            for start in range(0, self._count, step):
                block = np.frombuffer(raw.read(step * 4), dtype=np.int32)
                out[start: start + len(block)] = block
        out.flush()
        del out
        os.replace(tmp, ids_path)
        os.remove(self._raw_path)
        tmp = offsets_path.with_name(offsets_path.name + ".tmp.npy")
        np.save(tmp, offsets)
        os.replace(tmp, offsets_path)
        return {
            "pairs": len(lengths),
            "tokens": self._count,
            "files": {
                ids_path.name: {"length": self._count, "bytes": ids_path.stat().st_size,
                                "sha256": self._sha.hexdigest()},
                offsets_path.name: {"length": len(offsets), "bytes": offsets_path.stat().st_size,
                                    "sha256": hashlib.sha256(offsets.tobytes()).hexdigest()},
            },
        }

    def abort(self) -> None:
        """Close and remove the temporary file (after an error)."""
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


class PackedSequences(Sequence):
    """N variable-length id sequences stored as one flat array and ``(N + 1,)`` offsets.

    Item ``i`` is the view ``flat[offsets[i]:offsets[i+1]]`` (nothing copied;
    read-only when ``flat`` is memory-mapped). With ``index`` the sequence is
    the subset ``index[0], index[1], ...`` of the stored ones (training pairs
    kept under ``max_len``), again without copying ids.

    Args:
        flat: ``(n_tokens,)`` ids.
        offsets: ``(N + 1,)`` int64, ``offsets[0] == 0``, non-decreasing,
            ``offsets[-1] == len(flat)``.
        index: optional ``(M,)`` positions of the stored sequences to expose.

    Raises:
        ValueError: if the offsets do not fit ``flat`` (see :func:`load_packed`).
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, index: np.ndarray | None = None):
        _check_offsets(flat, offsets, "offsets")
        self.flat, self.offsets, self.index = flat, offsets, index

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.index is None else len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        j = int(i) if self.index is None else int(self.index[i])
        return self.flat[self.offsets[j]: self.offsets[j + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def lengths(self) -> np.ndarray:
        """``(N,)`` int64 length of every sequence (one vectorized pass over the offsets)."""
        lengths = np.diff(self.offsets)
        return lengths if self.index is None else lengths[self.index]

    def __getstate__(self) -> dict:
        """Memory-mapped arrays travel as their file names (re-opened, not copied)
        when a spawned DataLoader worker or DDP process unpickles this object."""
        state = dict(self.__dict__)
        for key in ("flat", "offsets"):
            array = state[key]
            if isinstance(array, np.memmap) and array.filename is not None:
                state[key] = ("npy-mmap", str(array.filename))
        return state

    def __setstate__(self, state: dict) -> None:
        for key in ("flat", "offsets"):
            if isinstance(state[key], tuple):
                state[key] = np.load(state[key][1], mmap_mode="r")
        self.__dict__.update(state)

    def subset(self, index: np.ndarray) -> "PackedSequences":
        """The sequences at ``index`` (positions in this object), sharing the ids."""
        index = np.asarray(index, dtype=np.int64)
        return PackedSequences(self.flat, self.offsets,
                               index if self.index is None else self.index[index])


def _check_offsets(flat: np.ndarray, offsets: np.ndarray, name: str) -> None:
    """Cheap structural check of a packed array (vectorized over the offsets only)."""
    if offsets.ndim != 1 or len(offsets) < 1:
        raise ValueError(f"{name}: offsets must be a non-empty 1-D array, got shape "
                         f"{offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != len(flat):
        raise ValueError(f"{name}: offsets run from {int(offsets[0])} to {int(offsets[-1])}, "
                         f"expected 0 to {len(flat)} (the number of ids)")
    if len(offsets) > 1 and bool((np.diff(offsets) < 0).any()):
        raise ValueError(f"{name}: offsets decrease somewhere (a damaged index)")


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (a temporary file renamed over it)."""
    path = Path(folder) / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, path)


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The manifest of a cache folder; None if it has none (not built, or built by version 1).

    Raises:
        CacheDamaged: if the manifest exists but is not valid JSON of this version.
    """
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CacheDamaged(f"{path} is not valid JSON ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("version") != CACHE_VERSION:
        raise CacheDamaged(f"{path} is not a version-{CACHE_VERSION} token-cache manifest")
    return manifest


def load_packed(folder: str | os.PathLike, entry: dict) -> PackedSequences:
    """Open the ids and offsets files of one manifest entry (one side of one split).

    Checked on every load, without reading the ids: both files exist, their
    byte sizes and array lengths are those of the manifest, and the offsets
    run from 0 to the number of ids without decreasing (one vectorized pass
    over the offsets).

    Args:
        folder: the cache folder.
        entry: ``manifest["splits"][split][side]``, as :meth:`PackedWriter.close` made it.
            Both arrays are opened memory-mapped.

    Raises:
        CacheDamaged: naming the file and what disagrees.
    """
    folder = Path(folder)
    arrays = []
    for name, expected in entry["files"].items():
        path = folder / name
        if not path.exists():
            raise CacheDamaged(f"{path} is missing")
        if path.stat().st_size != expected["bytes"]:
            raise CacheDamaged(f"{path} has {path.stat().st_size} bytes, the manifest says "
                               f"{expected['bytes']} (truncated or rewritten)")
        try:
            array = np.load(path, mmap_mode="r")
        except (ValueError, OSError, EOFError) as err:
            raise CacheDamaged(f"{path} is not a readable .npy file ({err})") from err
        if array.ndim != 1 or len(array) != expected["length"]:
            raise CacheDamaged(f"{path} holds shape {array.shape}, the manifest says "
                               f"({expected['length']},)")
        arrays.append(array)
    flat, offsets = arrays  # PackedWriter.close lists the ids first, then the offsets
    try:
        return PackedSequences(flat, offsets)
    except ValueError as err:
        raise CacheDamaged(f"{folder / list(entry['files'])[1]}: {err}") from err


def verify_checksums(folder: str | os.PathLike, manifest: dict) -> None:
    """Re-read every array of the cache and compare its SHA-256 with the manifest's.

    A full pass over the ids (seconds per GB): for ``scripts/prepare_data.py
    --verify``, not for every load.

    Raises:
        CacheDamaged: naming the first file whose data differs.
    """
    folder = Path(folder)
    for split in manifest["splits"].values():
        for side in ("src", "tgt"):
            for name, expected in split[side]["files"].items():
                array = np.load(folder / name, mmap_mode="r")
                sha = hashlib.sha256()
                step = _COPY_BYTES // array.itemsize
                for start in range(0, len(array), step):
                    sha.update(np.ascontiguousarray(array[start: start + step]).tobytes())
                if sha.hexdigest() != expected["sha256"]:
                    raise CacheDamaged(f"{folder / name}: its data does not match the checksum "
                                       f"written with it (bytes changed on disk)")
