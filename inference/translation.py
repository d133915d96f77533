"""Stage 7: translate raw text lines — one output line per input line, batch
by batch, with truncation and encoding warnings on stderr, Moses n-best
lines, and the encoder–decoder attention heatmap. ``scripts/translate.py`` is
its command line; its docstring describes the behaviour on bad input.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator

import torch

from .decoding import DecodingConfig, Hypothesis, source_batches
from .translator import Translator

__all__ = ["decode_lines", "read_batches", "translate_lines", "plot_cross_attention",
           "write_translations"]


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
    """Heatmap of the encoder–decoder attention while the model reads
    ``hypothesis``, with subword tick labels: a Transformer's last decoder
    block (mean over heads), or the GRU decoder's additive attention.

    Shapes: the plotted matrix is ``(T, S)``: output subwords x source subwords.
    """
    from .plotting import show_heatmaps

    model, tokenizer = translator.model, translator.tokenizer
    loader, _ = source_batches(tokenizer, [sentence], model.config.max_len)
    batch = next(iter(loader))
    src, src_valid_len = batch["src"].to(device), batch["src_valid_len"].to(device)
    tgt_in = torch.tensor([[tokenizer.bos_id] + hypothesis.ids[:-1]], device=device)
    model.keep_attention_weights(True)
    try:
        model.decode(tgt_in, model.encode(src, src_valid_len), src_valid_len)
        if hasattr(model.decoder, "blks"):  # Transformer: last block, mean over heads
            weights = model.decoder.blks[-1].attention2.attention.attention_weights.mean(1)
            title = "encoder-decoder attention (last block)"
        else:  # GRU decoder: its additive attention at every step
            weights, title = model.decoder.attention_weights, "additive attention (GRU decoder)"
    finally:
        model.keep_attention_weights(False)
    show_heatmaps(weights[:, None], xlabel="source subwords",  # (1, 1, T, S)
                  ylabel="output subwords", titles=[title],
                  figsize=(max(4.0, 0.35 * src.shape[1]), max(4.0, 0.35 * tgt_in.shape[1])),
                  xticklabels=tokenizer.pieces(src[0].tolist()),
                  yticklabels=tokenizer.pieces(hypothesis.ids), path=path)
    print(f"wrote attention heatmap of {sentence!r} to {path}", file=sys.stderr)


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
