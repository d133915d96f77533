"""Decoding algorithms over :meth:`Transformer.encode` / :meth:`Transformer.decode`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["greedy_decode", "beam_search", "BeamSearchOutput", "length_penalty", "length_limits"]


def length_limits(src_valid_len: torch.Tensor, max_len_a: float, max_len_b: int,
                  model_max_len: int | None = None) -> torch.Tensor:
    """Per-sentence output limits ``a * S + b`` in tokens, EOS included.

    ``S`` is the source length with its EOS. Capped so that BOS + output fits
    ``model_max_len`` (the positional encoding's length), and at least 1.

    Shapes:
        ``src_valid_len`` ``(B,)`` -> ``(B,)`` int64.

    Source: fairseq's ``--max-len-a/--max-len-b``.
    """
    max_lens = (src_valid_len.float() * max_len_a + max_len_b).long()  # (B,)
    if model_max_len is not None:
        max_lens = max_lens.clamp(max=model_max_len - 1)
    return max_lens.clamp(min=1)


def _length_limits(model: nn.Module, src_valid_len: torch.Tensor, max_len_a: float,
                   max_len_b: int) -> tuple[torch.Tensor, int]:
    """:func:`length_limits` for ``model`` (its ``config.max_len``), and the largest."""
    model_max = getattr(getattr(model, "config", None), "max_len", None)
    max_lens = length_limits(src_valid_len, max_len_a, max_len_b, model_max)
    return max_lens, int(max_lens.max().item())


def _forbid(logits: torch.Tensor, *token_ids: int) -> torch.Tensor:
    """Set the logits of tokens a translation never contains (PAD, BOS) to -inf."""
    logits = logits.float()
    logits[:, list(token_ids)] = float("-inf")
    return logits


@torch.no_grad()
def greedy_decode(model: nn.Module, src: torch.Tensor, src_valid_len: torch.Tensor,
                  bos_id: int, eos_id: int, pad_id: int, max_len_a: float = 1.2,
                  max_len_b: int = 10, use_cache: bool = True) -> torch.Tensor:
    """Translate a batch by picking the most probable token at every step.

    All sentences of the batch decode together; the loop is over output
    positions only and stops when every sentence has produced EOS or reached
    its maximum length ``max_len_a * source_length + max_len_b`` (fairseq's
    ``--max-len-a/--max-len-b``), capped by the model's ``max_len``. PAD and
    BOS are never produced (their logits are masked, as in fairseq).

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
    max_lens, limit = _length_limits(model, src_valid_len, max_len_a, max_len_b)
    tokens = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=src.device)
    cache = model.init_cache() if use_cache else None
    for step in range(limit):
        dec_in = tokens[:, -1:] if cache is not None else tokens  # new token, or whole prefix
        logits = model.decode(dec_in, enc_outputs, src_valid_len, cache)[:, -1]  # (B, V)
        next_tokens = _forbid(logits, pad_id, bos_id).argmax(-1)  # (B,)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, pad_id), next_tokens)
        # A sentence at its length limit is closed with EOS.
        next_tokens = torch.where(~finished & (max_lens <= step + 1),
                                  torch.full_like(next_tokens, eos_id), next_tokens)
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)  # (B, step + 2)
        finished |= next_tokens == eos_id
        if bool(finished.all()):
            break
    return tokens[:, 1:]


#: Length normalizations of beam search (``length_penalty``'s ``style``).
LENPEN_NORMS = ("gnmt", "fairseq")


def length_penalty(lengths: torch.Tensor | float, alpha: float,
                   style: str = "gnmt") -> torch.Tensor | float:
    """Length penalty: GNMT's ``((5 + |Y|) / 6) ** alpha``, or with ``style="fairseq"``
    fairseq's ``|Y| ** alpha`` (its ``--lenpen``, and CTranslate2's).

    A hypothesis is ranked by ``log P(Y | X) / length_penalty(|Y|, alpha)``
    (``|Y|`` counts EOS): ``alpha = 0`` ranks by raw log-probability, which
    favours short outputs; larger ``alpha`` favours longer ones. At the same
    ``alpha``, fairseq's divides by more (``|Y| > (5 + |Y|) / 6`` for ``|Y| > 1``).

    Raises:
        ValueError: for a ``style`` not in :data:`LENPEN_NORMS`.

    Source: Wu et al. 2016 (GNMT), eq. 14; fairseq ``SequenceGenerator``
    (``eos_scores /= (step + 1) ** len_penalty``).
    """
    if style == "fairseq":
        return lengths ** alpha
    if style != "gnmt":
        raise ValueError(f"length normalization {style!r} is unknown; use one of "
                         f"{', '.join(LENPEN_NORMS)}")
    return ((5.0 + lengths) / 6.0) ** alpha


