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

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch._C._profiler import _EventType  # noqa: E402

from model.attention import MultiHeadAttention  # noqa: E402
from training.benchmarking import synchronize  # noqa: E402
from training.options import require_at_least  # noqa: E402
from training.runtime import tune_cpu_allocator  # noqa: E402

#: Variant name -> (scoring, keep_weights, additive kernel). The kernel is None for dot.
VARIANTS = {
    "dot": ("dot", True, None),
    "dot-fused": ("dot", False, None),
    "additive": ("additive", True, "auto"),
    "additive-chunked": ("additive", True, "chunked"),
    "additive-naive": ("additive", True, "naive"),
}
REFERENCE = "dot"
MiB = 2 ** 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--devices", default="cpu,cuda" if torch.cuda.is_available() else "cpu",
                   help="comma-separated devices")
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


def build(variant: str, args, device: torch.device) -> MultiHeadAttention:
    """The layer of ``variant`` (same seed, so the same projections for all)."""
    scoring, keep_weights, kernel = VARIANTS[variant]
    torch.manual_seed(0)
    mha = MultiHeadAttention(args.num_hiddens, args.heads, 0.0, scoring=scoring).to(device)
    mha.attention.keep_weights = keep_weights
    if kernel is not None:
        mha.attention.kernel = kernel
        if args.chunk_elements is not None:
            mha.attention.chunk_elements = args.chunk_elements
    return mha.train()


def make_inputs(args, device: torch.device):
    """Queries ``(B, Q, D)``, keys and values ``(B, K, D)``, valid lengths, output gradient."""
    g = torch.Generator().manual_seed(1)
    B, Q, K, D = args.batch, args.queries, args.keys, args.num_hiddens
    queries, keys, values = (torch.randn(B, n, D, generator=g).to(device).requires_grad_()
                             for n in (Q, K, K))
    valid_lens = (torch.randint(K // 2, K + 1, (B,), generator=g).to(device) if args.ragged
                  else None)
    grad_out = torch.randn(B, Q, D, generator=g).to(device)
    return queries, keys, values, valid_lens, grad_out


def make_step(mha: MultiHeadAttention, inputs, dtype: str = "float32"
              ) -> tuple[Callable[[], None], Callable[[], None]]:
    """``clear()`` frees what the last step left (gradients, kept weights);
    ``step()`` runs forward (under bf16 autocast for ``dtype="bf16"``) and backward."""
    queries, keys, values, valid_lens, grad_out = inputs
    device_type = queries.device.type

    def clear():
        for t in (*mha.parameters(), queries, keys, values):
            t.grad = None
        mha.attention.attention_weights = None
        gc.collect()

    def step():
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            out = mha(queries, keys, values, valid_lens)
        out.backward(grad_out.to(out.dtype))

    return clear, step



def peak_bytes(clear: Callable[[], None], step: Callable[[], None], device: torch.device) -> int:
    """Most bytes of tensors on ``device`` alive at once during ``step()``,
    above those alive before it (see the module docstring for the method)."""
    clear()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        step()
    allocations, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        kind, fields = event.typed
        if kind == _EventType.Allocation and fields.device.type == device.type:
            allocations.append(fields)  # alloc_size < 0 for a free
    if not allocations:
        raise RuntimeError("the profiler recorded no CPU allocation; is profile_memory supported "
                           "by this PyTorch build?")
    before = min(a.total_allocated - a.alloc_size for a in allocations)
    return max(a.total_allocated for a in allocations) - before


def kernel_name(mha: MultiHeadAttention, args, device: torch.device) -> str:
    """What the additive layer ran: ``fused``, ``chunked (c queries/chunk)``
    or ``naive``; empty for dot."""
    if mha.scoring != "additive":
        return ""
    kernel = mha.attention.resolved_kernel(device)
    if kernel != "chunked":
        return kernel
    A = args.num_hiddens // args.heads
    queries, keys = (torch.empty(args.batch, args.heads, n, A, device="meta")
                     for n in (args.queries, args.keys))  # projected (B, H, Q|K, A)
    chunk = mha.attention.chunk_size(queries, keys)
    return "chunked" + (f", {chunk} queries/chunk" if chunk is not None else ", all at once")


def benchmark(args, device: torch.device) -> list[dict]:
    inputs = make_inputs(args, device)
    layers = {v: build(v, args, device) for v in args.variants}
    steps = {v: make_step(mha, inputs, args.dtype) for v, mha in layers.items()}
    first_step = {}
    for variant, (clear, step) in steps.items():
        for i in range(max(1, args.warmup)):
            clear()
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            if i == 0:
                first_step[variant] = time.perf_counter() - start
    times, cpu_times = {v: [] for v in steps}, {v: [] for v in steps}
    for _ in range(args.repeats):
        for variant, (clear, step) in steps.items():
            clear()
            synchronize(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            synchronize(device)
            times[variant].append(time.perf_counter() - start)
            cpu_times[variant].append(time.process_time() - cpu_start)
    peaks = {v: peak_bytes(clear, step, device) for v, (clear, step) in steps.items()}

    device_name = (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"{platform.processor() or platform.machine()} CPU, "
                        f"{torch.get_num_threads()} thread{'s' * (torch.get_num_threads() > 1)}")
    rows = []
    for variant in steps:
        rows.append({"device": device_name, "variant": variant,
                     "ms": round(1e3 * statistics.median(times[variant]), 2),
                     "cpu_ms": round(1e3 * statistics.median(cpu_times[variant]), 2),
                     "peak_mib": round(peaks[variant] / MiB, 1),
                     "time_vs_dot": round(statistics.median(times[variant])
                                          / statistics.median(times[REFERENCE]), 2),
                     "cpu_time_vs_dot": round(statistics.median(cpu_times[variant])
                                              / statistics.median(cpu_times[REFERENCE]), 2),
                     "memory_vs_dot": round(peaks[variant] / peaks[REFERENCE], 2),
                     "kernel": kernel_name(layers[variant], args, device),
                     "first_step_s": round(first_step[variant], 2), "dtype": args.dtype,
                     "batch": args.batch, "queries": args.queries, "keys": args.keys,
                     "num_hiddens": args.num_hiddens, "heads": args.heads,
                     "ragged": args.ragged, "repeats": args.repeats,
                     "torch": torch.__version__})
    return rows


def print_table(rows: list[dict], args) -> None:
    print(f"# MultiHeadAttention fwd+bwd, B={args.batch}, Q={args.queries}, K={args.keys}, "
          f"D={args.num_hiddens}, H={args.heads} (additive hidden size "
          f"{args.num_hiddens // args.heads}), {'ragged' if args.ragged else 'no'} padding, "
          f"{'bf16 autocast' if args.dtype == 'bf16' else 'float32'}, median of {args.repeats}, "
          f"torch {torch.__version__}")
    print("| device | variant | ms per fwd+bwd | time vs dot | CPU ms | CPU time vs dot "
          "| peak memory MiB | memory vs dot | first step s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kernel = f" ({r['kernel']})" if r["kernel"] else ""
        print(f"| {r['device']} | {r['variant']}{kernel} | {r['ms']:.1f} | "
              f"{r['time_vs_dot']:.2f}× | {r['cpu_ms']:.0f} | {r['cpu_time_vs_dot']:.2f}× | "
              f"{r['peak_mib']:.1f} | {r['memory_vs_dot']:.2f}× | {r['first_step_s']:.2f} |")


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    tune_cpu_allocator()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.devices.split(","):
        rows += benchmark(args, torch.device(name))
    print_table(rows, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
