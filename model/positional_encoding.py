"""Sinusoidal positional encoding.

Source: Vaswani et al. 2017, §3.5; d2l.ai §11.6.3.
"""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout

__all__ = ["PositionalEncoding"]


class PositionalEncoding(nn.Module):
    """Add sinusoidal position signals to a sequence of embeddings, then dropout.

    ``P[t, 2i] = sin(t / 10000^(2i/D))`` and ``P[t, 2i+1] = cos(t / 10000^(2i/D))``.

    Args:
        num_hiddens: D, the embedding size (even or odd).
        dropout: dropout probability applied after the addition.
        max_len: longest sequence supported.

    Shapes:
        ``X`` ``(B, T, D)`` -> ``(B, T, D)``; ``self.P`` is ``(1, max_len, D)``.

    Raises:
        ValueError: if ``offset + T > max_len``.

    Source: Vaswani et al. 2017, §3.5; d2l.ai §11.6.3.
    """

    def __init__(self, num_hiddens: int, dropout: float, max_len: int = 1000):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.max_len = max_len
        positions = torch.arange(max_len, dtype=torch.float32).reshape(-1, 1)  # (max_len, 1)
        frequencies = torch.pow(
            10000, torch.arange(0, num_hiddens, 2, dtype=torch.float32) / num_hiddens)  # (ceil(D/2),)
        angles = positions / frequencies  # (max_len, ceil(D/2))
        P = torch.zeros(1, max_len, num_hiddens)
        P[0, :, 0::2] = torch.sin(angles)
        P[0, :, 1::2] = torch.cos(angles[:, : num_hiddens // 2])
        # Not a parameter and not saved: it is recomputed from the sizes.
        self.register_buffer("P", P, persistent=False)

    def forward(self, X: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Add positions ``offset .. offset + T - 1`` to ``X`` ``(B, T, D)``."""
        if offset + X.shape[1] > self.max_len:
            raise ValueError(
                f"sequence of {offset + X.shape[1]} positions is longer than "
                f"max_len={self.max_len}; raise max_len in the model config or "
                f"shorten the input")
        X = X + self.P[:, offset: offset + X.shape[1]].to(X.dtype)
        return self.dropout(X)
