"""``python scripts/benchmark_decode.py ...``: the command of :mod:`commands.benchmark_decode`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.benchmark_decode import run

if __name__ == "__main__":
    run()
