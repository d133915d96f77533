"""``TranslationCLI``: the ``LightningCLI`` of ``scripts/train.py`` (:mod:`commands.train`).

It reads ``configs/base.yaml`` under every config (the trainer, checkpoints and
loggers a recipe need not repeat), links the tokenizer's vocabulary size into
the model, resolves bf16 on CPUs that would emulate it, derives every
checkpoint and log path from the run directory, and checks ``--ckpt_path``
before Lightning reads it.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from data.files import BASE_CONFIG

from .run_dir import check_resume_checkpoint, check_run_dir_free, config_file_roots, \
    derive_run_paths, move_run_paths
from .runtime import resolve_cpu_precision

__all__ = ["BASE_CONFIG", "CHECKPOINT_SECTIONS", "TranslationCLI", "resolve_config"]

#: ``ModelCheckpoint`` sections of the config, besides ``trainer.callbacks``: a recipe
#: tunes them key by key (a list entry cannot be overridden alone). ``checkpoint_interval``
#: rewrites ``last.ckpt`` every N updates; ``averaging_checkpoints`` keeps the weights
#: that ``scripts/average_checkpoints.py`` averages (``save_top_k: 0``: none).
CHECKPOINT_SECTIONS = ("checkpoint_interval", "averaging_checkpoints")


class TranslationCLI(LightningCLI):
    """``LightningCLI`` over :class:`training.module.TranslationModule` and
    :class:`data.datamodule.TranslationDataModule` with the project's config
    conventions (see the module docstring). Arguments as ``LightningCLI``'s;
    ``parser_kwargs`` gets ``default_config_files=[BASE_CONFIG]`` for every
    subcommand (for the one parser with ``run=False``) unless the caller sets its own.

    Raises:
        model.config.ConfigError: a run directory that holds another run's
            checkpoints (``fit`` without ``--ckpt_path``).
        inference.checkpoint.CheckpointError: a damaged ``--ckpt_path``.
    """

    def __init__(self, *args: Any, parser_kwargs: dict | None = None, run: bool = True,
                 **kwargs: Any):
        parser_kwargs = dict(parser_kwargs or {})
        base = {"default_config_files": [str(BASE_CONFIG)]}
        if run:  # the subcommands' parsers read the config
            for key in ("fit", "validate", "test", "predict"):
                parser_kwargs[key] = {**base, **parser_kwargs.get(key, {})}
        else:  # one parser, no subcommands
            parser_kwargs = {**base, **parser_kwargs}
        super().__init__(*args, parser_kwargs=parser_kwargs, run=run, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size")
        for section in CHECKPOINT_SECTIONS:
            parser.add_lightning_class_args(ModelCheckpoint, section)

    def _run_config(self) -> Any:
        """The parsed config of the running subcommand, its run paths derived (once)."""
        config = self.config.get(self.config.get("subcommand") or "", self.config) \
            if self.config.get("subcommand") else self.config
        trainer = config.get("trainer")
        if trainer is not None and not getattr(self, "_run_paths_done", False):
            self._run_paths_done = True
            sections = self._sections(config)
            # One run directory: paths of configs that spell them out move with it, and
            # relative ones (configs/base.yaml's) go under it.
            move_run_paths(trainer, config_file_roots(config.get("config")), sections)
            derive_run_paths(trainer, sections)
        return config

    @staticmethod
    def _sections(config: Any) -> list:
        return [config.get(name) for name in CHECKPOINT_SECTIONS if config.get(name) is not None]

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        """Leave out a checkpoint section that keeps nothing (``save_top_k: 0``) or that a
        ``trainer.callbacks`` entry already is (the same ``state_key``, which Lightning
        refuses twice): a saved ``config.yaml`` or a config of an older version lists
        its checkpoints there."""
        configured = config.get("callbacks") or []
        configured = configured if isinstance(configured, list) else [configured]
        keys = {c.state_key for c in configured if isinstance(c, ModelCheckpoint)}
        kept = [c for c in callbacks if not isinstance(c, ModelCheckpoint)
                or (c.save_top_k != 0 and c.state_key not in keys)]
        return super()._instantiate_trainer(config, kept)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters with torch.load before anything
        # else: check a damaged file first (``last`` is resolved and checked below).
        if self.config.get("subcommand"):
            config = self._run_config()
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and os.path.isfile(ckpt_path):
                check_resume_checkpoint(config.get("trainer"), ckpt_path, self._sections(config))
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self._run_config()
        trainer = config.get("trainer")
        if trainer is not None:
            # bf16 recipes fall back to float32 on CPUs that would emulate bf16.
            trainer.precision = resolve_cpu_precision(trainer.get("precision"),
                                                      trainer.get("accelerator"))
            sections = self._sections(config)
            if self.subcommand == "fit":
                check_run_dir_free(trainer, config.get("ckpt_path"), sections)
            check_resume_checkpoint(trainer, config.get("ckpt_path"), sections)


class _ParseOnly(TranslationCLI):
    """Parses and derives the run paths; checks and builds nothing."""

    derive_paths = True

    def before_instantiate_classes(self) -> None:
        if self.derive_paths:
            self._run_config()

    def instantiate_classes(self) -> None:
        pass

    def _set_seed(self) -> None:  # resolving a config seeds nothing
        pass


def resolve_config(*args: str, derive_paths: bool = True) -> dict:
    """What ``scripts/train.py fit ARGS`` would train with, as a plain dict: the base
    config under the ``--config`` files, command-line overrides, every default and the
    run paths derived (``trainer.precision`` as written, before the CPU fallback).
    Nothing is built, checked or written.

    Args:
        args: the arguments after ``fit`` (``"--config", "configs/multi30k_cpu.yaml"``, ...).
        derive_paths: False leaves checkpoint and log paths as the files give them
            (relative to the run directory), for a config written on top of them.

    Raises:
        SystemExit: as ``scripts/train.py``, for arguments it cannot parse.
    """
    import yaml

    from data.datamodule import TranslationDataModule

    from .module import TranslationModule

    import sys
    from unittest import mock

    parse_only = type("ParseOnly", (_ParseOnly,), {"derive_paths": derive_paths})
    # The caller's own command line is not this config's (LightningCLI warns on both).
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = parse_only(TranslationModule, TranslationDataModule, run=False, args=list(args))
    return yaml.safe_load(cli.parser.dump(cli.config, skip_check=True))
