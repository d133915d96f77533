"""Training speed and memory of additive vs dot-product multi-head attention.

    nice -n 19 python scripts/benchmark_attention.py          # B=64, Q=K=64, D=256, 8 heads
    python scripts/benchmark_attention.py --batch 32 --queries 100 --keys 120 --json out.json

Times one training step (forward + backward) of
``MultiHeadAttention(D, H, 0.0, scoring=...)`` on ``(B, Q, D)`` queries and
``(B, K, D)`` keys and values (all requiring gradients, as inside a model)
and measures its peak memory, for these variants, in one process:

- ``dot``: ``scoring="dot"`` as constructed (explicit path, attention
  weights kept); the reference of the two ratio columns.
- ``dot-fused``: the same with ``keep_weights=False``, which calls
  ``F.scaled_dot_product_attention``.
- ``additive``: ``scoring="additive"`` as constructed: the fused kernel
  (``torch.compile``d reductions that never store the ``(B, H, Q, K, D/H)``
  tanh) where it compiles, else the chunked one; the table names which ran.
- ``additive-chunked``: ``kernel="chunked"``, scores computed in chunks of
  queries (the default budget of :class:`AdditiveAttention`, or
  ``--chunk-elements``), eager PyTorch.
- ``additive-naive``: ``kernel="naive"``, the whole hidden tensor at once.

``first step s`` is the wall time of each variant's first step: for the
fused kernel it includes compiling it (Inductor also keeps compiled kernels
on disk, under ``/tmp/torchinductor_$USER``, so a second run of this script
compiles less). With ``--dtype bf16`` forward runs under bf16 autocast, as in
training.

Time: the median of ``--repeats`` steps after ``--warmup`` steps per variant,
in wall-clock milliseconds and in CPU milliseconds of this process (all its
threads; less disturbed by other processes on a shared machine, but it
includes threads spinning while they wait). The variants take turns step by
step, so a change of load hits all of them alike. On CPU the glibc allocator
is tuned as for training (:func:`training.runtime.tune_cpu_allocator`).

Peak memory: the most bytes of tensors alive at once during a step, above
what was alive before it (inputs, parameters, the output gradient);
parameter and input gradients are cleared before the step and so counted.

- CUDA: ``torch.cuda.max_memory_allocated()`` after
  ``torch.cuda.reset_peak_memory_stats()``, minus ``memory_allocated()``
  before the step.
- CPU: PyTorch has no allocator statistics for CPU tensors, so one more step
  runs under ``torch.profiler.profile(profile_memory=True)``. The profiler
  then records every allocation and free of PyTorch's CPU allocator, each
  with the running total of bytes allocated (c10's
  ``ProfiledCPUMemoryReporter``; read through ``experimental_event_tree()``).
  The peak is the largest running total minus the total before the first
  event. (Checked by hand: a step that allocates 4, 8, 2 and 3 MiB, freeing
  the 4 MiB after the 8, reports 13 MiB.) Like ``max_memory_allocated`` this
  counts tensor storage only; the process's resident size (``ru_maxrss``)
  would instead depend on how glibc caches freed blocks, which
  ``tune_cpu_allocator`` changes on purpose. Not counted on either device:
  scratch memory that BLAS / oneDNN / cuBLAS allocate outside PyTorch.
"""

from __future__ import annotations


from benchmarks.names import REFERENCE, VARIANTS
from inference.options import require_at_least

from .common import AUTO_DEVICE, make_parser, write_json

SCRIPT = "benchmark_attention.py"


def parse_args(argv=None):
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--batch", type=int, default=64, help="B")
    p.add_argument("--queries", type=int, default=64, help="Q, number of queries")
    p.add_argument("--keys", type=int, default=64, help="K, number of keys and values")
    p.add_argument("--num-hiddens", type=int, default=256, help="D, model width")
    p.add_argument("--heads", type=int, default=8, help="H; the additive hidden size is D/H")
    p.add_argument("--ragged", action="store_true",
                   help="random valid lengths in [K/2, K] per sequence (default: no padding)")
    p.add_argument("--chunk-elements", type=int, default=None,
                   help="budget of the chunked additive variant (default: AdditiveAttention's)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    p.add_argument("--dtype", choices=("float32", "bf16"), default="float32",
                   help="float32, or bf16 autocast for forward (as bf16-mixed training)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: PyTorch's, one per core)")
    p.add_argument("--devices", default=AUTO_DEVICE,
                   help="comma-separated devices (default auto: cpu, and cuda when a GPU is "
                        "visible)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    require_at_least(p, args, batch=1, queries=1, keys=1, num_hiddens=1, heads=1, warmup=0,
                     repeats=1, threads=1, chunk_elements=1)
    args.variants = args.variants.split(",")
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or REFERENCE not in args.variants:
        p.error(f"--variants {unknown or args.variants}: choose among {list(VARIANTS)}, "
                f"including {REFERENCE!r} (the reference of the ratios)")
    return args


def main(argv=None) -> list[dict]:
    """Time every variant on every device, print the table; returns its rows."""
    args = parse_args(argv)
    import torch

    from benchmarks.attention_benchmark import benchmark, print_table
    from training.runtime import tune_cpu_allocator

    if args.devices == AUTO_DEVICE:
        args.devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.devices.split(","):
        rows += benchmark(args, torch.device(name))
    print_table(rows, args)
    write_json(args.json, rows)
    return rows


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/benchmark_attention.py`` and the installed entry point call it)."""
    main(argv)
