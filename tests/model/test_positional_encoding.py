"""Tests for model/positional_encoding.py against a NumPy reference of the formula

``P[t, 2i] = sin(t / 10000^(2i/D))``, ``P[t, 2i+1] = cos(t / 10000^(2i/D))``
(Vaswani et al. 2017, §3.5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from model.positional_encoding import PositionalEncoding


def reference_encoding(num_steps: int, num_hiddens: int) -> torch.Tensor:
    """The sinusoid table ``(num_steps, D)``, element by element in float64."""
    P = np.zeros((num_steps, num_hiddens))
    for t in range(num_steps):
        for j in range(num_hiddens):
            i = j // 2
            angle = t / 10000 ** (2 * i / num_hiddens)
            P[t, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return torch.from_numpy(P).float()


@pytest.mark.parametrize("num_hiddens", [1, 2, 7, 16], ids=lambda d: f"D{d}")
def test_matches_sinusoid_formula(num_hiddens):
    max_len = 60
    pe = PositionalEncoding(num_hiddens, 0.0, max_len=max_len).eval()
    assert pe.P.shape == (1, max_len, num_hiddens)
    expected = reference_encoding(max_len, num_hiddens)
    assert_close(pe.P[0], expected, rtol=0, atol=1e-5)

    X = torch.randn(3, 11, num_hiddens)
    assert_close(pe(X), X + expected[:11])


@pytest.mark.parametrize("offset", [0, 1, 5])
@pytest.mark.parametrize("num_hiddens", [6, 9], ids=lambda d: f"D{d}")
def test_offset_continues_the_sequence(num_hiddens, offset):
    pe = PositionalEncoding(num_hiddens, 0.0, max_len=20).eval()
    X = torch.randn(2, 15, num_hiddens)
    step = X[:, offset: offset + 4]
    # Positions offset..offset+3, whether encoded alone or inside the longer sequence.
    assert_close(pe(step, offset=offset), pe(X)[:, offset: offset + 4])
    assert_close(pe(step, offset=offset),
                 step + reference_encoding(20, num_hiddens)[offset: offset + 4],
                 rtol=0, atol=1e-5)


def test_too_long_raises_with_max_len_in_message():
    pe = PositionalEncoding(8, 0.0, max_len=10)
    pe(torch.zeros(1, 10, 8))  # exactly max_len is fine
    pe(torch.zeros(1, 4, 8), offset=6)
    with pytest.raises(ValueError, match="max_len=10"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match="max_len=10"):
        pe(torch.zeros(1, 4, 8), offset=7)


def test_eval_mode_is_deterministic_and_dropout_free():
    pe = PositionalEncoding(8, 0.5, max_len=30)
    X = torch.randn(4, 12, 8)
    pe.eval()
    first = pe(X)
    assert_close(pe(X), first, rtol=0, atol=0)
    assert_close(first, X + reference_encoding(12, 8), rtol=0, atol=1e-5)
    pe.train()
    assert not torch.allclose(pe(X), first)  # dropout is live in training


def test_keeps_input_dtype():
    pe = PositionalEncoding(8, 0.0, max_len=30).eval()
    X = torch.randn(2, 5, 8, dtype=torch.float64)
    out = pe(X)
    assert out.dtype == torch.float64
    assert_close(out, X + reference_encoding(5, 8).double(), rtol=0, atol=1e-5)


def test_table_is_not_saved_in_state_dict():
    assert "P" not in PositionalEncoding(8, 0.0).state_dict()
