"""Transformer encoder: position-wise FFN, residual + LayerNorm, encoder blocks.

Source: Vaswani et al. 2017, §3.1 and §3.3; d2l.ai §11.7.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from .attention import MultiHeadAttention
from .positional_encoding import PositionalEncoding

if TYPE_CHECKING:
    from .config import TransformerConfig

__all__ = ["PositionWiseFFN", "AddNorm", "TransformerEncoderBlock", "TransformerEncoder"]


class PositionWiseFFN(nn.Module):
    """Two-layer MLP applied to every position: ``W_2 dropout(ReLU(W_1 x))``.

    Args:
        ffn_num_hiddens: inner width.
        ffn_num_outputs: output width (D).
        dropout: dropout on the inner activations (0 in d2l.ai and fairseq's
            default ``activation_dropout``).

    Shapes:
        ``(B, T, D)`` -> ``(B, T, ffn_num_outputs)``.

    Source: Vaswani et al. 2017, eq. 2; d2l.ai §11.7.2.
    """

    def __init__(self, ffn_num_hiddens: int, ffn_num_outputs: int, dropout: float = 0.0,
                 ffn_num_inputs: int | None = None):
        super().__init__()
        self.dense1 = nn.Linear(ffn_num_inputs or ffn_num_outputs, ffn_num_hiddens)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.dense2 = nn.Linear(ffn_num_hiddens, ffn_num_outputs)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.dense2(self.dropout(self.relu(self.dense1(X))))  # (B, T, D)


class AddNorm(nn.Module):
    """Residual connection with LayerNorm around a sub-layer.

    Post-norm (the paper, d2l.ai): ``LN(X + dropout(sublayer(X)))``.
    Pre-norm (``norm_first=True``, fairseq ``normalize_before``):
    ``X + dropout(sublayer(LN(X)))``, which trains stably at higher learning
    rates; the stack then ends with a final LayerNorm.

    Args:
        num_hiddens: D.
        dropout: dropout on the sub-layer output.
        norm_first: pre-norm when True.

    Shapes:
        ``X`` ``(B, T, D)``; ``sublayer`` maps ``(B, T, D)`` to ``(B, T, D)``.

    Source: Vaswani et al. 2017, §5.4; Xiong et al. 2020 (pre-LN);
    d2l.ai §11.7.2.
    """

    def __init__(self, num_hiddens: int, dropout: float, norm_first: bool = False):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(num_hiddens)
        self.norm_first = norm_first

    def forward(self, X: torch.Tensor,
                sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.norm_first:
            return X + self.dropout(sublayer(self.ln(X)))
        return self.ln(X + self.dropout(sublayer(X)))


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
