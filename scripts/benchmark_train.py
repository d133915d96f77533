"""``python scripts/benchmark_train.py ...``: the command of :mod:`commands.benchmark_train`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.benchmark_train import run

if __name__ == "__main__":
    run()
