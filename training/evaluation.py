"""Stage 5: decode, detokenize and score with sacreBLEU — shared by validation,
``scripts/evaluate.py`` and ``scripts/translate.py``."""

from __future__ import annotations

from typing import Iterable

import sacrebleu
import torch
from torch import nn
from torch.utils.data import DataLoader

from data.batching import ParallelDataset, TokenBudgetBatchSampler, collate_batch
from data.datamodule import encode_sources
from data.tokenizer import Tokenizer
from model.decoding import greedy_decode

__all__ = ["decode_batch", "translate_batches", "translate", "corpus_scores", "source_batches"]


def decode_batch(model: nn.Module, tokenizer: Tokenizer, batch: dict[str, torch.Tensor],
                 max_len_a: float = 1.2, max_len_b: int = 10) -> list[str]:
    """Greedy-decode one batch dict (``src``, ``src_valid_len``) to detokenized strings."""
    out = greedy_decode(model, batch["src"], batch["src_valid_len"], bos_id=tokenizer.bos_id,
                        eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                        max_len_a=max_len_a, max_len_b=max_len_b)
    return tokenizer.decode(out.tolist())


def translate_batches(model: nn.Module, tokenizer: Tokenizer,
                      batches: Iterable[dict[str, torch.Tensor]], num_sentences: int,
                      device: torch.device | str = "cpu", max_len_a: float = 1.2,
                      max_len_b: int = 10) -> list[str]:
    """Decode length-bucketed batches and return hypotheses in the original order.

    Args:
        batches: dicts from :func:`data.batching.collate_batch` (``index``
            gives each sentence's position).
        num_sentences: N, the number of sentences the batches cover.

    Returns:
        ``N`` detokenized hypotheses, in input order.
    """
    hyps: list[str | None] = [None] * num_sentences
    for batch in batches:
        src = batch["src"].to(device)
        src_valid_len = batch["src_valid_len"].to(device)
        texts = decode_batch(model, tokenizer, {"src": src, "src_valid_len": src_valid_len},
                             max_len_a, max_len_b)
        for i, text in zip(batch["index"].tolist(), texts):
            hyps[i] = text
    missing = [i for i, h in enumerate(hyps) if h is None]
    if missing:
        raise RuntimeError(f"{len(missing)} sentences were not decoded (first: {missing[:5]})")
    return hyps  # type: ignore[return-value]


def source_batches(tokenizer: Tokenizer, sentences: list[str], max_len: int,
                   max_tokens: int = 8192) -> tuple[DataLoader, list[bool]]:
    """Length-bucketed batches of raw source sentences.

    Returns:
        The batches and, per sentence, whether it was truncated to ``max_len``.
    """
    src = encode_sources(tokenizer, sentences, max_len)
    truncated = [len(ids) + 1 > max_len for ids in tokenizer.encode(sentences)]
    ds = ParallelDataset(src)
    sampler = TokenBudgetBatchSampler(ds.src_lens(), ds.tgt_lens(), max(max_tokens, max_len),
                                      shuffle=False)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_batch), truncated


@torch.no_grad()
def translate(model: nn.Module, tokenizer: Tokenizer, sentences: list[str], max_len: int,
              device: torch.device | str = "cpu", max_tokens: int = 8192,
              max_len_a: float = 1.2, max_len_b: int = 10) -> list[str]:
    """Translate raw sentences (batched by length) and return them in input order."""
    if not sentences:
        return []
    loader, _ = source_batches(tokenizer, sentences, max_len, max_tokens)
    return translate_batches(model, tokenizer, loader, len(sentences), device,
                             max_len_a, max_len_b)


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (cased, 13a) and chrF of detokenized hypotheses against raw references.

    Returns:
        ``{"bleu", "chrf", "bleu_signature", "chrf_signature", "num_sentences",
        "bleu_details"}``; scores in percent.

    Raises:
        ValueError: if the two lists differ in length.

    Source: Post 2018, "A Call for Clarity in Reporting BLEU Scores" (sacreBLEU).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    bleu_score = bleu.corpus_score(hypotheses, [references])
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {"bleu": bleu_score.score, "chrf": chrf_score.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_details": str(bleu_score), "num_sentences": len(hypotheses)}
