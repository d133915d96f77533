"""``python scripts/attention_examples.py ...``: the command of :mod:`commands.attention_examples` (its docstring
and ``--help`` say what it does)."""

from commands.attention_examples import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.attention_examples import main, run  # noqa: F401

if __name__ == "__main__":
    run()
