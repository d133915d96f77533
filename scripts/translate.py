"""``python scripts/translate.py ...``: the command of :mod:`commands.translate` (its docstring
and ``--help`` say what it does)."""

from commands.translate import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.translate import main, run  # noqa: F401

if __name__ == "__main__":
    run()
