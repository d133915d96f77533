"""Decoding speed: greedy and beam search, with and without the key/value cache,
and the same model exported to CTranslate2 (float32 and int8).

    python scripts/benchmark_decode.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt
    python scripts/benchmark_decode.py --ckpt RUN.ckpt --ctranslate2 --threads 2

Decodes the test split (``test_2016_flickr`` by default) with every
combination of ``--beams`` and cached/uncached decoding in one process, and
prints sentences/second, output tokens/second, the speed-up of the cache
(cached / uncached, measured in the same run) and whether both produced
identical output, and cased sacreBLEU against the references. With
``--ctranslate2`` the checkpoint is exported to a temporary CTranslate2 model
(float32; or pass an exported directory, ``--ctranslate2 DIR``) and decoded
with every ``--compute-types`` entry on ``--threads`` CPU threads (one
translator, default ``torch.get_num_threads()``), in the same process: its
rows give the speed-up over our cached decoding of the same beam and the
share of sentences whose output equals ours. Each configuration is timed
``--repeats`` times after one warm-up batch; the median is reported.
"""

from __future__ import annotations


from inference.options import require_at_least

from .common import add_device_argument, make_parser, resolve_device, write_json

SCRIPT = "benchmark_decode.py"


def parse_args(argv=None):
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default=None, help="corpus (default: the checkpoint's)")
    p.add_argument("--split", default=None, help="split (default: the checkpoint's test split)")
    p.add_argument("--limit", type=int, default=None, help="first N sentences only")
    p.add_argument("--beams", default="1,5", help="comma-separated beam sizes")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per configuration")
    p.add_argument("--max-tokens", type=int, default=8192, help="batch budget in source tokens")
    add_device_argument(p)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--cached-only", action="store_true",
                   help="skip the (slow) uncached runs of our decoding")
    p.add_argument("--ctranslate2", nargs="?", const="export", default=None, metavar="DIR",
                   help="also decode with CTranslate2: a model directory, or (no value) a "
                        "temporary float32 export of --ckpt")
    p.add_argument("--compute-types", default="float32,int8",
                   help="CTranslate2 compute types, comma-separated")
    p.add_argument("--threads", type=int, default=None,
                   help="CTranslate2 CPU threads (default: torch.get_num_threads())")
    args = p.parse_args(argv)
    require_at_least(p, args, limit=1, repeats=1, max_tokens=1, threads=1)
    return args


def main(argv=None) -> list[dict]:
    """Decode with every configuration, print the table; returns its rows."""
    args = parse_args(argv)
    from benchmarks.decode_benchmark import format_rows, run_decode_benchmark
    from training.runtime import tune_cpu_allocator

    args.device = resolve_device(args.device)
    tune_cpu_allocator()
    rows, description = run_decode_benchmark(args)
    print(f"# {description}")
    print("\n".join(format_rows(rows)))
    write_json(args.json, rows)
    return rows


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/benchmark_decode.py`` and the installed entry point call it)."""
    main(argv)
