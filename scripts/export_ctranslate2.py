"""``python scripts/export_ctranslate2.py ...``: the command of :mod:`commands.export_ctranslate2`
(its docstring and ``--help`` say what it does; ``main(argv)`` there is the
same work for callers in Python)."""

from commands.export_ctranslate2 import run

if __name__ == "__main__":
    run()
