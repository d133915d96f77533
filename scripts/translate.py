"""``python scripts/translate.py ...``: the command of :mod:`commands.translate`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.translate import run

if __name__ == "__main__":
    run()
