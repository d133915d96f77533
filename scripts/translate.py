r"""Translate sentences with a trained checkpoint.

    python scripts/translate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt "A man rides a bike."
    python scripts/translate.py --ckpt RUN.ckpt --beam 5 --input sentences.en > sentences.de
    cat sentences.en | python scripts/translate.py --ckpt RUN.ckpt     # streams, batch by batch
    python scripts/translate.py --ckpt RUN.ckpt                        # interactive: a line, a translation

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
from typing import Iterable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training.checkpoint import CheckpointError, Translator, load_translator  # noqa: E402
from training.ct2 import add_engine_arguments, engine_options  # noqa: E402
from training.evaluation import DecodingConfig, DecodingError, Hypothesis, source_batches  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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


def decode_lines(raw_lines: Iterable[bytes], source: str) -> Iterator[str]:
    r"""Decode raw input lines as UTF-8, never failing.

    ``raw_lines`` are lines as iterating a binary stream yields them (split on
    ``b"\n"`` only, unlike ``str.splitlines``, which also splits at ``\r``,
    ``\x0b``, ``\x0c``, ``\x1c``-``\x1e``, ``\x85``, ``\u2028`` and
    ``\u2029``), or command-line arguments as bytes. Bytes that are not UTF-8
    become U+FFFD; the first line that holds any is named in one warning on
    stderr (1-based, counted like the truncation warnings).
    """
    warned = False
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("utf-8", errors="replace")
            if not warned:
                print(f"warning: {source} is not valid UTF-8 (first at input line {number}); "
                      f"undecodable bytes are replaced by U+FFFD", file=sys.stderr)
                warned = True
        yield line


def read_batches(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Group input lines (newlines stripped) into lists of at most ``size``."""
    batch: list[str] = []
    for line in lines:
        batch.append(line.rstrip("\r\n"))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def translate_lines(translator: Translator, lines: list[str], decoding: DecodingConfig,
                    device: str, first_line: int = 0) -> list[list[Hypothesis] | None]:
    """Translate a batch of raw lines; None for lines with nothing to translate
    (no SentencePiece pieces: empty, whitespace-only or only dropped characters).

    Over-long lines are truncated to the model's ``max_len`` tokens with a
    warning on stderr naming the input line (1-based, counted from the start
    of the input).
    """
    ids = translator.tokenizer.encode(lines)
    nonempty = [i for i, seq in enumerate(ids) if seq]
    outputs: list[list[Hypothesis] | None] = [None] * len(lines)
    if not nonempty:
        return outputs
    max_len = translator.max_len
    for i in nonempty:
        if len(ids[i]) + 1 > max_len:
            print(f"warning: input line {first_line + i + 1} ({len(lines[i])} characters) is "
                  f"longer than the model's {max_len} tokens; translating its first "
                  f"{max_len - 1} tokens", file=sys.stderr)
    hyps = translator.translate_ids([ids[i] for i in nonempty], decoding, device)
    for i, nbest in zip(nonempty, hyps):
        outputs[i] = nbest
    return outputs


@torch.no_grad()
def plot_cross_attention(translator: Translator, sentence: str, hypothesis: Hypothesis,
                         path: str, device: str) -> None:
    """Heatmap of the last decoder block's encoder–decoder attention (mean over
    heads) while the model reads ``hypothesis``, with subword tick labels."""
    from training.plotting import show_heatmaps

    model, tokenizer = translator.model, translator.tokenizer
    loader, _ = source_batches(tokenizer, [sentence], model.config.max_len)
    batch = next(iter(loader))
    src, src_valid_len = batch["src"].to(device), batch["src_valid_len"].to(device)
    tgt_in = torch.tensor([[tokenizer.bos_id] + hypothesis.ids[:-1]], device=device)
    model.keep_attention_weights(True)
    try:
        model.decode(tgt_in, model.encode(src, src_valid_len), src_valid_len)
        weights = model.decoder.blks[-1].attention2.attention.attention_weights  # (1, H, T, S)
    finally:
        model.keep_attention_weights(False)
    show_heatmaps(weights.mean(dim=1, keepdim=True), xlabel="source subwords",
                  ylabel="output subwords", titles=["encoder-decoder attention (last block)"],
                  figsize=(max(4.0, 0.35 * src.shape[1]), max(4.0, 0.35 * tgt_in.shape[1])),
                  xticklabels=tokenizer.pieces(src[0].tolist()),
                  yticklabels=tokenizer.pieces(hypothesis.ids), path=path)
    print(f"wrote attention heatmap of {sentence!r} to {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    translator = load_translator(args.ckpt, args.device, **args.engine_options)
    if args.attention_plot and translator.model is None:
        raise CheckpointError(f"--attention-plot needs the PyTorch model, but {args.ckpt} is a "
                              f"CTranslate2 model; pass the .ckpt it was exported from")
    beam = args.beam if args.beam is not None else max(translator.decoding().beam_size,
                                                       args.nbest)
    decoding = translator.decoding(beam_size=beam, alpha=args.lenpen, nbest=args.nbest,
                                   max_len_a=args.max_len_a, max_len_b=args.max_len_b)
    batch_size = args.batch_size
    with contextlib.ExitStack() as stack:
        if args.sentences:
            # os.fsencode restores the bytes of arguments that were not UTF-8.
            lines = decode_lines(map(os.fsencode, args.sentences), "the command line")
        elif args.input:
            lines = decode_lines(stack.enter_context(open(args.input, "rb")), args.input)
        else:
            lines = decode_lines(sys.stdin.buffer, "standard input")
            if sys.stdin.isatty():
                batch_size = 1  # interactive: answer every line at once
        write_translations(translator, lines, decoding, batch_size, args.device,
                           args.attention_plot)


def write_translations(translator: Translator, lines: Iterable[str], decoding: DecodingConfig,
                       batch_size: int, device: str, attention_plot: str | None) -> None:
    """Translate ``lines`` batch by batch and write them to stdout, flushing each batch;
    plot the first translated sentence's attention to ``attention_plot`` if set."""
    count = 0
    plotted = attention_plot is None
    for batch in read_batches(lines, batch_size):
        outputs = translate_lines(translator, batch, decoding, device, count)
        for offset, (line, nbest) in enumerate(zip(batch, outputs)):
            if nbest is None:
                sys.stdout.write("\n" if decoding.nbest == 1 else "")
            elif decoding.nbest == 1:
                sys.stdout.write(nbest[0].text + "\n")
            else:
                for hyp in nbest:
                    sys.stdout.write(f"{count + offset} ||| {hyp.text} ||| {hyp.score:.4f}\n")
            if not plotted and nbest is not None:
                plot_cross_attention(translator, line, nbest[0], attention_plot, device)
                plotted = True
        sys.stdout.flush()
        count += len(batch)


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, DecodingError) as err:
        # A wrong file is the user's to fix: say what is wrong, without a traceback.
        print(f"translate.py: error: {err}", file=sys.stderr)
        sys.exit(2)
