"""Reading corpus files: one UTF-8 text file line by line, and the error that
names a bad corpus file. Shared by :mod:`data.corpus` (directories of
``{split}.{lang}[.gz]`` files) and :mod:`data.tatoeba` (the members of a zip).
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

if TYPE_CHECKING:  # ``datasets`` is imported where a file is read: translating needs none of it
    import datasets

__all__ = ["CHUNK_ROWS", "CorpusError", "column", "invalid_utf8_error", "iter_column",
           "open_text_input", "read_lines"]

CHUNK_ROWS = 100_000
"""Rows read (or encoded) at a time by the data stages: bounds their memory per chunk."""


class CorpusError(ValueError):
    """A corpus that cannot be read as asked; the message says what to fix."""


def _is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic number (as ``datasets`` decides too)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _first_invalid_utf8(path: Path) -> tuple[int, int, bytes, UnicodeDecodeError] | None:
    """Where ``path`` (plain or gzip) first stops being UTF-8, or None if it is UTF-8.

    Returns:
        ``(line, offset, raw_line, error)``: the 1-based line number (lines end
        at ``\\n``, as ``sed -n 'Np'`` counts them), the 0-based byte offset of
        the first bad byte in the (decompressed) file, the raw bytes of that
        line, and the decoder's error (``error.start`` is the offset within it).
    """
    offset = 0
    with (gzip.open if _is_gzip(path) else open)(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                return number, offset + err.start, raw, err
            offset += len(raw)
    return None


def invalid_utf8_error(path: str | os.PathLike, name: str | None = None,
                       fix: str | None = None) -> CorpusError | None:
    """The :class:`CorpusError` for the first non-UTF-8 line of ``path``; None if it is UTF-8.

    Scans the file once (decompressing ``.gz``), so call it only after a
    decode has failed.

    Args:
        path: the file to scan (plain text or gzip).
        name: how the message names the file (default: ``path``).
        fix: what the message says to do (default: re-encode ``path`` with
            ``iconv``, through ``zcat``/``gzip`` for a gzip file).

    Returns:
        The error, naming the file, the 1-based number of the first bad line
        (lines end at ``\\n``, as ``sed -n 'Np'`` counts them), the bad byte,
        its 0-based offset in the (decompressed) file, and the fix; ``None``
        if the whole file decodes as UTF-8.

    Raises:
        OSError: if the file cannot be read (``gzip.BadGzipFile`` for a
            corrupt gzip file).
    """
    path = Path(path)
    found = _first_invalid_utf8(path)
    if found is None:
        return None
    number, offset, raw, err = found
    bad = " ".join(f"0x{b:02x}" for b in raw[err.start:err.end])
    shown = raw.rstrip(b"\r\n")[:200].decode("latin-1")
    gzipped = _is_gzip(path)
    if fix is None:
        if gzipped:
            command = (f"zcat {path} | iconv -f latin1 -t utf-8 | gzip > {path}.utf8 "
                       f"&& mv {path}.utf8 {path}")
        else:
            command = f"iconv -f latin1 -t utf-8 {path} > {path}.utf8 && mv {path}.utf8 {path}"
        fix = (f"re-encode the file as UTF-8, e.g. for Latin-1 (ISO-8859-1) text `{command}` "
               f"(-f cp1252 for Windows text)")
    return CorpusError(
        f"{name or path} line {number} is not valid UTF-8: byte {bad} at byte offset {offset} "
        f"of the {'decompressed ' if gzipped else ''}file ({err.reason}); read as Latin-1 the "
        f"line is {shown!r}. Corpus files must be UTF-8: {fix}")


def read_lines(path: str | os.PathLike, cache_dir: str | None = None,
               name: str | None = None, fix: str | None = None) -> datasets.Dataset:
    """One ``datasets`` text dataset (column ``text``) of a UTF-8 file, line by line.

    Args:
        path: a plain or gzip text file.
        cache_dir: where ``datasets`` keeps its Arrow caches.
        name, fix: how an encoding error names the file and what it says to
            do (see :func:`invalid_utf8_error`).

    Raises:
        CorpusError: if the file is not UTF-8; the message names the file, the
            1-based number of the first bad line, the byte offset and the fix.
            The file is scanned for it only after ``datasets`` failed to
            decode it, so reading a good file costs nothing extra.
    """
    try:
        empty = _is_empty(path)
    except (EOFError, OSError, zlib.error) as err:  # a gzip header that does not decompress
        raise CorpusError(_damaged_gzip_message(path, name, err)) from err
    if empty:
        raise CorpusError(f"{name or path} is empty (no lines); a corpus file holds one "
                          f"sentence per line: download or copy it again, or point the config "
                          f"at another corpus")
    import datasets
    from datasets.exceptions import DatasetGenerationError

    try:
        return datasets.load_dataset("text", data_files={"lines": str(path)}, split="lines",
                                     cache_dir=cache_dir, keep_linebreaks=False)
    except (DatasetGenerationError, UnicodeDecodeError, EOFError, OSError, zlib.error) as err:
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, UnicodeDecodeError):
            if isinstance(cause, (EOFError, gzip.BadGzipFile, zlib.error)):
                raise CorpusError(_damaged_gzip_message(path, name, cause)) from err
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        error = invalid_utf8_error(path, name, fix)
        if error is None:  # datasets failed on something the scan cannot see: say what we know
            error = CorpusError(f"{name or path} could not be decoded as UTF-8 ({cause}); "
                                f"corpus files must be UTF-8")
        raise error from err


def _damaged_gzip_message(path: str | os.PathLike, name: str | None, err: BaseException,
                          fix: str | None = None) -> str:
    """One line for a gzip file that does not decompress: what is wrong and the fix."""
    if isinstance(err, EOFError):
        what = "a gzip file cut short (it ends before gzip's end-of-stream marker)"
    elif "CRC" in str(err):
        what = "bytes changed inside (gzip's CRC-32 of the text does not match)"
    else:
        what = f"bytes changed inside or not gzip data ({err})"
    fix = fix or ("download or copy the file again (Multi30k: data/task1/raw/ of the "
                  "multi30k/dataset repository)")
    return f"{name or path} is damaged: {what}; {fix} (`gzip -t {path}` checks a copy)"


def _is_empty(path: str | os.PathLike) -> bool:
    """Whether a plain or gzip file holds no bytes of text."""
    if os.path.getsize(path) == 0:
        return True
    if str(path).endswith(".gz"):
        with gzip.open(path, "rb") as f:
            return f.read(1) == b""
    return False


def column(ds: datasets.Dataset, name: str) -> list:
    """One column of ``ds`` as a Python list, read as one Arrow slice.

    ``ds[name]`` is a lazy ``Column`` in ``datasets`` 4 and later whose
    ``list()`` reads one row at a time (a table slice per row, through the
    indices mapping a filter leaves); this reads ``ds[:]`` of the one column
    instead: linear in the rows, correct under an indices mapping, and the
    same on every ``datasets`` version from 2.19. For a split too large to
    hold as Python strings, use :func:`iter_column`.

    Raises:
        KeyError: if ``ds`` has no column ``name``.
    """
    return ds.select_columns([name])[:][name] if len(ds) else []


def iter_column(ds: datasets.Dataset, name: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[list]:
    """One column of ``ds`` as consecutive lists of at most ``chunk_rows`` values.

    Each chunk is one Arrow slice (``ds[start:stop]``), so memory is bounded by
    a chunk and the time is linear in the rows; an indices mapping (after
    ``filter`` or ``select``) is respected.
    """
    one = ds.select_columns([name])
    for start in range(0, len(one), chunk_rows):
        yield one[start: start + chunk_rows][name]


def open_text_input(path: str | os.PathLike) -> BinaryIO:
    """A text file's bytes for reading, decompressed if it is gzip.

    A gzip file is decompressed once in full before it is returned, so a
    damaged one is refused before anything is translated or written.

    Raises:
        CorpusError: for a gzip file that is cut short or whose bytes changed.
        OSError: if the file cannot be opened.
    """
    if not _is_gzip(Path(path)):
        return open(path, "rb")
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as err:
        raise CorpusError(_damaged_gzip_message(
            path, None, err, "write or copy the input file again")) from err
    return gzip.open(path, "rb")
