"""Transformer encoder: encoder blocks and the encoder stack (the FFN and
residual + LayerNorm blocks it shares with the decoder are in ``blocks.py``).

Source: Vaswani et al. 2017, §3.1 and §3.3; d2l.ai §11.7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .attention import MultiHeadAttention
from .blocks import AddNorm, PositionWiseFFN
from .positional_encoding import PositionalEncoding

if TYPE_CHECKING:
    from .config import TransformerConfig

__all__ = ["TransformerEncoderBlock", "TransformerEncoder"]


class TransformerEncoderBlock(nn.Module):
    """Self-attention and FFN, each wrapped in :class:`AddNorm`.

    Args:
        num_hiddens, ffn_num_hiddens, num_heads, dropout: sizes (see
            :class:`~model.config.TransformerConfig`).
        attention: ``"dot"`` or ``"additive"`` scoring.
        norm_first: pre-norm when True.
        bias: biases in the attention projections.
        attention_dropout: dropout on attention weights (None: ``dropout``, as d2l.ai).
        activation_dropout: dropout inside the FFN.

    Shapes:
        ``X`` ``(B, S, D)``, ``valid_lens`` ``(B,)`` -> ``(B, S, D)``.

    Source: Vaswani et al. 2017, §3.1; d2l.ai §11.7.3.
    """

    def __init__(self, num_hiddens: int, ffn_num_hiddens: int, num_heads: int, dropout: float,
                 attention: str = "dot", norm_first: bool = False, bias: bool = False,
                 attention_dropout: float | None = None, activation_dropout: float = 0.0):
        super().__init__()
        attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.attention = MultiHeadAttention(num_hiddens, num_heads, attention_dropout,
                                            bias=bias, scoring=attention)
        self.addnorm1 = AddNorm(num_hiddens, dropout, norm_first)
        self.ffn = PositionWiseFFN(ffn_num_hiddens, num_hiddens, activation_dropout)
        self.addnorm2 = AddNorm(num_hiddens, dropout, norm_first)

    def forward(self, X: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
        X = self.addnorm1(X, lambda h: self.attention(h, h, h, valid_lens))  # (B, S, D)
        return self.addnorm2(X, self.ffn)  # (B, S, D)


class TransformerEncoder(nn.Module):
    """Stack of :class:`TransformerEncoderBlock` over embedded, position-encoded tokens.

    Args:
        config: sizes and choices (:class:`~model.config.TransformerConfig`).
        embedding: token embedding ``(V, D)`` (shared with the decoder when tied).

    Shapes:
        ``src`` ``(B, S)`` token ids, ``valid_lens`` ``(B,)`` -> ``(B, S, D)``.

    Source: Vaswani et al. 2017, §3.1 and §3.4 (embeddings scaled by
    ``sqrt(D)``); d2l.ai §11.7.3.
    """

    def __init__(self, config: "TransformerConfig", embedding: nn.Embedding):
        super().__init__()
        c = config
        self.num_hiddens = c.num_hiddens
        self.embedding = embedding
        self.pos_encoding = PositionalEncoding(c.num_hiddens, c.dropout, c.max_len)
        self.blks = nn.ModuleList(
            TransformerEncoderBlock(c.num_hiddens, c.ffn_num_hiddens, c.num_heads, c.dropout,
                                    c.attention, c.norm_first,
                                    attention_dropout=c.attention_dropout,
                                    activation_dropout=c.activation_dropout)
            for _ in range(c.num_enc_blks))
        self.final_ln = nn.LayerNorm(c.num_hiddens) if c.norm_first else nn.Identity()

    def forward(self, src: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
        X = self.pos_encoding(self.embedding(src) * self.num_hiddens ** 0.5)  # (B, S, D)
        for blk in self.blks:
            X = blk(X, valid_lens)
        return self.final_ln(X)
