"""Build a config's tokenizer and token cache once, before training (``scripts/prepare_data.py``).

The counterpart of ``fairseq-preprocess``: it reads only the ``data:`` section
of a training config (what ``scripts/train.py`` would give
:class:`data.datamodule.TranslationDataModule`), with ``--data.KEY VALUE``
overrides, and runs :meth:`TranslationDataModule.prepare_data`. Training with
the same data settings then finds the cache and only reads it; a multi-node
run refuses to start without it, so the nodes never write the same files.
No trainer, model or GPU is involved.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser

from .cache import read_manifest, verify_checksums
from .corpus import CorpusError
from .datamodule import TranslationDataModule
from .files import BASE_CONFIG, yaml_damage

__all__ = ["data_parser", "datamodule_from_config", "format_summary", "prepare"]


def data_parser(prog: str) -> ArgumentParser:
    """The ``--data.*`` options of :class:`TranslationDataModule`, as in ``scripts/train.py``.

    Errors raise ``argparse.ArgumentError`` instead of exiting, so the caller
    prints them as one line.
    """
    parser = ArgumentParser(prog=prog, exit_on_error=False)
    parser.add_class_arguments(TranslationDataModule, "data")
    return parser


def datamodule_from_config(config: str | os.PathLike, overrides: list[str] | None = None,
                           prog: str = "prepare_data.py") -> TranslationDataModule:
    """The data module of a training config's ``data:`` section, with ``--data.*`` overrides.

    Args:
        config: a YAML training config (``trainer:``/``model:`` are ignored);
            ``data:`` may be the plain keys or a ``class_path``/``init_args`` pair,
            read over ``configs/base.yaml``'s as ``scripts/train.py`` reads it.
        overrides: e.g. ``["--data.vocab_size", "400"]``.

    Raises:
        CorpusError: if the file is missing, not YAML, or its ``data:`` is not a
            mapping, or a ``data.*`` value is refused (naming the key).
        argparse.ArgumentError: for an unknown ``data.*`` key or a value of the wrong type.
    """
    path = Path(config)
    if not path.is_file():
        raise CorpusError(f"--config {config}: no such file; pass a training config, e.g. "
                          f"configs/multi30k_cpu.yaml")
    damage = yaml_damage(path)
    if damage is not None:
        raise CorpusError(f"--config {config} is damaged: {damage}; restore it (git checkout "
                          f"{config}, for a shipped config) or fix it")
    data = {}
    for source in (BASE_CONFIG, path):  # the base's data keys first, as train.py reads them
        loaded = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        section = (loaded.get("data") or {}) if isinstance(loaded, dict) else None
        if isinstance(section, dict) and "init_args" in section:
            section = section["init_args"]
        if not isinstance(section, dict):
            raise CorpusError(f"--config {source}: 'data:' is not a mapping of data.* keys; "
                              f"pass a training config such as configs/multi30k_cpu.yaml")
        data.update(section)
    parser = data_parser(prog)
    args = parser.parse_args(["--data", yaml.safe_dump(data), *(overrides or [])])
    return TranslationDataModule(**args.data.as_dict())


def prepare(dm: TranslationDataModule, verify: bool = False) -> dict:
    """Build ``dm``'s cache unless it is built (a damaged one is rebuilt); return its manifest.

    Args:
        dm: the data module.
        verify: also re-read every cached array and compare its SHA-256 with
            the one written with it (a full pass over the ids).

    Raises:
        CorpusError, ValueError: as :meth:`TranslationDataModule.prepare_data`.
        data.cache.CacheDamaged: if ``verify`` finds changed bytes.
    """
    dm.prepare_data()
    manifest = read_manifest(dm.cache_path)
    if verify:
        verify_checksums(dm.cache_path, manifest)
    return manifest


def format_summary(dm: TranslationDataModule, manifest: dict) -> str:
    """What the cache holds: its folder, pairs and tokens per split, and the build's stages."""
    lines = [f"token cache: {dm.cache_path}"]
    for name, split in manifest["splits"].items():
        lines.append(f"  {name} ({split['corpus_split']}): {split['pairs']:,} pairs, "
                     f"{split['src']['tokens']:,} source and {split['tgt']['tokens']:,} target "
                     f"tokens (EOS included on the source side)")
    stages = manifest.get("stages", {})
    if stages:
        lines.append("  built in " + ", ".join(
            f"{k} {v['seconds']:.1f} s" for k, v in stages.items())
            + f"; peak RSS {max(v['peak_rss_mb'] for v in stages.values()):.0f} MiB")
    lines.append("training with the same data.* settings reads this cache and does not "
                 "tokenize again")
    return "\n".join(lines)
