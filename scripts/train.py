"""``python scripts/train.py ...``: the command of :mod:`commands.train`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.train import run

if __name__ == "__main__":
    run()
