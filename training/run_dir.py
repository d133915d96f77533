"""One run directory: every checkpoint and log path derives from ``trainer.default_root_dir``.

``configs/base.yaml`` gives each ``ModelCheckpoint`` ``dirpath`` and logger
``save_dir`` relative to the run directory (``checkpoints``, ``.``); a recipe
sets only ``trainer.default_root_dir: runs/<recipe>``, and
:func:`derive_run_paths` puts every relative path under it (what fairseq's
single ``--save-dir`` and JoeyNMT's ``model_dir`` give). Absolute paths stay
as written. Configs that spell the paths out under their own
``default_root_dir`` (saved ``config.yaml`` files, configs of older versions)
still move with a new ``--trainer.default_root_dir`` (:func:`move_run_paths`).
A new run refuses a run
directory that already holds checkpoints, unless it resumes one of them
(``--ckpt_path``): a second experiment never silently overwrites the first
one's ``last.ckpt``.

Used by ``scripts/train.py`` (``TranslationCLI.before_instantiate_classes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

from data.files import checkpoint_damage
from inference.translator import CheckpointError
from model.config import ConfigError

__all__ = ["config_file_roots", "derive_run_paths", "move_run_paths", "check_resume_checkpoint",
           "check_run_dir_free"]


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


def _path_holders(trainer: Any, sections: Iterable[Any] = ()) -> list[tuple[Any, str]]:
    """``(mapping, key)`` for every callback ``dirpath`` (the trainer's callbacks and the
    ``ModelCheckpoint`` sections of :class:`training.cli.TranslationCLI`) and logger
    ``save_dir`` of a parsed config."""
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    holders = [(args, "dirpath") for args in map(_init_args, trainer.get("callbacks") or [])]
    holders += [(args, "save_dir") for args in map(_init_args, loggers)]
    holders += [(section, "dirpath") for section in sections]
    return [(args, key) for args, key in holders
            if args is not None and isinstance(args.get(key), (str, Path))]


def move_run_paths(trainer: Any, old_roots: Iterable[str],
                   sections: Iterable[Any] = ()) -> list[tuple[str, str]]:
    """Move every callback ``dirpath`` and logger ``save_dir`` under one of
    ``old_roots`` to the same place under ``trainer.default_root_dir`` (in place).

    Args:
        trainer: the ``trainer`` section of the parsed config (a jsonargparse
            Namespace or a dict).
        old_roots: the config files' ``default_root_dir`` values.
        sections: the config's ``ModelCheckpoint`` sections (their ``dirpath``).

    Returns:
        ``(old, new)`` for every path that moved.
    """
    new_root = trainer.get("default_root_dir")
    old_roots = [r for r in old_roots or [] if not new_root or Path(r) != Path(new_root)]
    if not old_roots or not new_root:
        return []
    moved = []
    for args, key in _path_holders(trainer, sections):
        value = str(args.get(key))
        if _under(value, str(new_root)):  # already there (also when new_root is inside old)
            continue
        root = next((r for r in old_roots if _under(value, r)), None)
        if root is not None:
            args[key] = _moved(value, root, str(new_root))
            moved.append((value, args[key]))
    return moved


def derive_run_paths(trainer: Any, sections: Iterable[Any] = ()) -> list[tuple[str, str]]:
    """Put every relative callback ``dirpath`` and logger ``save_dir`` that is not
    already under ``trainer.default_root_dir`` under it (in place; running it twice
    changes nothing). Without a ``default_root_dir`` (Lightning's default: the
    working directory) nothing changes.

    Returns:
        ``(old, new)`` for every path that changed.
    """
    root = trainer.get("default_root_dir")
    if not root:
        return []
    derived = []
    for args, key in _path_holders(trainer, sections):
        value = str(args.get(key))
        if not Path(value).is_absolute() and not _under(value, str(root)):
            args[key] = str(Path(root) / value)
            derived.append((value, args[key]))
    return derived


def check_run_dir_free(trainer: Any, ckpt_path: str | None, sections: Iterable[Any] = ()) -> None:
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
    for folder in _checkpoint_folders(trainer, sections):
        found = sorted(folder.glob("*.ckpt")) if folder.is_dir() else []
        if found:
            last = folder / "last.ckpt" if (folder / "last.ckpt").is_file() else found[0]
            raise ConfigError(
                f"trainer.default_root_dir={root}: {folder} already holds another run's "
                f"checkpoints ({last.name}, {len(found)} in all), which this run would overwrite; "
                f"resume it with --ckpt_path {last}, start a new run in another directory "
                f"(--trainer.default_root_dir runs/NEW), or delete {folder}")


def _checkpoint_folders(trainer: Any, sections: Iterable[Any] = ()) -> list[Path]:
    """``default_root_dir/checkpoints`` and every callback ``dirpath``, sorted."""
    folders = {Path(trainer.get("default_root_dir") or ".") / "checkpoints"}
    folders.update(Path(str(args.get(key))) for args, key in _path_holders(trainer, sections)
                   if key == "dirpath")
    return sorted(folders)


def check_resume_checkpoint(trainer: Any, ckpt_path: str | None,
                            sections: Iterable[Any] = ()) -> None:
    """Refuse to resume from a damaged checkpoint, before anything is built or written.

    ``ckpt_path`` is a file or ``"last"`` (resolved as Lightning does: the
    newest ``last*.ckpt`` in the checkpoint folders). A missing file, or
    another keyword, is left to Lightning.

    Raises:
        CheckpointError: naming the damaged file, what is wrong with it, and
            the newest intact full checkpoint of the run to resume from
            instead; when only weights-only checkpoints (epoch or step files
            kept for averaging) are left, that they can be averaged or
            evaluated but not resumed.
    """
    if not ckpt_path or str(ckpt_path) in ("best", "hpc", "registry"):
        return
    folders = _checkpoint_folders(trainer, sections)
    if str(ckpt_path) == "last":
        found = [p for f in folders if f.is_dir() for p in f.glob("last*.ckpt")]
        if not found:
            return
        path = max(found, key=lambda p: p.stat().st_mtime)
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            return
    damage = checkpoint_damage(path)
    if damage is None:
        return
    raise CheckpointError(f"--ckpt_path {ckpt_path}: checkpoint {path} is damaged: {damage}; "
                          + _resume_alternative(path, folders))


def _resume_alternative(damaged: Path, folders: list[Path]) -> str:
    """What to resume from instead: the newest intact full checkpoint of the run, if any."""
    import torch

    seen, full, weights_only = set(), [], []
    for folder in [damaged.parent, *folders]:
        for path in sorted(folder.rglob("*.ckpt")) if folder.is_dir() else []:
            if path.resolve() in seen or path.resolve() == damaged.resolve():
                continue
            seen.add(path.resolve())
            if checkpoint_damage(path) is not None:
                continue
            try:
                ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # noqa: BLE001 - unreadable: not a candidate
                continue
            if not isinstance(ckpt, dict):
                continue
            entry = (int(ckpt.get("global_step", -1)), path.stat().st_mtime, path)
            (full if "optimizer_states" in ckpt else weights_only).append(entry)
    if full:
        step, _, path = max(full)
        return (f"resume from the newest intact full checkpoint of the run instead: "
                f"--ckpt_path {path} (global step {step})")
    if weights_only:
        step, _, path = max(weights_only)
        return (f"no intact full checkpoint of the run is left to resume from; its "
                f"{len(weights_only)} weights-only checkpoint(s) (the newest {path}, global step "
                f"{step}) can be averaged (scripts/average_checkpoints.py) or evaluated, not "
                f"resumed: start a new run in another directory (--trainer.default_root_dir "
                f"runs/NEW)")
    return ("no other intact checkpoint of the run is left: start a new run in another "
            "directory (--trainer.default_root_dir runs/NEW), or delete the damaged run")
