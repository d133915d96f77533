"""Compare three attention baselines on en->de Multi30k, over several seeds.

    python scripts/compare_attention.py --resume           # the configs' budget, seeds 1 2 3
    python scripts/compare_attention.py --max-steps 300 --seeds 1 --threads 1  # a quick look

The baselines are ``configs/compare_transformer_dot.yaml`` (Transformer,
scaled dot-product attention), ``configs/compare_transformer_additive.yaml``
(the same Transformer with additive attention) and ``configs/compare_rnn.yaml``
(GRU encoder-decoder with additive attention, Bahdanau et al. 2015); other
configs can be given as arguments. Each (config, seed) trains as a subprocess
of ``scripts/train.py`` with an override YAML (``override.yaml`` in the run
folder) that sets the seed and the budget and sends logs and checkpoints to
``OUT/<name>_seed<k>/`` (an existing folder of that name is replaced, unless
``--resume`` finds a finished or an interrupted run of the same settings there:
see below). Then
its ``best.ckpt`` (best validation BLEU) is decoded greedily on the test
split in this process and scored with
:func:`evaluation.selection.evaluate_translator` (cased BLEU, chrF and the
papers' lowercased tokenized BLEU). ``OUT`` (default
``runs/compare``) receives, rewritten after every run:

- ``report.md``: per model, mean ± standard deviation over seeds of the
  parameter count, training tokens/second, peak memory, training wall time,
  best validation BLEU/chrF and test BLEU/chrF; the command and the machine.
- ``results.csv``: one row per run, then a ``mean`` and a ``std`` row per model.
- ``val_bleu_steps.png``, ``val_bleu_time.png``, ``train_loss.png``: validation
  BLEU against updates and against training wall-clock seconds, and the
  training loss; one colour per model, the mean over seeds drawn solid and
  each seed faintly.

- ``OUT/<name>_seed<k>/result.json``: that run's figures, which ``--resume``
  reads back instead of training the run again when the config files (the
  recipe and ``configs/base.yaml``), seed and budget are the same (a run that
  failed, or one with another budget, trains again). A run cut off midway (its
  ``started.json`` matches, no ``result.json``) goes on from its ``last.ckpt``
  with ``--resume`` (weights, optimizer, schedule, data position and the
  SpeedMonitor's counts), rather than from scratch. Runs go seed by seed
  (every model's seed 1, then seed 2, ...), so a comparison stopped part-way
  (``Ctrl-C``, the end of a session) and resumed later has covered the models
  evenly. The report names the machine of every run that trained on another
  one, and the precision of each run (as its saved ``config.yaml`` records it).
  ``--resume`` on another CPU keeps every run alike: runs begun in float32
  (an AVX2-only CPU, where the configs' bf16 falls back) go on in float32 on a
  CPU with native bf16; runs begun in bf16 are refused (exit status 2) where
  bf16 is only emulated. ``--report-only`` trains nothing and rewrites the report from the
  finished runs (the others listed as not run yet).
- ``--record DIR`` keeps what the report needs of every finished run outside
  ``OUT`` (ignored by git): ``DIR/<name>_seed<k>/`` gets its ``result.json``
  (paths made relative), test hypotheses and heatmap, and ``DIR`` a copy of the
  report, after every run. A comparison longer than one machine's session
  goes on elsewhere: ``--resume --record DIR`` restores the recorded runs into
  ``OUT`` (the test references read again from the corpus), trains the rest,
  and ``--report-only --record DIR`` rebuilds the report from the records
  alone. The precision rule above holds for restored runs too.
- a convergence table in ``report.md``: per model, the change in validation
  BLEU from the last validation at or before 90% of the budget to the last one
  (the last 10% of updates with the configs' 10 validations) and whether it had
  levelled off (within ±0.5).
- an "equal wall time" table in ``report.md``: the same runs read when the
  fastest model had spent its update budget (best validation BLEU logged
  by then, updates by then).

Speed, wall time and memory come from :class:`training.callbacks.SpeedMonitor`
(in every compare config, added to other configs), logged with the
validation metrics to the run's CSV log.

Budget: ``--max-steps`` (updates; default the configs' ``trainer.max_steps``)
and ``--max-minutes`` (training wall time per run) replace the configs'
values; ``--num-evals`` validations per run at equal step intervals.

The budget is counted in updates (the configs: 4000, no ``max_time``), so a
slower or busier machine changes the wall time, not the result. ``--threads
1`` keeps the runs robust on a shared machine: with PyTorch's default of 2
threads a training step became 10-30 times slower whenever another process
was busy, while on an idle machine 2 threads are faster.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.files import yaml_damage
from benchmarks.names import DEFAULT_CONFIGS
from inference.options import require_at_least

from .common import add_device_argument, make_parser, program, resolve_device

SCRIPT = "compare_attention.py"
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("configs", nargs="*", type=Path, default=DEFAULT_CONFIGS,
                   help="training configs to compare (default: the three configs/compare_*.yaml)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds per config")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optimizer updates per run (default: the config's trainer.max_steps)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training wall-time limit per run in minutes (default: the config's)")
    p.add_argument("--num-evals", type=int, default=10,
                   help="validations per run, at equal step intervals")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "compare",
                   help="report folder; runs go to OUT/<name>_seed<k>/")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs in OUT (same config, seed and budget: their "
                        "result.json) instead of training them again; others are (re)trained")
    p.add_argument("--record", type=Path, default=None, metavar="DIR",
                   help="also keep the report and each finished run's record (result.json, "
                        "test hypotheses, attention heatmap; no checkpoints) in DIR, a folder "
                        "for git such as docs/compare; with --resume or --report-only, runs "
                        "missing from OUT are restored from DIR")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite the report from the finished runs in OUT "
                        "(as --resume reads them); the others are listed as not run yet")
    add_device_argument(p, help="device of the test-set decoding in this process (default "
                                "auto: cuda when a GPU is visible, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of training (OMP_NUM_THREADS) and test decoding (default: "
                        "PyTorch's choice); 1 is faster on a CPU that other processes share")
    args = p.parse_args(argv)
    require_at_least(p, args, seeds=0, max_steps=1, max_minutes=0.01, num_evals=1, threads=1)
    for config in args.configs:
        if not Path(config).is_file():
            p.error(f"config {config} does not exist; pass YAML files such as "
                    f"configs/compare_transformer_dot.yaml")
        damage = yaml_damage(config)
        if damage is not None:
            p.error(f"config {config} is damaged: {damage}; restore it (git checkout {config}) "
                    f"or fix it")
    return args


def main(argv: list[str] | None = None) -> list:
    """Run the comparison; returns one :class:`benchmarks.compare.RunResult` per
    (config, seed). A damaged saved result, or earlier runs in a precision this
    CPU only emulates, end it with one line and exit status 2."""
    args = parse_args(argv)
    from benchmarks.compare import PrecisionMismatch, ResultFileError, run_comparison

    args.device = resolve_device(args.device)
    try:
        return run_comparison(args, sys.argv[1:] if argv is None else argv)
    except (ResultFileError, PrecisionMismatch) as err:
        print(f"{program(SCRIPT)}: error: {err}", file=sys.stderr)
        sys.exit(2)


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/compare_attention.py`` and the installed entry point call it)."""
    results = main(argv)
    from benchmarks.compare_report import NOT_RUN

    sys.exit(0 if all(r.status in ("ok", NOT_RUN) for r in results) else 1)
