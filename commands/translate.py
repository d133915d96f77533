r"""Translate sentences with a trained checkpoint.

    python scripts/translate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt "A man rides a bike."
    python scripts/translate.py --ckpt RUN.ckpt --beam 5 --input sentences.en > sentences.de
    cat sentences.en | python scripts/translate.py --ckpt RUN.ckpt     # streams, batch by batch
    python scripts/translate.py --ckpt RUN.ckpt                 # interactive: a line, a translation

Writes one line per input line, in input order: a line with nothing to
translate (empty, whitespace-only, or only characters the tokenizer drops, such
as most control characters) gives an empty output line, so line counts always
match. Only "\n" ends a line (a "\r" before it is dropped), as ``wc -l``
counts them; ``\r``, ``\x0c``, ``\x85``, ``\u2028`` ... inside a line stay in it.
Input is read as UTF-8; bytes that are not (a binary file, another encoding)
become U+FFFD, with one warning on stderr naming the first such line. With
``--nbest N`` (N > 1) each input line gives N lines ``index ||| translation |||
score`` (the Moses n-best format). Reading stdin, each batch of
``--batch-size`` lines is written as soon as it is translated; from a
terminal, every line is translated as soon as it is entered. An input longer
than the model's maximum length is truncated, with a warning on stderr. The
checkpoint is self-contained: the model config and the SentencePiece model are
inside it. A CTranslate2 model directory (``scripts/export_ctranslate2.py``)
translates the same way with the CTranslate2 engine (``--threads``,
``--compute-type int8``; see ``--lenpen-style`` for the length penalty):

    python scripts/translate.py --ckpt runs/multi30k_cpu/ct2 --beam 5 --input sentences.en
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from inference.options import add_engine_arguments, add_lenpen_norm_argument, engine_options

from .common import add_device_argument, make_parser, resolve_device, run_command

SCRIPT = "translate.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (``--help`` lists them); a bad value exits with status 2."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("sentences", nargs="*", help="sentences to translate (else --input or stdin)")
    p.add_argument("--ckpt", "--model", dest="ckpt", required=True,
                   help="checkpoint written by scripts/train.py, or a CTranslate2 model "
                        "directory written by scripts/export_ctranslate2.py")
    p.add_argument("--input", default=None, help="file with one sentence per line")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size; 1 is greedy (default: the checkpoint's beam_size)")
    p.add_argument("--nbest", type=int, default=1, help="hypotheses per input (<= --beam)")
    p.add_argument("--lenpen", type=float, default=None,
                   help="length-penalty exponent alpha (default: the checkpoint's)")
    p.add_argument("--max-len-a", type=float, default=None, help="output length limit a*src+b: a")
    p.add_argument("--max-len-b", type=int, default=None, help="output length limit a*src+b: b")
    p.add_argument("--batch-size", type=int, default=64, help="input lines decoded together")
    p.add_argument("--attention-plot", default=None, metavar="PATH",
                   help="write a heatmap (PNG) of the encoder-decoder attention of the first "
                        "translated sentence, subwords as tick labels")
    add_lenpen_norm_argument(p)
    add_device_argument(p)
    add_engine_arguments(p)
    args = p.parse_args(argv)
    args.engine_options = engine_options(p, args)
    if args.beam is not None and args.beam < 1:
        p.error(f"--beam must be at least 1, got {args.beam}")
    if args.nbest < 1:
        p.error(f"--nbest must be at least 1, got {args.nbest}")
    if args.beam is not None and args.nbest > args.beam:
        p.error(f"--nbest {args.nbest} is larger than --beam {args.beam}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.attention_plot is not None:
        folder = os.path.dirname(os.path.abspath(args.attention_plot))
        if not os.path.isdir(folder):
            p.error(f"--attention-plot {args.attention_plot}: folder {folder} does not exist; "
                    f"create it first or write the plot elsewhere")
    if args.input is not None and not os.path.isfile(args.input):
        p.error(f"--input {args.input} is not a file; pass a text file with one sentence "
                f"per line, or omit --input to read stdin")
    return args


def main(argv: list[str] | None = None) -> None:
    """Translate as the module docstring says; raises ``CheckpointError``,
    ``CorpusError`` or ``DecodingError`` for what the user must fix."""
    args = parse_args(argv)
    from data.reading import open_text_input
    from inference.checkpoint import CheckpointError, load_translator
    from inference.translation import decode_lines, write_translations

    args.device = resolve_device(args.device)
    translator = load_translator(args.ckpt, args.device, **args.engine_options)
    if args.attention_plot and translator.model is None:
        raise CheckpointError(f"--attention-plot needs the PyTorch model, but {args.ckpt} is a "
                              f"CTranslate2 model; pass the .ckpt it was exported from")
    beam = args.beam if args.beam is not None else max(translator.decoding().beam_size,
                                                       args.nbest)
    decoding = translator.decoding(beam_size=beam, alpha=args.lenpen, nbest=args.nbest,
                                   max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                                   lenpen_norm=args.lenpen_norm)
    batch_size = args.batch_size
    with contextlib.ExitStack() as stack:
        if args.sentences:
            # os.fsencode restores the bytes of arguments that were not UTF-8.
            lines = decode_lines(map(os.fsencode, args.sentences), "the command line")
        elif args.input:
            lines = decode_lines(stack.enter_context(open_text_input(args.input)), args.input)
        else:
            lines = decode_lines(sys.stdin.buffer, "standard input")
            if sys.stdin.isatty():
                batch_size = 1  # interactive: answer every line at once
        write_translations(translator, lines, decoding, batch_size, args.device,
                           args.attention_plot)


def _user_errors() -> tuple[type, ...]:
    from data.reading import CorpusError
    from inference.checkpoint import CheckpointError
    from inference.decoding import DecodingError

    return CheckpointError, CorpusError, DecodingError


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/translate.py`` and the installed entry point call it)."""
    run_command(SCRIPT, main, argv, _user_errors)
