"""The commands' inference options (engine, threads, compute type, length-penalty
style) and numeric option checks: one line naming the option, exit status 2.

Imports neither torch nor CTranslate2, so a command's ``--help`` stays fast."""

from __future__ import annotations

import argparse

__all__ = ["ENGINES", "LENPEN_NORMS", "LENPEN_STYLES", "QUANTIZATIONS", "add_engine_arguments",
           "add_lenpen_norm_argument", "engine_options", "require_at_least"]

#: Inference engines of ``load_translator`` (``--engine``).
ENGINES = ("auto", "pytorch", "ctranslate2")
#: How the length penalty is applied with CTranslate2's beam search (see :mod:`inference.ct2`).
LENPEN_STYLES = ("gnmt", "ctranslate2")
#: Length normalizations of beam search (``--lenpen-norm``; ``model.decoding.LENPEN_NORMS``).
LENPEN_NORMS = ("gnmt", "fairseq")
#: Weight types ``export_ctranslate2`` accepts (``--quantization``).
QUANTIZATIONS = ("float32", "int8", "int16", "bfloat16", "float16", "int8_float32")


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


def add_engine_arguments(parser) -> None:
    """Add ``--engine``, ``--threads``, ``--compute-type`` and ``--lenpen-style``
    to a script's ``argparse`` parser (translate.py, evaluate.py)."""
    group = parser.add_argument_group("inference engine")
    group.add_argument("--engine", default="auto", choices=ENGINES,
                       help="auto: PyTorch for a .ckpt file, CTranslate2 for a directory "
                            "written by scripts/export_ctranslate2.py")
    group.add_argument("--threads", type=int, default=None,
                       help="CTranslate2 CPU threads (default: torch.get_num_threads())")
    group.add_argument("--compute-type", default="default",
                       help="CTranslate2 compute type: default (the exported weights), int8, "
                            "int8_float32, int16, float32 ...")
    group.add_argument("--lenpen-style", default="gnmt", choices=LENPEN_STYLES,
                       help="CTranslate2 beam search: gnmt re-ranks its n-best with our GNMT "
                            "length penalty ((5+L)/6)^alpha; ctranslate2 uses its own L^alpha")


def engine_options(parser, args) -> dict:
    """The ``load_translator`` keyword arguments of :func:`add_engine_arguments`'s
    options; a bad value ends the script with ``parser.error`` (exit status 2)."""
    require_at_least(parser, args, threads=1)
    return {"engine": args.engine, "threads": args.threads, "compute_type": args.compute_type,
            "lenpen_style": args.lenpen_style}


def add_lenpen_norm_argument(parser, several: bool = False) -> None:
    """Add ``--lenpen-norm`` (how ``--lenpen`` normalizes beam scores) to a parser.

    With ``several``, the option takes one or more values (a list; evaluate.py's
    ``--select-on`` grid), else one (a string); None when not given.
    """
    parser.add_argument("--lenpen-norm", default=None, choices=LENPEN_NORMS,
                        nargs="+" if several else None,
                        help="length normalization of beam search: gnmt ((5+L)/6)^alpha, the "
                             "default, or fairseq L^alpha (fairseq's --lenpen)"
                             + ("; several with --select-on" if several else ""))
