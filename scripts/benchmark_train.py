"""``python scripts/benchmark_train.py ...``: the command of :mod:`commands.benchmark_train` (its docstring
and ``--help`` say what it does)."""

from commands.benchmark_train import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.benchmark_train import main, run  # noqa: F401

if __name__ == "__main__":
    run()
