"""One run directory: ``trainer.default_root_dir`` moves checkpoints and logs together.

The shipped configs spell each path out (``runs/multi30k_cpu/checkpoints`` in
every ``ModelCheckpoint``, ``runs/multi30k_cpu`` as the logger's
``save_dir``), so that a YAML file reads on its own. When the command line
(or a second config file) sets another ``trainer.default_root_dir``, every
callback ``dirpath`` and logger ``save_dir`` under a config file's own
``default_root_dir`` moves under the new one (what fairseq's single
``--save-dir`` and JoeyNMT's ``model_dir`` give). A new run refuses a run
directory that already holds checkpoints, unless it resumes one of them
(``--ckpt_path``): a second experiment never silently overwrites the first
one's ``last.ckpt``.

Used by ``scripts/train.py`` (``TranslationCLI.before_instantiate_classes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from model.config import ConfigError

__all__ = ["config_file_roots", "move_run_paths", "check_run_dir_free"]


def config_file_roots(config_files: Iterable[Any]) -> list[str]:
    """Every ``trainer.default_root_dir`` the config files set, in order (a
    second file, e.g. a test's or the comparison's override, may set another)."""
    roots = []
    for path in config_files or []:
        absolute = getattr(path, "absolute", None)  # jsonargparse's Path: a str property
        path = absolute if isinstance(absolute, str) else str(path)
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        trainer = values.get("trainer") if isinstance(values, dict) else None
        if isinstance(trainer, dict) and trainer.get("default_root_dir"):
            roots.append(str(trainer["default_root_dir"]))
    return roots


def _under(path: str, root: str) -> bool:
    p, r = Path(path), Path(root)
    return p == r or r in p.parents


def _moved(path: str, old: str, new: str) -> str:
    return str(Path(new) / Path(path).relative_to(old))


def _init_args(entry: Any) -> Any:
    return entry.get("init_args") if hasattr(entry, "get") else None


def move_run_paths(trainer: Any, old_roots: Iterable[str]) -> list[tuple[str, str]]:
    """Move every callback ``dirpath`` and logger ``save_dir`` under one of
    ``old_roots`` to the same place under ``trainer.default_root_dir`` (in place).

    Args:
        trainer: the ``trainer`` section of the parsed config (a jsonargparse
            Namespace or a dict).
        old_roots: the config files' ``default_root_dir`` values.

    Returns:
        ``(old, new)`` for every path that moved.
    """
    new_root = trainer.get("default_root_dir")
    old_roots = [r for r in old_roots or [] if not new_root or Path(r) != Path(new_root)]
    if not old_roots or not new_root:
        return []
    moved = []
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    for entries, key in ((trainer.get("callbacks") or [], "dirpath"), (loggers, "save_dir")):
        for entry in entries:
            args = _init_args(entry)
            value = args.get(key) if args is not None else None
            root = next((r for r in old_roots if isinstance(value, (str, Path))
                         and _under(str(value), r)), None)
            if root is not None:
                args[key] = _moved(str(value), root, str(new_root))
                moved.append((str(value), args[key]))
    return moved


def check_run_dir_free(trainer: Any, ckpt_path: str | None) -> None:
    """Refuse to start a new run where another run's checkpoints are.

    Raises:
        model.config.ConfigError: if a callback's ``dirpath`` (or
            ``default_root_dir/checkpoints``) already holds ``*.ckpt`` files and
            ``ckpt_path`` is None; the message names the directory, a file and
            the three ways out.
    """
    if ckpt_path:
        return
    root = trainer.get("default_root_dir") or "."
    folders = {Path(root) / "checkpoints"}
    for entry in trainer.get("callbacks") or []:
        args = _init_args(entry)
        if args is not None and args.get("dirpath"):
            folders.add(Path(str(args.get("dirpath"))))
    for folder in sorted(folders):
        found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
        if found:
            last = folder / "last.ckpt" if (folder / "last.ckpt").is_file() else found[0]
            raise ConfigError(
                f"trainer.default_root_dir={root}: {folder} already holds another run's "
                f"checkpoints ({last.name}, {len(found)} in all), which this run would overwrite; "
                f"resume it with --ckpt_path {last}, start a new run in another directory "
                f"(--trainer.default_root_dir runs/NEW), or delete {folder}")
