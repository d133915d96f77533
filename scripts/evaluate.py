"""``python scripts/evaluate.py ...``: the command of :mod:`commands.evaluate` (its docstring
and ``--help`` say what it does)."""

from commands.evaluate import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.evaluate import main, run  # noqa: F401

if __name__ == "__main__":
    run()
