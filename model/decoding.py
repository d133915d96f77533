"""Decoding algorithms over :meth:`Transformer.encode` / :meth:`Transformer.decode`."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["greedy_decode"]


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, src_valid_len: torch.Tensor,
                  bos_id: int, eos_id: int, pad_id: int, max_len_a: float = 1.2,
                  max_len_b: int = 10, use_cache: bool = True) -> torch.Tensor:
    """Translate a batch by picking the most probable token at every step.

    All sentences of the batch decode together; the loop is over output
    positions only and stops when every sentence has produced EOS or reached
    its maximum length ``max_len_a * source_length + max_len_b`` (fairseq's
    ``--max-len-a/--max-len-b``), capped by the model's ``max_len``.

    Args:
        model: a module with ``encode(src, src_valid_len)`` and
            ``decode(tgt_in, enc_outputs, src_valid_len[, cache])`` returning
            logits (and ``init_cache()`` when ``use_cache``).
        src: ``(B, S)`` source ids (padded with ``pad_id``).
        src_valid_len: ``(B,)`` source lengths (EOS included).
        bos_id, eos_id, pad_id: special token ids.
        max_len_a, max_len_b: output length limit per sentence.
        use_cache: feed one token per step and reuse earlier keys/values
            (same output as recomputing the whole prefix every step).

    Returns:
        ``(B, L)`` output ids without BOS; after a sentence's EOS (kept) the
        positions are ``pad_id``.

    Source: d2l.ai §10.7.6 (greedy ``predict_step``), batched.
    """
    batch_size = src.shape[0]
    enc_outputs = model.encode(src, src_valid_len)  # (B, S, D)
    max_lens = (src_valid_len.float() * max_len_a + max_len_b).long()  # (B,)
    limit = int(max_lens.max().item())
    model_max = getattr(getattr(model, "config", None), "max_len", None)
    if model_max is not None:
        limit = min(limit, model_max - 1)
        max_lens = max_lens.clamp(max=model_max - 1)
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
    cache = model.init_cache() if use_cache else None
    for step in range(limit):
        if cache is not None:
            logits = model.decode(tokens[:, -1:], enc_outputs, src_valid_len, cache)[:, -1]  # (B, V)
        else:
            logits = model.decode(tokens, enc_outputs, src_valid_len)[:, -1]  # (B, V)
        next_tokens = logits.argmax(-1)  # (B,)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad_id), next_tokens)
        # A sentence at its length limit is closed with EOS.
        next_tokens = torch.where(~finished & (max_lens <= step + 1),
                                  torch.full_like(next_tokens, eos_id), next_tokens)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)  # (B, step + 2)
        finished |= next_tokens == eos_id
        if bool(finished.all()):
            break
    return tokens[:, 1:]
