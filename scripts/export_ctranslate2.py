"""``python scripts/export_ctranslate2.py ...``: the command of :mod:`commands.export_ctranslate2` (its docstring
and ``--help`` say what it does)."""

from commands.export_ctranslate2 import *  # noqa: F401,F403 (what tests and users import from the script)
from commands.export_ctranslate2 import main, run  # noqa: F401

if __name__ == "__main__":
    run()
