"""Train a translation model: ``python scripts/train.py fit --config configs/multi30k_cpu.yaml``.

A thin ``LightningCLI`` over :class:`training.module.TranslationModule` and
:class:`data.datamodule.TranslationDataModule`; every hyperparameter lives in
the YAML file (``--print_config`` shows them all, ``--help`` documents them).
"""

from __future__ import annotations

import os
import sys


from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI

from data.corpus import CorpusError
from data.datamodule import TranslationDataModule
from data.files import config_arguments, yaml_damage
from inference.translator import CheckpointError
from model.config import ConfigError
from training.module import TranslationModule
from training.run_dir import (check_resume_checkpoint, check_run_dir_free,
                              config_file_roots, move_run_paths)
from training.runtime import resolve_cpu_precision, tune_cpu_allocator


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


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI (``args`` for tests; ``sys.argv`` otherwise)."""
    tune_cpu_allocator()
    for path in config_arguments(sys.argv[1:] if args is None else list(args)):
        damage = yaml_damage(path)
        if damage is not None:  # jsonargparse would print its usage and a parser trace
            raise ConfigError(f"--config {path} is damaged: {damage}; restore it (git checkout "
                              f"{path}, for a shipped config) or fix it")
    return TranslationCLI(TranslationModule, TranslationDataModule, args=args,
                          save_config_kwargs={"overwrite": True})


def user_error(err: BaseException) -> Exception | None:
    """The configuration or corpus error behind ``err``, if that is what it is
    (ours, or Lightning's ``MisconfigurationException`` for a bad ``trainer.*`` key).

    jsonargparse re-raises a config class's error inside its own "Does not
    validate against any of the Union subtypes" message; the original stays
    in the exception chain, and that is the message the user needs.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (ConfigError, CorpusError, CheckpointError,
                            MisconfigurationException)):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None



def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/train.py`` and the installed entry point call it)."""
    try:
        main(argv)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is the user's to fix
        cause = user_error(err)
        if cause is None:
            raise
        # Bad config keys or corpus files: one message saying what to change, no traceback.
        print(f"train.py: error: {cause}", file=sys.stderr)
        sys.exit(2)
