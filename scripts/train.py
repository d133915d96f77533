"""``python scripts/train.py ...``: the command of :mod:`commands.train` (its docstring
and ``--help`` say what it does)."""

from commands.train import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.train import main, run  # noqa: F401

if __name__ == "__main__":
    run()
