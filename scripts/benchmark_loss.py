"""``python scripts/benchmark_loss.py ...``: the command of :mod:`commands.benchmark_loss`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.benchmark_loss import run

if __name__ == "__main__":
    run()
