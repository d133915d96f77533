"""Train a translation model: ``python scripts/train.py fit --config configs/multi30k_cpu.yaml``.

A thin ``LightningCLI`` over :class:`training.module.TranslationModule` and
:class:`data.datamodule.TranslationDataModule`; every hyperparameter lives in
the YAML file (``--print_config`` shows them all, ``--help`` documents them).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lightning.pytorch.cli import LightningCLI  # noqa: E402

from data.datamodule import TranslationDataModule  # noqa: E402
from training.module import TranslationModule  # noqa: E402
from training.runtime import tune_cpu_allocator  # noqa: E402


class TranslationCLI(LightningCLI):
    """Links the tokenizer's vocabulary size into the model config."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.vocab_size", "model.vocab_size")


def main(args: list[str] | None = None) -> LightningCLI:
    """Run the CLI (``args`` for tests; ``sys.argv`` otherwise)."""
    tune_cpu_allocator()
    return TranslationCLI(TranslationModule, TranslationDataModule, args=args,
                          save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
