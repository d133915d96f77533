"""``python scripts/average_checkpoints.py ...``: the command of :mod:`commands.average_checkpoints`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.average_checkpoints import run

if __name__ == "__main__":
    run()
