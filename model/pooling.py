"""Attention pooling: soft pooling of N vectors by weights, a scored pooling layer, and
HiT-MAC's tanh attention.

Source: Qiu Xipeng, *Neural Networks and Deep Learning*, pp. 199-203 (attention
pooling); Xu, Zhong & Wang, NeurIPS 2020 (HiT-MAC's ``TanhAttention``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import (SCORING_FUNCTIONS, AdditiveAttention, DotProductAttention, masked_softmax,
                        valid_mask)

__all__ = ["attention_pool", "AttentionPooling", "TanhAttention"]


def attention_pool(values: torch.Tensor, weights: torch.Tensor,
                   valid_lens: torch.Tensor | None = None) -> torch.Tensor:
    """Soft attention pooling: the weighted sum ``sum_n weights[b, n] values[b, n]``.

    With uniform weights ``1/N`` this is the mean of the N vectors (pooling
    without attention); with softmax weights from a scoring function it is
    attention pooling. With ``valid_lens`` the items at positions
    ``>= valid_lens[b]`` are left out of the sum (their weights count as 0;
    the others are not renormalized).

    Shapes:
        values ``(B, N, d)``, weights ``(B, N)``, valid_lens None / ``(B,)``
        -> ``(B, d)``.

    Raises:
        ValueError: if ``weights`` is not ``(B, N)`` for ``values`` ``(B, N, d)``.

    Source: Qiu Xipeng, *Neural Networks and Deep Learning* (China Machine
    Press), §8.2, pp. 199–203 (soft attention); d2l.ai §11.2 (attention pooling).
    """
    if weights.shape != values.shape[:2]:
        raise ValueError(f"attention_pool: weights of shape {tuple(weights.shape)} do not match "
                         f"values of shape {tuple(values.shape)}; weights must be (B, N) = "
                         f"{tuple(values.shape[:2])}")
    if valid_lens is not None:
        weights = weights * valid_mask(valid_lens, 1, values.shape[1], values.device)[:, 0]
    return torch.bmm(weights.unsqueeze(1).to(values.dtype), values).squeeze(1)  # (B, d)


class AttentionPooling(nn.Module):
    """Attention pooling of N vectors into one: a sentence vector from encoder outputs.

    Each vector is scored against a query with the project's scoring
    (``"dot"``: :class:`DotProductAttention`, ``"additive"``:
    :class:`AdditiveAttention`), the scores go through :func:`masked_softmax`
    over ``valid_lens``, and the result is their weighted sum (what
    :func:`attention_pool` computes, here inside the scoring module). Without
    a query a learned query vector is used
    (one per module, as in attention-based sentence encoders).

    Args:
        num_hiddens: d, the size of the pooled vectors.
        scoring: ``"dot"`` or ``"additive"``.
        dropout: dropout on the attention weights.
        query_size: size of passed queries for additive scoring (default d;
            dot scoring needs queries of size d).

    Shapes:
        values ``(B, N, d)``, valid_lens None / ``(B,)``, query None /
        ``(B, q)`` -> ``(B, d)``; ``attention_weights`` ``(B, N)``.

    Raises:
        ValueError: for an unknown ``scoring``.

    Source: Qiu Xipeng, *Neural Networks and Deep Learning*, §8.2, pp. 199–203;
    d2l.ai §11.3 (scoring functions).
    """

    def __init__(self, num_hiddens: int, scoring: str = "dot", dropout: float = 0.0,
                 query_size: int | None = None):
        super().__init__()
        if scoring not in SCORING_FUNCTIONS:
            raise ValueError(f"scoring={scoring!r} is unknown; use one of {SCORING_FUNCTIONS}")
        self.query = nn.Parameter(torch.randn(query_size or num_hiddens) / math.sqrt(num_hiddens))
        self.attention = (DotProductAttention(dropout) if scoring == "dot" else
                          AdditiveAttention(num_hiddens, dropout, key_size=num_hiddens,
                                            query_size=query_size or num_hiddens))
        self.attention_weights: torch.Tensor | None = None

    def forward(self, values: torch.Tensor, valid_lens: torch.Tensor | None = None,
                query: torch.Tensor | None = None) -> torch.Tensor:
        if query is None:
            query = self.query.expand(values.shape[0], -1)  # (B, q)
        pooled = self.attention(query.unsqueeze(1), values, values, valid_lens)  # (B, 1, d)
        self.attention_weights = self.attention.attention_weights[:, 0]  # (B, N)
        return pooled.squeeze(1)  # (B, d)


class TanhAttention(nn.Module):
    """The tanh-projected self-attention layer of HiT-MAC.

    ``Q = tanh(W_q X)``, ``K = tanh(W_k X)``, ``V = tanh(W_v X)``,
    ``z = softmax(Q K^T) V`` and a global feature, the sum of ``z`` over the
    set. ``scaled=False`` is the public code exactly (no ``1/sqrt(d)``);
    ``scaled=True`` divides the scores by ``sqrt(weight_dim)``. With
    ``valid_lens``, padded items are neither attended to (masked keys) nor
    summed into the global feature; their own rows of ``z`` are computed but
    meaningless.

    Args:
        feature_dim: size of each input item.
        weight_dim: size of the projections (and of ``z``).
        scaled: divide the scores by ``sqrt(weight_dim)``.

    Shapes:
        x ``(B, N, feature_dim)``, valid_lens None / ``(B,)`` ->
        ``z`` ``(B, N, weight_dim)``, ``global_feature`` ``(B, weight_dim)``;
        ``attention_weights`` ``(B, N, N)``.

    Raises:
        ValueError: for badly shaped ``valid_lens`` (see :func:`valid_mask`).

    Source: Xu, Zhong & Wang, "Learning Multi-Agent Coordination for Enhancing
    Target Coverage in Directional Sensor Networks", NeurIPS 2020
    (``perception.py``, ``AttentionLayer``).
    """

    def __init__(self, feature_dim: int, weight_dim: int, scaled: bool = False):
        super().__init__()
        self.W_q = nn.Linear(feature_dim, weight_dim)
        self.W_k = nn.Linear(feature_dim, weight_dim)
        self.W_v = nn.Linear(feature_dim, weight_dim)
        self.scaled = scaled
        self.attention_weights: torch.Tensor | None = None
        for layer in (self.W_q, self.W_k, self.W_v):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, valid_lens: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        queries, keys, values = (torch.tanh(W(x)) for W in (self.W_q, self.W_k, self.W_v))
        scores = queries @ keys.transpose(1, 2)  # (B, N, N)
        if self.scaled:
            scores = scores / math.sqrt(queries.shape[-1])
        self.attention_weights = masked_softmax(scores, valid_lens)  # (B, N, N)
        z = self.attention_weights @ values  # (B, N, w)
        if valid_lens is None:
            return z, z.sum(dim=1)
        keep = valid_mask(valid_lens, 1, x.shape[1], x.device)[:, 0]  # (B, N)
        return z, (z * keep.unsqueeze(-1)).sum(dim=1)  # (B, N, w), (B, w)
