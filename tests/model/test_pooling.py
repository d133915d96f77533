"""Tests for attention_pool, AttentionPooling and TanhAttention (model/pooling.py).

References: the textbook example of soft attention pooling (Qiu Xipeng,
pp. 199–203), the mean for uniform weights, a direct transcription of each
formula, and the permutation / padding invariances.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from model import AttentionPooling, TanhAttention, attention_pool


def test_attention_pool_textbook_example():
    weights = torch.tensor([[0, 0, 0, 1], [0, 0, 0.5, 0.5]])
    values = torch.tensor([[[.1, .1, .2], [.8, .8, .8], [0, 0, 0], [.8, .8, 1]],
                           [[.2, .2, .6], [0, 0, .6], [.5, .5, .5], [1, 1, .6]]])
    assert_close(attention_pool(values, weights), torch.tensor([[.8, .8, 1], [.75, .75, .55]]))


def test_attention_pool_uniform_is_mean_and_padding_is_left_out():
    values = torch.randn(3, 5, 4)
    assert_close(attention_pool(values, torch.full((3, 5), 0.2)), values.mean(dim=1))
    lens = torch.tensor([5, 2, 1])
    weights = torch.softmax(torch.randn(3, 5), dim=-1)
    expected = torch.stack([(weights[b, :n, None] * values[b, :n]).sum(0)
                            for b, n in enumerate(lens.tolist())])
    assert_close(attention_pool(values, weights, lens), expected)
    with pytest.raises(ValueError, match=r"weights of shape \(3, 4\) do not match values"):
        attention_pool(values, weights[:, :4])


def test_attention_pooling_dot_matches_formula_with_learned_query():
    pool = AttentionPooling(4, scoring="dot")
    values, lens = torch.randn(3, 5, 4), torch.tensor([5, 3, 1])
    out = pool(values, lens)
    scores = values @ pool.query / math.sqrt(4)  # (B, N)
    scores = scores.masked_fill(torch.arange(5) >= lens[:, None], float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    assert_close(pool.attention_weights, weights)
    assert_close(out, (weights.unsqueeze(-1) * values).sum(1))
    garbage = values.clone()
    garbage[1, 3:], garbage[2, 1:] = 100.0, -7.0  # padded items change nothing
    assert_close(pool(garbage, lens), out)


@pytest.mark.parametrize("scoring", ["dot", "additive"])
def test_attention_pooling_with_a_passed_query(scoring):
    pool = AttentionPooling(4, scoring=scoring)
    values, query = torch.randn(2, 6, 4), torch.randn(2, 4)
    out = pool(values, torch.tensor([6, 2]), query=query)
    assert out.shape == (2, 4) and pool.attention_weights.shape == (2, 6)
    assert_close(pool.attention_weights.sum(-1), torch.ones(2))
    assert (pool.attention_weights[1, 2:] == 0).all()
    assert_close(out, attention_pool(values, pool.attention_weights))
    with pytest.raises(ValueError, match="scoring='max' is unknown"):
        AttentionPooling(4, scoring="max")


def tanh_attention_reference(layer: TanhAttention, x, lens=None):
    """Direct transcription: Q = tanh(W_q x), K, V alike, z = softmax(Q K^T) V, sum of z."""
    out_z, out_g = [], []
    for b in range(x.shape[0]):
        n = x.shape[1] if lens is None else int(lens[b])
        xb = x[b, :n]
        Q, K, V = (torch.tanh(xb @ W.weight.T + W.bias) for W in (layer.W_q, layer.W_k, layer.W_v))
        scores = Q @ K.T / (math.sqrt(Q.shape[-1]) if layer.scaled else 1.0)
        z = torch.softmax(scores, dim=-1) @ V
        out_z.append(z)
        out_g.append(z.sum(0))
    return out_z, torch.stack(out_g)


@pytest.mark.parametrize("scaled", [False, True])
def test_tanh_attention_matches_transcription(scaled):
    layer = TanhAttention(5, 3, scaled=scaled)
    assert all(torch.equal(W.bias, torch.zeros(3)) for W in (layer.W_q, layer.W_k, layer.W_v))
    x, lens = torch.randn(3, 6, 5), torch.tensor([6, 4, 1])
    for valid_lens in (None, lens):
        z, g = layer(x, valid_lens)
        assert z.shape == (3, 6, 3) and g.shape == (3, 3)
        ref_z, ref_g = tanh_attention_reference(layer, x, valid_lens)
        assert_close(g, ref_g)
        for b, zb in enumerate(ref_z):
            assert_close(z[b, :zb.shape[0]], zb)


def test_tanh_attention_permutation_and_padding():
    layer = TanhAttention(5, 3)
    x, perm = torch.randn(2, 6, 5), torch.randperm(6)
    z, g = layer(x)
    z_p, g_p = layer(x[:, perm])
    assert_close(z_p, z[:, perm])  # z is permutation-equivariant
    assert_close(g_p, g)  # the global feature is invariant
    lens = torch.tensor([4, 2])
    z, g = layer(x, lens)
    garbage = x.clone()
    garbage[0, 4:], garbage[1, 2:] = 50.0, -3.0
    z_g, g_g = layer(garbage, lens)
    assert_close(g_g, g)
    assert_close(z_g[0, :4], z[0, :4])
    assert_close(z_g[1, :2], z[1, :2])
