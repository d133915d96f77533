"""Time the training loss: ``F.cross_entropy(label_smoothing, ignore_index)``
against the fused :func:`training.loss.label_smoothed_cross_entropy`, forward +
backward on one ``(N, V)`` logits batch, both in this process.

    python scripts/benchmark_loss.py --rows 8190 --vocab 8000

Prints the median seconds of each and their ratio, with the machine.
"""

from __future__ import annotations

import platform
import statistics
import time

from inference.options import require_at_least

from .common import make_parser

SCRIPT = "benchmark_loss.py"


def main(argv: list[str] | None = None) -> dict:
    """Time both losses, print them and their ratio; returns seconds per forward+backward."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--rows", type=int, default=8190, help="N: target tokens of the batch")
    p.add_argument("--vocab", type=int, default=8000, help="V: vocabulary size")
    p.add_argument("--epsilon", type=float, default=0.1, help="label smoothing")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    args = p.parse_args(argv)
    require_at_least(p, args, rows=1, vocab=2, repeats=1)
    import torch
    import torch.nn.functional as F

    from training.loss import label_smoothed_cross_entropy

    torch.manual_seed(0)
    logits = (torch.randn(args.rows, args.vocab) * 3).requires_grad_()
    target = torch.randint(4, args.vocab, (args.rows,))
    target[::7] = 0  # padding rows
    losses = {
        "F.cross_entropy": lambda: F.cross_entropy(logits, target, ignore_index=0,
                                                   label_smoothing=args.epsilon),
        "fused": lambda: label_smoothed_cross_entropy(logits, target, args.epsilon, 0),
    }
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.repeats + 1):  # the first round warms up, alternating
        for name, loss in losses.items():
            logits.grad = None
            start = time.perf_counter()
            loss().backward()
            times[name].append(time.perf_counter() - start)
    result = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, N={args.rows}, V={args.vocab}")
    for name, seconds in result.items():
        print(f"{name:16s} {seconds:.3f} s per forward+backward")
    print(f"F.cross_entropy / fused = {result['F.cross_entropy'] / result['fused']:.2f}")
    return result


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/benchmark_loss.py`` and the installed entry point call it)."""
    main(argv)
