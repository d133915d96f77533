"""What every command shares: its parser, its ``--device`` option, and the
one-line error with exit status 2.

Imports nothing of torch, so ``--help`` and argument errors answer at once; a
command imports the project's packages inside ``main`` after parsing, and
``--device auto`` (the default) is resolved only then.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable

__all__ = ["AUTO_DEVICE", "add_device_argument", "make_parser", "program", "resolve_device",
           "run_command", "write_json"]

#: ``--device`` default: CUDA when a GPU is visible, else the CPU (resolved after parsing).
AUTO_DEVICE = "auto"


def program(script: str) -> str:
    """The name a command reports itself by: the installed entry point's name
    (``nmt-translate``) when run through it, else the script's (``translate.py``)."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("nmt-") else script


def make_parser(script: str, doc: str | None) -> argparse.ArgumentParser:
    """An ``argparse`` parser named :func:`program` ``(script)`` with ``doc`` as its
    description, kept as written (its usage examples)."""
    return argparse.ArgumentParser(prog=program(script), description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_device_argument(parser: argparse.ArgumentParser, name: str = "--device",
                        help: str = "cpu, cuda, cuda:N ... (default auto: cuda when a GPU is "
                                    "visible, else cpu)") -> None:
    """Add ``--device`` with default ``auto``, resolved by :func:`resolve_device`."""
    parser.add_argument(name, default=AUTO_DEVICE, help=help)


def resolve_device(device: str) -> str:
    """``auto`` -> ``"cuda"`` when ``torch.cuda.is_available()``, else ``"cpu"``;
    any other value is returned as given (torch checks it when it is used).
    Imports torch, so call it after parsing."""
    if device != AUTO_DEVICE:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_command(script: str, main: Callable[[list[str] | None], object],
                argv: list[str] | None, user_errors: Callable[[], tuple[type, ...]]) -> None:
    """Run ``main(argv)``; an exception of a type in ``user_errors()`` (imported only
    when one is raised) is the user's to fix: one ``<program>: error: ...`` line on
    stderr, no traceback, exit status 2. Anything else propagates."""
    try:
        main(argv)
    except Exception as err:  # noqa: BLE001 - re-raised unless it is the user's to fix
        if not isinstance(err, user_errors()):
            raise
        print(f"{program(script)}: error: {err}", file=sys.stderr)
        sys.exit(2)


def write_json(path: str | None, value: object) -> None:
    """Write ``value`` as indented JSON to ``path`` (a benchmark's ``--json``); None: nothing."""
    if path:
        with open(path, "w") as f:
            json.dump(value, f, indent=2)
