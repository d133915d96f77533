"""``python scripts/prepare_data.py ...``: the command of :mod:`commands.prepare_data` (its docstring
and ``--help`` say what it does)."""

from commands.prepare_data import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.prepare_data import main, run  # noqa: F401

if __name__ == "__main__":
    run()
