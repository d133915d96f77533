"""Stage 5: decoding drivers (batches in, detokenized hypotheses out) — shared by
validation, ``scripts/evaluate.py`` and ``scripts/translate.py``. Plain PyTorch:
no Lightning, no metrics (those are in :mod:`evaluation.metrics`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from data.batching import (ParallelDataset, TokenBudgetBatchSampler, collate_batch,
                           encode_sources)
from data.tokenizer import Tokenizer
from model.decoding import LENPEN_NORMS, beam_search, greedy_decode

__all__ = ["DecodingConfig", "DecodingError", "length_limit_problem", "Hypothesis",
           "decode_batch", "translate_batches", "translate", "source_batches"]


@dataclass
class DecodingConfig:
    """How to decode: the settings shared by validation, evaluation and translation.

    Attributes:
        beam_size: beams per sentence; 1 is greedy decoding.
        alpha: length-penalty exponent (beam search only).
        lenpen_norm: how ``alpha`` normalizes: ``"gnmt"`` (``((5 + |Y|) / 6) ** alpha``)
            or ``"fairseq"`` (``|Y| ** alpha``); :func:`model.decoding.length_penalty`.
        max_len_a: output length limit ``a * source_length + b`` (a).
        max_len_b: output length limit (b).
        nbest: hypotheses returned per sentence (<= ``beam_size``).
        use_cache: incremental decoding with a key/value cache.
    """

    beam_size: int = 1
    alpha: float = 1.0
    lenpen_norm: str = "gnmt"
    max_len_a: float = 1.2
    max_len_b: int = 10
    nbest: int = 1
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.lenpen_norm not in LENPEN_NORMS:
            raise DecodingError(f"length normalization {self.lenpen_norm!r} is unknown; use one "
                                f"of {', '.join(LENPEN_NORMS)} (--lenpen-norm)")

    def describe(self) -> str:
        """``"greedy"`` or ``"beam 5 lenpen 1.6"``, as reports print it."""
        if self.beam_size == 1:
            return "greedy"
        norm = "" if self.lenpen_norm == "gnmt" else f" ({self.lenpen_norm})"
        return f"beam {self.beam_size} lenpen {self.alpha}{norm}"


class DecodingError(ValueError):
    """Decoding settings that cannot work (the message names the options and the fix)."""


def length_limit_problem(max_len_a: float, max_len_b: int, option: str = "--max-len") -> str | None:
    """Why ``max_len_a * S + max_len_b`` (EOS included) is no usable output limit,
    or None if it is one.

    The shortest source with something to translate has ``S = 2`` tokens
    (one piece and EOS); its limit must leave room for a token before EOS,
    else every output would be empty.

    Args:
        option: how the message names the settings (``"--max-len"`` for the
            scripts' ``--max-len-a/-b``, ``"model.max_len"`` for the config keys).
    """
    a, b = f"{option}-a" if option.startswith("--") else f"{option}_a", \
        f"{option}-b" if option.startswith("--") else f"{option}_b"
    if max_len_a < 0 or max_len_b < 0:
        return (f"{a}={max_len_a} {b}={max_len_b}: both must be >= 0 (the output limit is "
                f"a * source_length + b tokens); e.g. {a}=1.2 {b}=10")
    if int(2 * max_len_a + max_len_b) < 2:
        return (f"{a}={max_len_a} {b}={max_len_b}: a 2-token source would get an output limit "
                f"of {int(2 * max_len_a + max_len_b)} token (EOS included), so translations "
                f"would be empty; make 2 * a + b at least 2, e.g. {a}=1.2 {b}=10")
    return None


class Hypothesis(NamedTuple):
    """One translation: detokenized text, its length-normalized log-probability
    (None for greedy decoding), and its output ids (EOS included)."""

    text: str
    score: float | None
    ids: list[int]


def decode_batch(model: nn.Module, tokenizer: Tokenizer, batch: dict[str, torch.Tensor],
                 decoding: DecodingConfig | None = None) -> list[list[Hypothesis]]:
    """Decode one batch dict (``src`` ``(B, S)``, ``src_valid_len`` ``(B,)``).

    Returns:
        Per sentence, its ``decoding.nbest`` hypotheses, best first.
    """
    d = decoding or DecodingConfig()
    special = dict(bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
    if d.beam_size == 1:
        out = greedy_decode(model, batch["src"], batch["src_valid_len"], **special,
                            max_len_a=d.max_len_a, max_len_b=d.max_len_b,
                            use_cache=d.use_cache)
        ids = [_until_eos(row, tokenizer.eos_id) for row in out.tolist()]
        return [[Hypothesis(text, None, row)] for text, row in zip(tokenizer.decode(ids), ids)]
    result = beam_search(model, batch["src"], batch["src_valid_len"], **special,
                         beam_size=d.beam_size, max_len_a=d.max_len_a, max_len_b=d.max_len_b,
                         alpha=d.alpha, nbest=d.nbest, use_cache=d.use_cache,
                         lenpen_norm=d.lenpen_norm)
    B, N, L = result.tokens.shape
    ids = [_until_eos(row, tokenizer.eos_id) for row in result.tokens.reshape(B * N, L).tolist()]
    hyps = [Hypothesis(text, score, row) for text, score, row in
            zip(tokenizer.decode(ids), result.scores.reshape(-1).tolist(), ids)]
    return [hyps[i * N:(i + 1) * N] for i in range(B)]


def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    """Ids up to and including the first EOS (padding after it dropped)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def translate_batches(model: nn.Module, tokenizer: Tokenizer,
                      batches: Iterable[dict[str, torch.Tensor]], num_sentences: int,
                      device: torch.device | str = "cpu",
                      decoding: DecodingConfig | None = None) -> list[list[Hypothesis]]:
    """Decode length-bucketed batches and return hypotheses in the original order.

    Args:
        batches: dicts from :func:`data.batching.collate_batch` (``index``
            gives each sentence's position).
        num_sentences: N, the number of sentences the batches cover.

    Returns:
        ``N`` lists of ``decoding.nbest`` hypotheses, in input order.

    Raises:
        RuntimeError: if the batches did not cover every index.
    """
    hyps: list[list[Hypothesis] | None] = [None] * num_sentences
    for batch in batches:
        on_device = {"src": batch["src"].to(device),
                     "src_valid_len": batch["src_valid_len"].to(device)}
        for i, nbest in zip(batch["index"].tolist(), decode_batch(model, tokenizer, on_device,
                                                                  decoding)):
            hyps[i] = nbest
    missing = [i for i, h in enumerate(hyps) if h is None]
    if missing:
        raise RuntimeError(f"{len(missing)} sentences were not decoded (first: {missing[:5]})")
    return hyps  # type: ignore[return-value]


def source_batches(tokenizer: Tokenizer, sentences: list[str] | None, max_len: int,
                   max_tokens: int = 8192, ids: list[list[int]] | None = None
                   ) -> tuple[DataLoader, list[bool]]:
    """Length-bucketed batches of raw source sentences.

    ``ids``: ``tokenizer.encode(sentences)`` where the caller has it already
    (``sentences`` may then be None).

    Returns:
        The batches and, per sentence, whether it was truncated to ``max_len``.
    """
    ids = tokenizer.encode(sentences) if ids is None else ids
    src = encode_sources(tokenizer, sentences, max_len, ids)
    truncated = [len(seq) + 1 > max_len for seq in ids]
    ds = ParallelDataset(src)
    sampler = TokenBudgetBatchSampler(ds.src_lens(), ds.tgt_lens(), max(max_tokens, max_len),
                                      shuffle=False)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch), truncated


@torch.no_grad()
def translate(model: nn.Module, tokenizer: Tokenizer, sentences: list[str], max_len: int,
              device: torch.device | str = "cpu", max_tokens: int = 8192,
              decoding: DecodingConfig | None = None) -> list[str]:
    """Translate raw sentences (batched by length); the best hypothesis of each, in order."""
    if not sentences:
        return []
    loader, _ = source_batches(tokenizer, sentences, max_len, max_tokens)
    return [nbest[0].text for nbest in translate_batches(model, tokenizer, loader, len(sentences),
                                                    device, decoding)]
