"""Checks of the scripts' numeric options: one line naming the option, exit status 2."""

from __future__ import annotations

import argparse

__all__ = ["require_at_least"]


def require_at_least(parser: argparse.ArgumentParser, args: argparse.Namespace,
                     **minimums: float) -> None:
    """``parser.error`` (exit status 2) for the first option below its minimum.

    Args:
        minimums: option attribute -> smallest allowed value (``max_steps=1``
            checks ``args.max_steps``, named ``--max-steps``); None values
            (options left unset) and lists (``nargs``) element-wise are checked.
    """
    for name, minimum in minimums.items():
        values = getattr(args, name)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if value is not None and not value >= minimum:
                parser.error(f"--{name.replace('_', '-')} {value} must be at least {minimum}")
