"""Export a checkpoint to CTranslate2, the fast inference engine.

    python scripts/export_ctranslate2.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt \\
        --out runs/multi30k_cpu/ct2
    python scripts/export_ctranslate2.py --ckpt RUN.ckpt --out DIR --quantization int8
    python scripts/translate.py --ckpt DIR --beam 5 "A man rides a bike."

Writes DIR with ``model.bin``, ``config.json``, ``shared_vocabulary.json``
(the SentencePiece pieces in id order), ``sentencepiece.model`` and
``translation_settings.json`` (the checkpoint's decoding defaults and data
settings): DIR alone is enough for ``translate.py``, ``evaluate.py`` and
``benchmark_decode.py``. A float32 export can also run in int8 without a
second export (``--compute-type int8`` of those scripts). Transformers with
dot-product attention only: CTranslate2 has no additive attention and no GRU
decoder. Layer mapping and decoding differences: ``inference/ct2.py``.
"""

from __future__ import annotations

import argparse
import os

from inference.options import QUANTIZATIONS

from .common import make_parser, run_command

SCRIPT = "export_ctranslate2.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--ckpt", required=True, help="checkpoint written by scripts/train.py")
    p.add_argument("--out", required=True, help="CTranslate2 model directory to write")
    p.add_argument("--quantization", default="float32", choices=QUANTIZATIONS,
                   help="weight type stored in model.bin")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier CTranslate2 export in --out")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from inference.checkpoint import load_translator
    from inference.ct2 import export_ctranslate2

    translator = load_translator(args.ckpt, engine="pytorch")
    out = export_ctranslate2(translator, args.out, args.quantization, args.force, args.ckpt)
    size = os.path.getsize(out / "model.bin") / 2**20
    print(f"wrote {out} ({args.quantization}, model.bin {size:.1f} MiB) from {args.ckpt}")


def _user_errors() -> tuple[type, ...]:
    from inference.checkpoint import CheckpointError

    return (CheckpointError,)


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/export_ctranslate2.py`` and the installed entry point call it)."""
    run_command(SCRIPT, main, argv, _user_errors)
