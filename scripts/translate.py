"""Translate sentences with a trained checkpoint.

    python scripts/translate.py --ckpt runs/multi30k_cpu/checkpoints/best.ckpt "A man rides a bike."
    python scripts/translate.py --ckpt RUN.ckpt --input sentences.en > sentences.de
    cat sentences.en | python scripts/translate.py --ckpt RUN.ckpt

Writes one line per input line (an empty input line gives an empty output
line), in input order. The checkpoint is self-contained: the model config
and the SentencePiece model are inside it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Iterable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from training.checkpoint import load_translator  # noqa: E402
from training.evaluation import source_batches, translate_batches  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sentences", nargs="*", help="sentences to translate (else --input or stdin)")
    p.add_argument("--ckpt", required=True, help="checkpoint written by scripts/train.py")
    p.add_argument("--input", default=None, help="file with one sentence per line")
    p.add_argument("--batch-size", type=int, default=64, help="sentences decoded together")
    p.add_argument("--max-len-a", type=float, default=None, help="output length limit a*src+b: a")
    p.add_argument("--max-len-b", type=int, default=None, help="output length limit a*src+b: b")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    translator = load_translator(args.ckpt, args.device)
    max_len = translator.model.config.max_len
    a = args.max_len_a if args.max_len_a is not None else translator.hparams["max_len_a"]
    b = args.max_len_b if args.max_len_b is not None else translator.hparams["max_len_b"]
    if args.sentences:
        lines: Iterable[str] = args.sentences
    elif args.input:
        lines = open(args.input, encoding="utf-8", errors="replace")
    else:
        lines = sys.stdin
    for chunk in _chunks(lines, args.batch_size):
        nonempty = [i for i, s in enumerate(chunk) if s.strip()]
        outputs = [""] * len(chunk)
        if nonempty:
            texts = [chunk[i] for i in nonempty]
            loader, truncated = source_batches(translator.tokenizer, texts, max_len)
            for i, cut in zip(nonempty, truncated):
                if cut:
                    print(f"warning: input line of {len(chunk[i])} characters was truncated "
                          f"to the model's {max_len} tokens", file=sys.stderr)
            with torch.no_grad():
                hyps = translate_batches(translator.model, translator.tokenizer, loader,
                                         len(texts), args.device, a, b)
            for i, hyp in zip(nonempty, hyps):
                outputs[i] = hyp
        sys.stdout.write("".join(out + "\n" for out in outputs))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
