"""``python scripts/average_checkpoints.py ...``: the command of :mod:`commands.average_checkpoints` (its docstring
and ``--help`` say what it does)."""

from commands.average_checkpoints import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.average_checkpoints import main, run  # noqa: F401

if __name__ == "__main__":
    run()
