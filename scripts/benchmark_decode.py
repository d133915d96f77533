"""``python scripts/benchmark_decode.py ...``: the command of :mod:`commands.benchmark_decode` (its docstring
and ``--help`` say what it does)."""

from commands.benchmark_decode import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.benchmark_decode import main, run  # noqa: F401

if __name__ == "__main__":
    run()
