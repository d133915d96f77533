"""``python scripts/benchmark_attention.py ...``: the command of :mod:`commands.benchmark_attention` (its docstring
and ``--help`` say what it does)."""

from commands.benchmark_attention import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.benchmark_attention import main, run  # noqa: F401

if __name__ == "__main__":
    run()