@dataclass
class BeamSearchOutput:
    """The n-best hypotheses of a batch.

    Attributes:
        tokens: ``(B, N, L)`` output ids without BOS; each ends with EOS, then PAD.
        scores: ``(B, N)`` length-normalized log-probabilities, best first.
    """

    tokens: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def beam_search(model: nn.Module, src: torch.Tensor, src_valid_len: torch.Tensor,
                bos_id: int, eos_id: int, pad_id: int, beam_size: int = 5,
                max_len_a: float = 1.2, max_len_b: int = 10, alpha: float = 1.0,
                nbest: int = 1, use_cache: bool = True,
                lenpen_norm: str = "gnmt") -> BeamSearchOutput:
    """Batched beam search: every beam of every sentence in one computation per step.

    Each step scores the ``beam_size`` extensions of all ``B * beam_size``
    beams at once and keeps, per sentence, the ``2 * beam_size`` best
    candidates. Those ending in EOS *and ranked within the first
    ``beam_size``* become finished hypotheses (scored with
    :func:`length_penalty`); the best ``beam_size`` others continue (fairseq's
    rule, which makes ``beam_size=1`` exactly greedy decoding). A sentence
    is done when it holds ``beam_size`` finished hypotheses; a beam reaching
    ``max_len_a * S + max_len_b`` tokens is closed with EOS. The loop ends
    when every sentence is done.

    Args:
        model: ``encode``/``decode``/``init_cache`` as for :func:`greedy_decode`.
        src: ``(B, S)`` source ids; ``src_valid_len``: ``(B,)``.
        bos_id, eos_id, pad_id: special ids.
        beam_size: K, beams kept per sentence.
        max_len_a, max_len_b: output length limit per sentence (EOS included).
        alpha: length-penalty exponent (0 disables normalization).
        lenpen_norm: ``"gnmt"`` or ``"fairseq"`` (see :func:`length_penalty`).
        nbest: N <= K hypotheses returned per sentence.
        use_cache: incremental decoding with a key/value cache.

    Returns:
        :class:`BeamSearchOutput` with ``(B, N, L)`` tokens and ``(B, N)`` scores.

    Raises:
        ValueError: if ``nbest > beam_size`` or ``beam_size < 1``, or for an
            unknown ``lenpen_norm``.

    Source: Sutskever et al. 2014 (beam search for NMT); Wu et al. 2016
    (length penalty); fairseq ``SequenceGenerator`` (2K candidates, EOS rule).
    """
    if beam_size < 1 or not 1 <= nbest <= beam_size:
        raise ValueError(f"need 1 <= nbest ({nbest}) <= beam_size ({beam_size})")
    length_penalty(1.0, alpha, lenpen_norm)  # an unknown normalization fails before decoding
    B, K, device = src.shape[0], beam_size, src.device
    max_lens, limit = _length_limits(model, src_valid_len, max_len_a, max_len_b)
    enc_outputs = model.encode(src, src_valid_len).repeat_interleave(K, dim=0)  # (B*K, S, D)
    enc_valid_len = src_valid_len.repeat_interleave(K)  # (B*K,)
    beam_max_lens = max_lens.repeat_interleave(K)  # (B*K,)

    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # (B*K, 1 + t)
    beam_scores = torch.full((B, K), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0  # all beams start identical: expand only the first
    finished_scores = torch.full((B, K), float("-inf"), device=device)  # (B, K)
    finished_tokens = torch.full((B, K, limit), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rows = torch.arange(B, device=device)[:, None]  # (B, 1)
    cache = model.init_cache() if use_cache else None

    for step in range(limit):
        dec_in = tokens[:, -1:] if cache is not None else tokens
        logits = model.decode(dec_in, enc_outputs, enc_valid_len, cache)[:, -1]  # (B*K, V)
        log_probs = F.log_softmax(_forbid(logits, pad_id, bos_id), dim=-1)  # (B*K, V)
        at_limit = beam_max_lens <= step + 1  # (B*K,) must end now
        log_probs[at_limit] = torch.where(
            torch.arange(log_probs.shape[1], device=device) == eos_id,
            log_probs[at_limit], torch.tensor(float("-inf"), device=device))
        V = log_probs.shape[1]
        candidates = (beam_scores.reshape(B * K, 1) + log_probs).reshape(B, K * V)
        top_scores, top_index = candidates.topk(2 * K, dim=1)  # (B, 2K)
        origin, token = top_index // V, top_index % V  # (B, 2K) beam of origin, new token
        is_eos = token == eos_id

        # Finished hypotheses: EOS candidates among the first K, of live sentences.
        final = is_eos & torch.isfinite(top_scores) & ~done[:, None]
        final[:, K:] = False
        history = tokens[:, 1:].reshape(B, K, step)  # (B, K, t)
        cand_tokens = torch.full((B, 2 * K, limit), pad_id, dtype=torch.long, device=device)
        cand_tokens[:, :, :step] = history[rows, origin]  # (B, 2K, t)
        cand_tokens[:, :, step] = token
        penalty = length_penalty(step + 1.0, alpha, lenpen_norm)
        cand_scores = torch.where(final, top_scores / penalty,
                                  torch.tensor(float("-inf"), device=device))
        pool_scores = torch.cat([finished_scores, cand_scores], dim=1)  # (B, 3K)
        pool_tokens = torch.cat([finished_tokens, cand_tokens], dim=1)  # (B, 3K, L)
        finished_scores, keep = pool_scores.topk(K, dim=1)  # (B, K)
        finished_tokens = pool_tokens[rows, keep]  # (B, K, L)
        done |= torch.isfinite(finished_scores).all(dim=1)
        if bool(done.all()):
            break

        # Live beams: the best K candidates that did not end.
        beam_scores, pick = top_scores.masked_fill(is_eos, float("-inf")).topk(K, dim=1)
        flat = (rows * K + origin.gather(1, pick)).reshape(-1)  # (B*K,) rows to keep
        tokens = torch.cat([tokens[flat], token.gather(1, pick).reshape(-1, 1)], dim=1)
        if cache is not None:
            cache.reorder(flat)

    width = int((finished_tokens != pad_id).sum(-1).max().item())
    return BeamSearchOutput(finished_tokens[:, :nbest, :width], finished_scores[:, :nbest])
