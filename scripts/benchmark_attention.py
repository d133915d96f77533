"""``python scripts/benchmark_attention.py ...``: the command of :mod:`commands.benchmark_attention`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.benchmark_attention import run

if __name__ == "__main__":
    run()
