"""What is wrong with a damaged file, in words: checkpoints (zip containers), JSON and YAML files.

Every command that opens one of these files asks here first (or when the
library that reads it fails), so a damaged file gives one line naming it,
what is wrong and what to do, never a traceback from ``torch.load``'s zip
reader or a JSON parser. "Damaged" means what the format can detect: an
empty or truncated file, a CRC-32 that does not match (zip members, which is
what a PyTorch checkpoint is), a file of another format.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import yaml

__all__ = ["BASE_CONFIG", "checkpoint_damage", "config_arguments", "file_kind", "json_damage",
           "read_json", "yaml_damage"]

#: The config read under every training config (``scripts/train.py``, ``prepare_data.py``):
#: the trainer, checkpoints, loggers and shared data keys a recipe need not repeat.
BASE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "base.yaml"

_MAGIC = ((b"\x1f\x8b", "a gzip file"), (b"PK\x03\x04", "a zip archive"),
          (b"\x93NUMPY", "a NumPy .npy file"), (b"\x89PNG", "a PNG image"),
          (b"%PDF", "a PDF file"), (b"\x80\x02", "a pickle"), (b"{", "a JSON file"))


def file_kind(path: str | os.PathLike) -> str:
    """A guess of what a file is from its first bytes: ``"an empty file"``,
    ``"a gzip file"``, ``"a text file"``, ``"binary data"`` ..."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the 512th byte
            return "binary data"
    return "a text file"


def checkpoint_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with a PyTorch checkpoint file, or None if its container is intact.

    A checkpoint written by ``torch.save`` is a zip archive whose members
    carry CRC-32 checksums; ``torch.load`` does not verify them, so a file
    with changed bytes would load silently with wrong weights. This reads the
    whole file once (``ZipFile.testzip``: about a second per GB).

    Returns:
        ``"empty (0 bytes)"``, ``"cut short: …"``, ``"bytes changed inside: the
        CRC-32 of member … does not match"``, ``"not a checkpoint but a text
        file"`` …, or None.

    Raises:
        OSError: if the file cannot be read at all (permissions).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes)"
    if not zipfile.is_zipfile(path):
        kind = file_kind(path)
        if kind == "a zip archive":  # a zip header but no central directory: cut short
            return (f"cut short ({size} bytes, the zip archive a PyTorch checkpoint is has no "
                    f"end: the copy or the save was interrupted)")
        return f"not a PyTorch checkpoint but {kind} ({size} bytes)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError) as err:
        return f"cut short or overwritten inside ({err})"
    if bad is not None:
        return (f"bytes changed inside: the CRC-32 of its member {bad!r} does not match the "
                f"checksum written with it")
    return None


def json_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with a JSON file (empty, cut short, not JSON), or None."""
    try:
        json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return f"not JSON but {file_kind(path)}"
    except ValueError as err:
        if Path(path).stat().st_size == 0:
            return "empty (0 bytes)"
        return f"not valid JSON, cut short or overwritten ({err})"
    return None


def read_json(path: str | os.PathLike, error: type[Exception], fix: str):
    """``json.loads`` of a file; a damaged one raises ``error`` naming the file and ``fix``."""
    damage = json_damage(path)
    if damage is not None:
        raise error(f"{path} is damaged: {damage}; {fix}")
    return json.loads(Path(path).read_text(encoding="utf-8"))


def yaml_damage(path: str | os.PathLike) -> str | None:
    """What is wrong with a YAML config file (not text, does not parse, not a mapping), or None."""
    path = Path(path)
    if not path.is_file():
        return None  # a missing file is reported by whoever reads it, with its own fix
    try:
        loaded = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return f"not a YAML text file but {file_kind(path)}"
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        return f"not valid YAML{line} ({problem}): cut short or overwritten"
    if loaded is None:
        return "empty (no keys)"
    if not isinstance(loaded, dict):
        return f"not a config: its YAML is a {type(loaded).__name__}, not a mapping of keys"
    return None


def config_arguments(argv: list[str], option: str = "--config") -> list[str]:
    """The values of ``--config X`` and ``--config=X`` in a command line, in order."""
    found = []
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            found.append(argv[i + 1])
        elif arg.startswith(option + "="):
            found.append(arg[len(option) + 1:])
    return found
