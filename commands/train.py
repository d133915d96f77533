"""Train a translation model: ``python scripts/train.py fit --config configs/multi30k_cpu.yaml``.

A thin ``LightningCLI`` over :class:`training.module.TranslationModule` and
:class:`data.datamodule.TranslationDataModule`; every hyperparameter lives in
the YAML file (``--print_config`` shows them all, ``--help`` documents them).
"""

from __future__ import annotations

import sys

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI

from data.corpus import CorpusError
from data.datamodule import TranslationDataModule
from data.files import config_arguments, yaml_damage
from inference.translator import CheckpointError
from model.config import ConfigError
from training.cli import TranslationCLI
from training.module import TranslationModule
from training.runtime import tune_cpu_allocator

__all__ = ["TranslationCLI", "main", "run", "user_error"]


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
