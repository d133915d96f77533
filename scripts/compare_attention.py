"""``python scripts/compare_attention.py ...``: the command of :mod:`commands.compare_attention`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.compare_attention import run

if __name__ == "__main__":
    run()
