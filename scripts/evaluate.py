"""``python scripts/evaluate.py ...``: the command of :mod:`commands.evaluate`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.evaluate import run

if __name__ == "__main__":
    run()
