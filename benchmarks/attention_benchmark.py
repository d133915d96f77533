"""The attention-layer benchmark: training speed (forward + backward) and peak
memory of one ``MultiHeadAttention`` layer, additive (fused, chunked, naive)
against dot-product (plain and fused), as ratios measured in the same run.
``scripts/benchmark_attention.py`` is its command line; its docstring
describes the method.
"""

from __future__ import annotations

import gc
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch._C._profiler import _EventType

from model.attention import MultiHeadAttention

from .names import REFERENCE, VARIANTS
from .timing import synchronize

__all__ = ["VARIANTS", "REFERENCE", "benchmark", "print_table", "peak_bytes"]

MiB = 2 ** 20


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
