"""Training speed and memory: our Transformer against one built on ``torch.nn.Transformer``.

    python scripts/benchmark_train.py --config configs/multi30k_cpu.yaml --steps 20 --repeats 3
    python scripts/benchmark_train.py --config configs/multi30k_gpu.yaml --compile

What is compared. ``model.config`` of the YAML file gives the sizes and
``data.max_tokens`` the batch budget. Both contestants are a
:class:`training.module.TranslationModule` (so the same label-smoothed loss and
the same AdamW + schedule from ``configure_optimizers``, with the YAML's
hyperparameters); one holds our :class:`model.Transformer`, the other a
:class:`benchmarks.reference.ReferenceTransformer`: ``torch.nn.Transformer`` with the same sizes,
the same tied embedding / output matrix scaled by ``sqrt(D)``, the same
sinusoidal positions, the same dropouts, pre- or post-LN with the same final
LayerNorms, and attention projections without bias. The reference starts from
a copy of our weights (``tests/benchmarks/test_benchmark_train.py`` checks that the two
compute the same function). A training step is forward under autocast (bf16
for ``--precision bf16``), backward, gradient clipping at the YAML's
``trainer.gradient_clip_val``, ``optimizer.step()``, ``scheduler.step()`` and
``zero_grad(set_to_none=True)``: what Lightning does for one batch.

Batches are the first ``--warmup + --steps`` Multi30k training batches of our
``TranslationDataModule`` (token budget ``data.max_tokens``, tokenization
cached under ``data.cache_dir``). Every contestant first trains on the
``--warmup`` batches (with ``--compile``, also once on the timed batches, so
that every shape is compiled before timing); then each of ``--repeats``
rounds runs every contestant over the same ``--steps`` batches, one after
the other, in an order rotated every round (alternating, so a burst of load
from other processes hits all of them alike). Throughput is tokens over the
median round time; the min–max of the rounds shows the noise. On a CPU
shared with other processes, ``--threads 1`` gives much steadier numbers:
a multi-threaded step waits at every parallel region for its slowest
thread, which a busy core delays. Tokens are
real tokens: target = ``tgt_valid_len`` (labels incl. EOS), source =
``src_valid_len``.

The Lightning row runs ``Trainer.fit`` (``TranslationModule`` + our data
module, ``limit_train_batches = warmup + steps``, one epoch, no validation,
checkpointing, logger or progress bar, same precision and clipping) once
per round and times it from the end of the last warm-up batch to the end of
the last batch, so data loading, collation, host-to-device copies and
Lightning's hooks and ``self.log`` are inside the window. Its ratio to our
bare step on the same batches is the overhead of the loop.

Memory ("step memory"): the extra memory a training step needs on top of
the parameters and AdamW state (identical for both models), i.e.
activations saved for backward, gradients and temporaries, at the peak over
one pass of the timed batches, measured in a separate pass after timing.
GPU: ``torch.cuda.max_memory_allocated()`` minus ``memory_allocated()``
before the pass. CPU: the same quantity for PyTorch's CPU allocator, from
the allocation and free events that ``torch.profiler`` records with
``profile_memory=True`` (running sum of bytes in time order, maximum over
the pass). Both count tensor bytes only, exactly and reproducibly; the
process's resident set (``ru_maxrss``, ``VmHWM``) also holds glibc's
retained heap and varied by about ±5% between identical passes here, and
``tracemalloc`` does not see PyTorch's allocations.

Model FLOPs: :func:`benchmarks.reference.training_matmul_flops` counts the matrix-multiply FLOPs
of a training step on the padded ``(B, S, T)`` shapes (formula in its
docstring; checked against ``torch.utils.flop_counter.FlopCounterMode`` in
the tests). MFU divides model FLOPs per second by the rate of a large
``torch.matmul`` in the training precision measured on the same device in
the same run (``8192^3`` on GPU, ``2048^3`` on CPU; best of several).
"""

from __future__ import annotations

import sys

from inference.options import require_at_least

from .common import add_device_argument, make_parser, program, resolve_device, write_json

SCRIPT = "benchmark_train.py"


def parse_args(argv=None):
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--config", required=True,
                   help="training YAML (model.config, model hyperparameters, data, trainer)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (>= 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the median is reported")
    p.add_argument("--precision", choices=["bf16", "fp32"], default=None,
                   help="bf16 autocast or float32 (default: the config's trainer.precision)")
    add_device_argument(p)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads; default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile of both networks")
    p.add_argument("--additive", action="store_true",
                   help="also measure our Transformer with attention: additive (same config "
                        "otherwise; fused additive kernel where it compiles)")
    p.add_argument("--no-fit", action="store_true", help="skip the Trainer.fit row")
    p.add_argument("--no-memory", action="store_true", help="skip the memory pass")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--profile", nargs="?", const="", default=None, metavar="TRACE.json",
                   help="also profile one pass of ours (torch.profiler): the operators with "
                        "the most self time; with a path, a Chrome trace is written there")
    args = p.parse_args(argv)
    require_at_least(p, args, warmup=1, steps=1, repeats=1, threads=1)
    return args


def main(argv=None) -> dict:
    """Run the benchmark, print its table; returns the results (also ``--json``)."""
    args = parse_args(argv)
    from benchmarks.train_benchmark import run_benchmark
    from training.runtime import tune_cpu_allocator

    args.device = resolve_device(args.device)
    tune_cpu_allocator()
    try:
        out, lines = run_benchmark(args)
    except ValueError as err:  # a config or corpus that cannot give the batches: one line
        print(f"{program(SCRIPT)}: error: {err}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(lines))
    write_json(args.json, out)
    return out


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/benchmark_train.py`` and the installed entry point call it)."""
    main(argv)
