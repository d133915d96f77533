"""``TranslationCLI``: the ``LightningCLI`` of ``scripts/train.py`` (:mod:`commands.train`).

It links the tokenizer's vocabulary size into the model, resolves bf16 on CPUs
that would emulate it, derives checkpoint and log paths from the run directory,
and checks ``--ckpt_path`` before Lightning reads it.
"""

from __future__ import annotations

import os

from lightning.pytorch.cli import LightningCLI

from .run_dir import check_resume_checkpoint, check_run_dir_free, config_file_roots, \
    move_run_paths
from .runtime import resolve_cpu_precision

__all__ = ["TranslationCLI"]


class TranslationCLI(LightningCLI):
    """Links the tokenizer's vocabulary size into the model config."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size")

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters with torch.load before anything
        # else: check a damaged file first (``last`` is resolved and checked below).
        if self.config.get("subcommand"):
            config = self.config[self.config.subcommand]
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and os.path.isfile(ckpt_path):
                check_resume_checkpoint(config.get("trainer"), ckpt_path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        # bf16 recipes fall back to float32 on CPUs that would emulate bf16.
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is not None:
            trainer.precision = resolve_cpu_precision(trainer.get("precision"),
                                                      trainer.get("accelerator"))
            # One run directory: --trainer.default_root_dir moves checkpoints and logs too.
            move_run_paths(trainer, config_file_roots(config.get("config")))
            if self.subcommand == "fit":
                check_run_dir_free(trainer, config.get("ckpt_path"))
            check_resume_checkpoint(trainer, config.get("ckpt_path"))
