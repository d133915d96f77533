"""Average the weights of a run's last checkpoints into one checkpoint.

    python scripts/average_checkpoints.py --run runs/multi30k_tiny --last 10
    python scripts/average_checkpoints.py --inputs a.ckpt b.ckpt --out avg.ckpt

``--run`` reads ``RUN_DIR/checkpoints/epochs/`` (where the epoch
``ModelCheckpoint`` of ``configs/multi30k_tiny.yaml`` writes) and picks the
``--last`` N by saved global step; ``--folder`` names that folder directly.
The result (default ``RUN_DIR/checkpoints/averaged.ckpt``) is a
self-contained checkpoint for ``scripts/evaluate.py`` and
``scripts/translate.py``. Source: fairseq ``scripts/average_checkpoints.py``;
Vaswani et al. 2017 §6.1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import make_parser, run_command

SCRIPT = "average_checkpoints.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = make_parser(SCRIPT, __doc__)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--inputs", nargs="+", metavar="CKPT",
                       help="checkpoints to average, oldest first (the last gives the settings)")
    which.add_argument("--run", help="run folder (trainer.default_root_dir); reads its "
                                     "checkpoints/epochs/")
    which.add_argument("--folder", help="folder of checkpoints to pick the last N from")
    p.add_argument("--last", type=int, default=10,
                   help="with --run/--folder: how many of the newest checkpoints (by global "
                        "step) to average (default 10, what configs/multi30k_tiny.yaml keeps)")
    p.add_argument("--out", default=None,
                   help="file to write (default with --run: RUN_DIR/checkpoints/averaged.ckpt; "
                        "required with --inputs and --folder)")
    args = p.parse_args(argv)
    if args.out is None and args.run is None:
        p.error("--out is required with --inputs and --folder")
    if args.last < 1:
        p.error(f"--last must be at least 1, got {args.last}")
    return args


def main(argv: list[str] | None = None) -> Path:
    """Average and save; returns the path written."""
    args = parse_args(argv)
    from training.averaging import average_checkpoints, last_checkpoints, save_checkpoint

    if args.inputs:
        paths = [Path(p) for p in args.inputs]
    else:
        folder = Path(args.run) / "checkpoints" / "epochs" if args.run else Path(args.folder)
        paths = last_checkpoints(folder, args.last)
    out = Path(args.out) if args.out else Path(args.run) / "checkpoints" / "averaged.ckpt"
    ckpt = average_checkpoints(paths)
    save_checkpoint(ckpt, out, inputs=paths)
    print(f"averaged {len(paths)} checkpoints:")
    for path in paths:
        print(f"  {path}")
    print(f"wrote {out} (weights of the {len(paths)} above; settings of the last, "
          f"global step {ckpt.get('global_step')}, epoch {ckpt.get('epoch')})")
    return out


def _user_errors() -> tuple[type, ...]:
    from inference.checkpoint import CheckpointError

    return (CheckpointError,)


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/average_checkpoints.py`` and the installed entry point call it)."""
    run_command(SCRIPT, main, argv, _user_errors)
