"""Build a config's tokenizer and token cache once, before training (like ``fairseq-preprocess``).

    python scripts/prepare_data.py --config configs/multi30k_cpu.yaml
    python scripts/prepare_data.py --config configs/wmt14_en_de.yaml --data.cache_dir /shared/cache
    python scripts/prepare_data.py --config configs/multi30k_cpu.yaml --verify

Reads only the config's ``data:`` section (``--data.KEY VALUE`` overrides it,
as for ``scripts/train.py``), trains the SentencePiece model on the training
split and writes every split's ids into the memory-mapped cache under
``data.cache_dir/tokenized/``. ``train.py`` with the same data settings then
only reads it; a multi-node run needs it built first (on a filesystem every
node sees), so the nodes never write the same files. ``--verify`` re-reads the
whole cache and checks it against the checksums written with it. Needs no GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .common import make_parser, program

SCRIPT = "prepare_data.py"


def parse_cli(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """``--config``, ``--verify`` and the remaining ``--data.*`` overrides."""
    parser = make_parser(SCRIPT, __doc__)
    parser.add_argument("--config", required=True,
                        help="training config (YAML); only its data: section is read")
    parser.add_argument("--verify", action="store_true",
                        help="also re-read the whole cache and compare its checksums")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Prepare and print the summary; returns the cache's manifest."""
    args, overrides = parse_cli(argv)
    from data.cache import CacheDamaged
    from data.corpus import CorpusError
    from data.prepare import datamodule_from_config, format_summary, prepare

    PROG = program(SCRIPT)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dm = datamodule_from_config(args.config, overrides, PROG)
        manifest = prepare(dm, verify=args.verify)
    except argparse.ArgumentError as err:
        message = " ".join(str(err).split())  # jsonargparse's type errors span lines
        print(f"{PROG}: error: {message}; see --help and the data: keys of the config",
              file=sys.stderr)
        sys.exit(2)
    except (CorpusError, CacheDamaged) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(dm, manifest))
    if args.verify:
        print("verified: every array matches the checksum written with it")
    return manifest


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/prepare_data.py`` and the installed entry point call it)."""
    main(argv)
