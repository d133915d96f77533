"""Blocks shared by the Transformer encoder and decoder: the position-wise
feed-forward network and the residual connection with LayerNorm.

Source: Vaswani et al. 2017, §3.3 and §5.4; d2l.ai §11.7.2.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .dropout import Dropout

__all__ = ["PositionWiseFFN", "AddNorm"]


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
        self.dropout = Dropout(dropout)
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
        self.dropout = Dropout(dropout)
        self.ln = nn.LayerNorm(num_hiddens)
        self.norm_first = norm_first

    def forward(self, X: torch.Tensor,
                sublayer: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.norm_first:
            return X + self.dropout(sublayer(self.ln(X)))
        return self.ln(X + self.dropout(sublayer(X)))
