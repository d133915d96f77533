"""``python scripts/compare_attention.py ...``: the command of :mod:`commands.compare_attention` (its docstring
and ``--help`` say what it does)."""

from commands.compare_attention import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.compare_attention import main, run  # noqa: F401

if __name__ == "__main__":
    run()
