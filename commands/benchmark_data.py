"""The data stage at corpus scale: seconds and peak RSS per stage, DataLoader throughput.

    python scripts/benchmark_data.py --copies 1 10 70            # 29 k, 290 k and 2.03 M pairs
    python scripts/benchmark_data.py --copies 10 --sampling      # + one epoch of subword sampling

Builds each corpus from a local one (default ``../shared/data/multi30k``) by
repeating its training split ``--copies`` times with numbered lines, then in a
fresh subprocess per size runs ``prepare_data`` (read, tokenizer, encode,
write), ``setup`` and ``--batches`` training batches, and prints a markdown
table naming the machine, the versions and this command. ``--json`` keeps the
raw figures. Logic: ``benchmarks/data_benchmark.py``.
"""

from __future__ import annotations

import argparse
import os
import sys

from inference.options import require_at_least

from .common import make_parser, write_json

SCRIPT = "benchmark_data.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--source", default="../shared/data/multi30k",
                   help="directory of {split}.{lang}[.gz] files to repeat (train, val, "
                        "test_2016_flickr; en, de)")
    p.add_argument("--copies", type=int, nargs="+", default=[1, 10, 70],
                   help="sizes, as copies of the training split (default 1 10 70: 29 k, "
                        "290 k and 2.03 M pairs of Multi30k)")
    p.add_argument("--vocab-size", type=int, default=8000, help="data.vocab_size")
    p.add_argument("--max-tokens", type=int, default=8192, help="data.max_tokens of the loader")
    p.add_argument("--batches", type=int, default=2000,
                   help="training batches to time (fewer if an epoch has fewer)")
    p.add_argument("--sampling", action="store_true",
                   help="also time one epoch of subword sampling (data.spm_alpha 0.5)")
    p.add_argument("--work-dir", default=None, help="where the corpora and caches are built "
                                                    "(default: the system's temp folder)")
    p.add_argument("--json", default=None, help="also write the raw figures to this file")
    args = p.parse_args(argv)
    require_at_least(p, args, copies=1, vocab_size=5, max_tokens=128, batches=1)
    if not os.path.isdir(args.source):
        p.error(f"--source {args.source}: no such directory; point it at a directory of "
                f"{{split}}.{{lang}}[.gz] files such as ../shared/data/multi30k")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure every size, print the table; returns the raw figures."""
    args = parse_args(argv)
    from benchmarks.data_benchmark import format_table, run_sizes

    data = {"vocab_size": args.vocab_size, "max_tokens": args.max_tokens}
    results = run_sizes(os.path.abspath(args.source), args.copies, data, args.batches,
                        args.sampling, args.work_dir)
    command = "python scripts/benchmark_data.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    print(format_table(results, command, data))
    write_json(args.json, results)
    return results


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/benchmark_data.py`` and the installed entry point call it)."""
    main(argv)
