"""``python scripts/benchmark_data.py ...``: the command of :mod:`commands.benchmark_data`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.benchmark_data import run

if __name__ == "__main__":
    run()
