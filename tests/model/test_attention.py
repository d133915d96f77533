"""Tests for model/attention.py, each against an independent reference.

References: per-row ``torch.softmax`` over the valid prefix (masked_softmax),
``F.scaled_dot_product_attention`` (DotProductAttention), a naive loop over
``w_v^T tanh(W_q q + W_k k)`` and the unchunked formula (AdditiveAttention and
its chunked and fused kernels),
``nn.MultiheadAttention`` with copied weights and a loop over heads
(MultiHeadAttention),
``torch.autograd.gradcheck`` in float64, and the padding / causality
invariances. Tensors are tiny so the whole file runs in seconds on 2 cores.
"""

from __future__ import annotations

import copy
import itertools
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck
from torch.testing import assert_close

from model.attention import (ADDITIVE_KERNELS, SCORING_FUNCTIONS, AdditiveAttention,
                             DotProductAttention, MultiHeadAttention, _ChunkedAdditiveScores,
                             _naive_additive_scores, causal_valid_lens, fused_additive_available,
                             fused_additive_scores, masked_softmax, valid_mask)

B, H, Q, K = 3, 2, 4, 6  # batch, heads, queries, keys



#: Padding patterns for a batch of B=3 sequences of K=6 keys and Q=4 queries.
#: ``None`` attends everywhere; 1-D is one length per sequence; 2-D one per query.
PADDING = {
    "none": None,
    "full": [6, 6, 6],
    "ragged": [6, 3, 1],
    "zero": [4, 0, 2],  # a sequence with no valid key: all-zero weights
    "per_query": [[1, 2, 3, 4], [6, 5, 4, 3], [2, 2, 6, 1]],
    "per_query_zero": [[0, 1, 2, 3], [6, 0, 6, 6], [1, 1, 1, 1]],
}
#: The patterns in which every query has at least one valid key (libraries
#: that return NaN for a fully masked row can serve as references).
NONEMPTY = ["none", "full", "ragged", "per_query"]
#: The 1-D patterns (what ``key_padding_mask`` can express).
PER_SEQUENCE = ["none", "full", "ragged"]


def lens_of(pattern: str) -> torch.Tensor | None:
    lens = PADDING[pattern]
    return None if lens is None else torch.tensor(lens)


def lens_per_row(valid_lens: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """Valid length of every row of scores of ``shape`` ``(B, [H,] Q, K)``: ``shape[:-1]``."""
    rows = shape[:-1]
    if valid_lens is None:
        return torch.full(rows, shape[-1])
    if valid_lens.dim() == 1:
        lens = valid_lens.reshape(-1, *([1] * (len(rows) - 1)))  # (B, 1, [1])
    else:
        lens = valid_lens.reshape(valid_lens.shape[0], *([1] * (len(rows) - 2)), -1)  # (B, [1,] Q)
    return lens.expand(rows)


def reference_mask(valid_lens: torch.Tensor | None, shape: torch.Size) -> torch.Tensor:
    """Boolean mask (True = attend) of shape ``shape``, built without ``valid_mask``."""
    return torch.arange(shape[-1]) < lens_per_row(valid_lens, shape)[..., None]


def reference_masked_softmax(X: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
    """Plain ``torch.softmax`` of each row over its valid prefix, zeros elsewhere."""
    lens = lens_per_row(valid_lens, X.shape)
    out = torch.zeros_like(X)
    for idx in itertools.product(*(range(n) for n in X.shape[:-1])):
        n = int(lens[idx])
        if n > 0:
            out[idx][:n] = torch.softmax(X[idx][:n], dim=-1)
    return out


def scores_shape(ndim: int) -> tuple[int, ...]:
    return (B, Q, K) if ndim == 3 else (B, H, Q, K)


def qkv(ndim: int, d: int = 5, v: int = 3, dtype=torch.float32):
    lead = (B,) if ndim == 3 else (B, H)
    return (torch.randn(*lead, Q, d, dtype=dtype), torch.randn(*lead, K, d, dtype=dtype),
            torch.randn(*lead, K, v, dtype=dtype))


# ---------------------------------------------------------------- masked_softmax

@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pattern", list(PADDING))
def test_masked_softmax_matches_per_row_softmax(pattern, ndim):
    X = torch.randn(scores_shape(ndim))
    valid_lens = lens_of(pattern)
    weights = masked_softmax(X, valid_lens)

    assert_close(weights, reference_masked_softmax(X, valid_lens))
    lens = lens_per_row(valid_lens, X.shape)
    mask = reference_mask(valid_lens, X.shape)
    # Exactly zero at and after the valid length, rows sum to 1 where any key is valid.
    assert torch.equal(weights[~mask], torch.zeros_like(weights[~mask]))
    sums = weights.sum(-1)
    assert_close(sums[lens > 0], torch.ones_like(sums[lens > 0]))
    assert torch.equal(sums[lens == 0], torch.zeros_like(sums[lens == 0]))


@pytest.mark.parametrize("pattern", ["zero", "per_query_zero"])
@pytest.mark.parametrize("ndim", [3, 4])
def test_masked_softmax_zero_length_gives_zero_row_and_finite_gradient(pattern, ndim):
    X = torch.randn(scores_shape(ndim), requires_grad=True)
    valid_lens = lens_of(pattern)
    weights = masked_softmax(X, valid_lens)
    empty = lens_per_row(valid_lens, X.shape) == 0
    assert empty.any()
    assert torch.equal(weights[empty], torch.zeros_like(weights[empty]))

    (weights * torch.randn_like(weights)).sum().backward()
    assert torch.isfinite(X.grad).all()
    assert torch.equal(X.grad[empty], torch.zeros_like(X.grad[empty]))


def test_masked_softmax_gradcheck_float64():
    X = torch.randn(B, H, Q, K, dtype=torch.float64, requires_grad=True)
    for pattern in ["ragged", "zero", "per_query_zero"]:
        valid_lens = lens_of(pattern)
        # Through a smooth function, so the check sees cross-row terms too.
        assert gradcheck(lambda X: torch.sin(masked_softmax(X.tanh() * 3, valid_lens)), (X,))


# ---------------------------------------------------------------- masks

def test_valid_mask_shapes_and_values():
    assert valid_mask(None, Q, K) is None
    lens = torch.tensor([6, 3, 0])
    mask = valid_mask(lens, Q, K)
    assert mask.shape == (B, 1, K) and mask.dtype == torch.bool
    assert torch.equal(mask.expand(B, Q, K), reference_mask(lens, (B, Q, K)))

    lens = lens_of("per_query")
    mask = valid_mask(lens, Q, K)
    assert mask.shape == (B, Q, K)
    assert torch.equal(mask, reference_mask(lens, (B, Q, K)))


def test_valid_mask_rejects_bad_lengths():
    with pytest.raises(ValueError, match="valid_lens"):
        valid_mask(torch.ones(B, Q, 1, dtype=torch.long), Q, K)  # 3-D
    with pytest.raises(ValueError, match="queries"):
        valid_mask(torch.ones(B, Q + 1, dtype=torch.long), Q, K)  # wrong Q
    with pytest.raises(ValueError):
        masked_softmax(torch.randn(B, Q, K), torch.ones(B, Q + 1, dtype=torch.long))


@pytest.mark.parametrize("offset", [0, 3])
def test_causal_valid_lens(offset):
    lens = causal_valid_lens(B, Q, offset=offset)
    assert lens.shape == (B, Q)
    for row in lens:
        assert row.tolist() == list(range(offset + 1, offset + Q + 1))
    # As a mask: query i sees keys 0..offset+i, i.e. a lower-triangular band.
    mask = valid_mask(lens, Q, offset + Q)
    expected = torch.ones(Q, offset + Q, dtype=torch.bool).tril(diagonal=offset)
    assert torch.equal(mask, expected.expand(B, Q, offset + Q))


# ---------------------------------------------------------------- DotProductAttention

def sdpa_reference(q, k, v, valid_lens):
    """``F.scaled_dot_product_attention`` with the equivalent boolean mask; rows
    with no valid key are set to 0 (the project's documented convention)."""
    shape = (*q.shape[:-1], k.shape[-2])
    mask = reference_mask(valid_lens, shape)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    has_key = lens_per_row(valid_lens, shape)[..., None] > 0
    return torch.where(has_key, out, torch.zeros_like(out))


@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pattern", list(PADDING))
def test_dot_product_explicit_path_matches_sdpa(pattern, ndim):
    q, k, v = qkv(ndim)
    valid_lens = lens_of(pattern)
    attention = DotProductAttention(0.0, keep_weights=True).eval()
    out = attention(q, k, v, valid_lens)
    assert_close(out, sdpa_reference(q, k, v, valid_lens))
    assert attention.attention_weights.shape == scores_shape(ndim)
    assert_close(attention.attention_weights,
                 reference_masked_softmax(q @ k.transpose(-2, -1) / 5 ** 0.5, valid_lens))


@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pattern", list(PADDING))
def test_dot_product_fast_path_equals_explicit_path(pattern, ndim):
    q, k, v = qkv(ndim)
    valid_lens = lens_of(pattern)
    fast = DotProductAttention(0.0, keep_weights=False).eval()
    explicit = DotProductAttention(0.0, keep_weights=True).eval()
    assert_close(fast(q, k, v, valid_lens), explicit(q, k, v, valid_lens))
    assert fast.attention_weights is None


@pytest.mark.parametrize("keep_weights", [True, False])
def test_dot_product_dropout_is_identity_in_eval_mode(keep_weights):
    q, k, v = qkv(4)
    valid_lens = lens_of("ragged")
    with_dropout = DotProductAttention(0.5, keep_weights=keep_weights).eval()
    without = DotProductAttention(0.0, keep_weights=keep_weights).eval()
    first = with_dropout(q, k, v, valid_lens)
    assert_close(first, with_dropout(q, k, v, valid_lens), rtol=0, atol=0)
    assert_close(first, without(q, k, v, valid_lens))
    # Sanity check that the dropout is live in training mode.
    assert not torch.allclose(with_dropout.train()(q, k, v, valid_lens), first)


@pytest.mark.parametrize("keep_weights", [True, False])
def test_dot_product_gradcheck_float64(keep_weights):
    q = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)  # (B, H, Q, d)
    k = torch.randn(2, 2, 4, 3, dtype=torch.float64, requires_grad=True)  # (B, H, K, d)
    v = torch.randn(2, 2, 4, 2, dtype=torch.float64, requires_grad=True)  # (B, H, K, v)
    attention = DotProductAttention(0.0, keep_weights=keep_weights)
    for valid_lens in [torch.tensor([4, 2]), torch.tensor([[1, 2, 3], [0, 4, 1]])]:
        assert gradcheck(lambda q, k, v: attention(q, k, v, valid_lens), (q, k, v))


# ---------------------------------------------------------------- AdditiveAttention

def additive_reference(attention: AdditiveAttention, q, k, v, valid_lens):
    """Naive loop: ``score[b, i, j] = w_v . tanh(W_q q_i + W_k k_j)`` for 3-D inputs."""
    W_q, W_k = attention.W_q.weight, attention.W_k.weight
    w_v = attention.w_v.weight[0]
    scores = torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            for j in range(k.shape[1]):
                scores[b, i, j] = w_v @ torch.tanh(W_q @ q[b, i] + W_k @ k[b, j])
    return reference_masked_softmax(scores, valid_lens) @ v


@pytest.mark.parametrize("pattern", list(PADDING))
@pytest.mark.slow
def test_additive_matches_naive_loop(pattern):
    q, k, v = qkv(3)
    valid_lens = lens_of(pattern)
    attention = AdditiveAttention(7, 0.0, key_size=5, query_size=5).eval()
    out = attention(q, k, v, valid_lens)
    assert out.shape == (B, Q, 3)
    assert_close(out, additive_reference(attention, q, k, v, valid_lens))
    assert attention.attention_weights.shape == (B, Q, K)


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "sized"])
@pytest.mark.slow
def test_additive_queries_and_keys_of_different_sizes(lazy):
    q_size, k_size, v_size, hidden = 4, 9, 2, 6
    q, k, v = torch.randn(B, Q, q_size), torch.randn(B, K, k_size), torch.randn(B, K, v_size)
    sizes = {} if lazy else {"key_size": k_size, "query_size": q_size}
    attention = AdditiveAttention(hidden, 0.0, **sizes).eval()
    valid_lens = lens_of("ragged")
    out = attention(q, k, v, valid_lens)
    assert out.shape == (B, Q, v_size)
    assert attention.W_q.weight.shape == (hidden, q_size)
    assert attention.W_k.weight.shape == (hidden, k_size)
    assert_close(out, additive_reference(attention, q, k, v, valid_lens))


@pytest.mark.parametrize("pattern", ["ragged", "per_query_zero"])
def test_additive_four_d_equals_per_head_calls(pattern):
    q, k, v = qkv(4)
    valid_lens = lens_of(pattern)
    attention = AdditiveAttention(6, 0.0, key_size=5, query_size=5).eval()
    out = attention(q, k, v, valid_lens)
    weights = attention.attention_weights
    assert out.shape == (B, H, Q, 3) and weights.shape == (B, H, Q, K)
    per_head = [attention(q[:, h], k[:, h], v[:, h], valid_lens) for h in range(H)]
    assert_close(out, torch.stack(per_head, dim=1))


@pytest.mark.slow
def test_additive_gradcheck_float64():
    attention = AdditiveAttention(4, 0.0, key_size=3, query_size=2).double()
    q = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck_module(attention, (q, k, v), torch.tensor([4, 2]))
    assert gradcheck_module(attention, (q, k, v), torch.tensor([[1, 2, 3], [0, 4, 1]]))


# ---------------------------------------------------------------- AdditiveAttention: chunked

A = 7  # additive hidden size in the chunked tests


def chunked_and_naive(chunk_size: int, ndim: int):
    """Two AdditiveAttention with the same weights: one computing ``chunk_size``
    queries at a time (its budget set to that many queries), one unchunked."""
    naive = AdditiveAttention(A, 0.0, key_size=5, query_size=5, kernel="naive")
    chunked = copy.deepcopy(naive)
    chunked.kernel = "chunked"
    lead = B if ndim == 3 else B * H
    chunked.chunk_elements = chunk_size * lead * K * A  # elements of (B, [H,] c, K, A)
    return chunked, naive


def forward_backward(attention: AdditiveAttention, q, k, v, valid_lens, grad_out):
    """Output, weights and the gradients of queries, keys, values and every parameter."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = attention(q, k, v, valid_lens)
    out.backward(grad_out)
    grads = {"queries": q.grad, "keys": k.grad, "values": v.grad}
    grads.update({name: p.grad for name, p in attention.named_parameters()})
    return out, attention.attention_weights, grads


@pytest.mark.parametrize("chunk_size", [1, 3, 5], ids=lambda c: f"chunk{c}")  # Q=4: 3 leaves 1
@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pattern", list(PADDING))
def test_additive_chunked_equals_naive_values_and_gradients(pattern, ndim, chunk_size):
    q, k, v = qkv(ndim)
    valid_lens = lens_of(pattern)
    chunked, naive = chunked_and_naive(chunk_size, ndim)
    assert chunked.chunk_size(chunked.W_q(q), chunked.W_k(k)) == chunk_size
    grad_out = torch.randn(*q.shape[:-1], v.shape[-1])

    out, weights, grads = forward_backward(chunked, q, k, v, valid_lens, grad_out)
    ref_out, ref_weights, ref_grads = forward_backward(naive, q, k, v, valid_lens, grad_out)
    assert_close(out, ref_out)
    assert_close(weights, ref_weights)
    assert grads.keys() == ref_grads.keys() and len(grads) == 6  # q, k, v, W_k, W_q, w_v
    for name in grads:
        assert_close(grads[name], ref_grads[name], msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("chunk_size", [1, 2])  # Q=3: 2 leaves 1
def test_additive_chunked_gradcheck_float64(chunk_size):
    attention = AdditiveAttention(4, 0.0, key_size=3, query_size=2, kernel="chunked").double()
    q = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    attention.chunk_elements = chunk_size * 2 * 4 * 4  # (B, c, K, A)
    assert attention.chunk_size(attention.W_q(q), attention.W_k(k)) == chunk_size
    assert gradcheck_module(attention, (q, k, v), None)
    assert gradcheck_module(attention, (q, k, v), torch.tensor([4, 2]))
    assert gradcheck_module(attention, (q, k, v), torch.tensor([[1, 2, 3], [0, 4, 1]]))


def test_additive_chunked_scores_broadcast_like_naive():
    """Queries and keys whose leading dimensions broadcast, as the formula allows."""
    q = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)  # (B, 1, Q, A)
    k = torch.randn(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)  # (1, H, K, A)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)  # (A,)
    assert gradcheck(lambda q, k, w: _ChunkedAdditiveScores.apply(q, k, w, 2), (q, k, w))
    grad = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    chunked = torch.autograd.grad(_ChunkedAdditiveScores.apply(q, k, w, 2), (q, k, w), grad)
    naive = torch.autograd.grad(_naive_additive_scores(q, k, w), (q, k, w), grad)
    for ours, ref in zip(chunked, naive):
        assert_close(ours, ref)


needs_compiler = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")),
    reason="the fused additive kernel compiles C++ with Inductor; no C++ compiler here")


def fused_and_naive(dtype=torch.float32):
    """Two AdditiveAttention with the same weights: the fused kernel and the formula."""
    naive = AdditiveAttention(A, 0.0, key_size=5, query_size=5, kernel="naive").to(dtype)
    fused = copy.deepcopy(naive)
    fused.kernel = "fused"
    return fused, naive


@pytest.mark.parametrize("kernel", ["chunked1", "chunked3", pytest.param("fused", marks=needs_compiler)])
@pytest.mark.slow
def test_additive_kernels_under_bf16_autocast(kernel):
    """Training runs forward under bf16 autocast, backward outside it: the
    chunked (1 or 3 queries at a time) and fused kernels give the formula's
    result within bf16 precision, gradients in the parameters' dtype."""
    q, k, v = qkv(4)
    grad_out = torch.randn(B, H, Q, 3)
    results = []
    pair = fused_and_naive() if kernel == "fused" else chunked_and_naive(int(kernel[-1]), 4)
    for attention in pair:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(q, k, v, lens_of("per_query"))
        out.backward(grad_out.to(out.dtype))
        results.append((out, {name: p.grad for name, p in attention.named_parameters()}))
    (out, grads), (ref_out, ref_grads) = results
    assert out.dtype == ref_out.dtype == torch.bfloat16
    assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    assert len(grads) == 3
    for name in grads:
        assert grads[name].dtype == torch.float32  # the parameters' dtype
        assert_close(grads[name], ref_grads[name], atol=5e-2, rtol=5e-2)


def test_additive_chunked_saves_no_hidden_tensor():
    """What autograd keeps for backward: the naive formula saves the whole
    ``(B, H, Q, K, A)`` hidden tensor, the chunked one nothing that large."""
    q, k, v = qkv(4)
    hidden = B * H * Q * K * A
    chunked, naive = chunked_and_naive(2, 4)
    for attention, saves_hidden in ((chunked, False), (naive, True)):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: saved.append(t.numel()) or t, lambda t: t):
            attention(q.requires_grad_(), k, v, lens_of("ragged"))
        assert (max(saved) >= hidden) == saves_hidden, (attention.chunk_elements, max(saved))


def test_additive_chunk_size_from_budget():
    attention = AdditiveAttention(32, 0.0, key_size=32, query_size=32)
    q, k = (torch.empty(64, 8, 64, 32, device="meta") for _ in range(2))  # projected (B, H, Q|K, A)
    per_query = 64 * 8 * 64 * 32
    assert attention.chunk_size(q, k) == 2 ** 22 // per_query == 4  # the default budget
    attention.chunk_elements = 10 * per_query - 1
    assert attention.chunk_size(q, k) == 9
    attention.chunk_elements = 1  # below one query: still one query at a time
    assert attention.chunk_size(q, k) == 1
    attention.chunk_elements = None
    assert attention.chunk_size(q, k) is None


# ---------------------------------------------------------------- AdditiveAttention: fused

@needs_compiler
def test_fused_additive_compiles_here():
    """With a C++ compiler, ``kernel="auto"`` picks the fused kernel on CPU."""
    assert fused_additive_available("cpu")
    assert AdditiveAttention(4, 0.0).resolved_kernel("cpu") == "fused"


@needs_compiler
@pytest.mark.parametrize("ndim", [3, 4])
@pytest.mark.parametrize("pattern", list(PADDING))
@pytest.mark.slow
def test_additive_fused_equals_naive_values_and_gradients(pattern, ndim):
    q, k, v = qkv(ndim)
    valid_lens = lens_of(pattern)
    fused, naive = fused_and_naive()
    grad_out = torch.randn(*q.shape[:-1], v.shape[-1])
    out, weights, grads = forward_backward(fused, q, k, v, valid_lens, grad_out)
    ref_out, ref_weights, ref_grads = forward_backward(naive, q, k, v, valid_lens, grad_out)
    assert_close(out, ref_out)
    assert_close(weights, ref_weights)  # attention weights stay available for plots
    assert grads.keys() == ref_grads.keys() and len(grads) == 6  # q, k, v, W_k, W_q, w_v
    for name in grads:
        assert_close(grads[name], ref_grads[name], msg=lambda m: f"gradient of {name}: {m}")


@needs_compiler
@pytest.mark.parametrize("lens", [(1, 6), (6, 6), (5, 1), (9, 2)], ids=lambda n: f"Q{n[0]}K{n[1]}")
@pytest.mark.slow
def test_additive_fused_every_length(lens):
    """One compilation with dynamic shapes serves other lengths (incl. Q == K and
    the length-1 queries of incremental decoding) with the right values."""
    Q_, K_ = lens
    q, k = torch.randn(B, H, Q_, A, requires_grad=True), torch.randn(B, H, K_, A)
    w = torch.randn(A, requires_grad=True)
    scores = fused_additive_scores(q, k, w)
    assert scores.shape == (B, H, Q_, K_)
    assert_close(scores, _naive_additive_scores(q, k, w))
    grad = torch.randn_like(scores)
    ours = torch.autograd.grad(scores, (q, w), grad)
    ref = torch.autograd.grad(_naive_additive_scores(q, k, w), (q, w), grad)
    for a, b in zip(ours, ref):
        assert_close(a, b)


@needs_compiler
@pytest.mark.slow
def test_additive_fused_gradcheck_float64():
    fused, _ = fused_and_naive(torch.float64)
    q = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck_module(fused, (q, k, v), None)
    assert gradcheck_module(fused, (q, k, v), torch.tensor([4, 2]))
    assert gradcheck_module(fused, (q, k, v), torch.tensor([[1, 2, 3], [0, 4, 1]]))


@needs_compiler
@pytest.mark.slow
def test_additive_fused_scores_broadcast_and_saturate():
    """Leading dimensions that broadcast; hidden values large enough that
    ``exp(2x)`` overflows (tanh = +-1, derivative 0, no NaN)."""
    q = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)  # (B, 1, Q, A)
    k = torch.randn(1, 3, 5, 4, dtype=torch.float64, requires_grad=True)  # (1, H, K, A)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)  # (A,)
    assert gradcheck(fused_additive_scores, (q, k, w))
    big = (q.detach() * 300).requires_grad_()  # |q + k| up to ~1000: exp(2x) is inf
    grad = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        args = [t.detach().to(dtype).requires_grad_() for t in (big, k, w)]
        ours = fused_additive_scores(*args)
        ref = _naive_additive_scores(*args)
        assert torch.isfinite(ours).all()
        assert_close(ours, ref)
        for a, b in zip(torch.autograd.grad(ours, args, grad.to(dtype)),
                        torch.autograd.grad(ref, args, grad.to(dtype))):
            assert torch.isfinite(a).all()
            assert_close(a, b)


@needs_compiler
def test_additive_fused_saves_no_hidden_tensor():
    q, k, v = qkv(4)
    fused, _ = fused_and_naive()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t,
                                                  lambda t: t):
        fused(q.requires_grad_(), k, v, lens_of("ragged"))
    assert max(saved) < B * H * Q * K * A
    assert max(saved) == max(B * H * Q * K, B * H * K * A)  # weights or projected keys


def test_additive_auto_falls_back_to_chunked(monkeypatch):
    """Where torch.compile fails, ``kernel="auto"`` warns once and computes with the
    chunked kernel (same values as the formula)."""
    import model.additive_kernels as attention_module

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(attention_module, "_FUSED_PROBES", {})
    monkeypatch.setattr(attention_module, "fused_additive_scores", broken)
    with pytest.warns(RuntimeWarning, match="unavailable on cpu .*no C\\+\\+ compiler.*chunked"):
        assert not fused_additive_available("cpu")
    auto, naive = fused_and_naive()
    auto.kernel = "auto"
    assert auto.resolved_kernel("cpu") == "chunked"
    q, k, v = qkv(4)
    assert_close(auto(q, k, v, lens_of("ragged")), naive(q, k, v, lens_of("ragged")))


def test_additive_unknown_kernel():
    attention = AdditiveAttention(4, 0.0, kernel="flash")
    with pytest.raises(ValueError, match=r"kernel='flash' is unknown; use one of"):
        attention(*qkv(3))
    assert set(ADDITIVE_KERNELS) == {"auto", "fused", "chunked", "naive"}


@pytest.mark.parametrize("kernel", ["naive", "chunked", "auto"])
def test_additive_projected_keys(kernel):
    """Keys projected once with ``project_keys`` give the same output."""
    q, k, v = qkv(4)
    attention = AdditiveAttention(A, 0.0, key_size=5, query_size=5, kernel=kernel)
    expected = attention(q, k, v, lens_of("ragged"))
    assert_close(attention(q, None, v, lens_of("ragged"),
                           projected_keys=attention.project_keys(k)), expected)


# ---------------------------------------------------------------- MultiHeadAttention

D = 16  # num_hiddens for MultiHeadAttention tests (H=2 heads of 8)


def reference_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    """``nn.MultiheadAttention`` holding a copy of ``ours``'s weights."""
    bias = ours.W_q.bias is not None
    ref = nn.MultiheadAttention(D, ours.num_heads, dropout=0.0, bias=bias, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.W_q.weight, ours.W_k.weight, ours.W_v.weight]))
        ref.out_proj.weight.copy_(ours.W_o.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([ours.W_q.bias, ours.W_k.bias, ours.W_v.bias]))
            ref.out_proj.bias.copy_(ours.W_o.bias)
    return ref.eval()


def randomize_biases(module: nn.Module) -> None:
    """Give every bias a non-zero value so a forgotten bias shows in a comparison."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_()


@pytest.mark.parametrize("keep_weights", [True, False], ids=["explicit", "fast"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("pattern", PER_SEQUENCE)
def test_multihead_dot_matches_nn_multihead_attention(pattern, bias, keep_weights):
    ours = MultiHeadAttention(D, H, 0.0, bias=bias, scoring="dot").eval()
    ours.attention.keep_weights = keep_weights
    randomize_biases(ours)
    ref = reference_mha(ours)
    queries, keys, values = torch.randn(B, Q, D), torch.randn(B, K, D), torch.randn(B, K, D)
    valid_lens = lens_of(pattern)
    mask = reference_mask(valid_lens, (B, K))  # (B, K), True = attend

    out = ours(queries, keys, values, valid_lens)
    expected, _ = ref(queries, keys, values, key_padding_mask=~mask, need_weights=False)
    assert out.shape == (B, Q, D)
    assert_close(out, expected)


@pytest.mark.parametrize("bias", [False, True])
def test_multihead_dot_self_attention_matches_nn_on_valid_queries(bias):
    """Self-attention over a padded batch: the valid query positions agree."""
    ours = MultiHeadAttention(D, H, 0.0, bias=bias, scoring="dot").eval()
    randomize_biases(ours)
    ref = reference_mha(ours)
    X = torch.randn(B, K, D)
    valid_lens = lens_of("ragged")
    mask = reference_mask(valid_lens, (B, K))
    out = ours(X, X, X, valid_lens)
    expected, _ = ref(X, X, X, key_padding_mask=~mask, need_weights=False)
    assert_close(out[mask], expected[mask])


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("scoring", SCORING_FUNCTIONS)
def test_multihead_fused_self_attention_projection_equals_separate(scoring, bias):
    """``project_qkv`` (one product with W_q|W_k|W_v) equals the three projections,
    and self-attention (the same tensor three times, fused path) equals the call
    with three equal but distinct tensors (separate path), values and gradients."""
    mha = MultiHeadAttention(D, H, 0.0, bias=bias, scoring=scoring).eval()
    randomize_biases(mha)
    X = torch.randn(B, K, D)
    q, k, v = mha.project_qkv(X)
    assert_close(q, mha.transpose_qkv(mha.W_q(X)))
    assert_close(k, mha.transpose_qkv(mha.W_k(X)))
    assert_close(v, mha.transpose_qkv(mha.W_v(X)))

    valid_lens = lens_of("ragged")
    fused = mha(X, X, X, valid_lens)
    fused_grads = torch.autograd.grad(fused.square().sum(), list(mha.parameters()))
    separate = mha(X.clone(), X.clone(), X.clone(), valid_lens)
    separate_grads = torch.autograd.grad(separate.square().sum(), list(mha.parameters()))
    assert_close(fused, separate)
    for a, b in zip(fused_grads, separate_grads):
        assert_close(a, b)


@pytest.mark.parametrize("keep_weights", [True, False], ids=["explicit", "fast"])
def test_dot_product_is_causal_equals_causal_valid_lens(keep_weights):
    """The ``is_causal`` hint gives the same output as the causal valid lengths
    (the mask the decoder would otherwise build), forward and backward."""
    attention = DotProductAttention(0.0, keep_weights=keep_weights)
    queries, keys, values = (torch.randn(B, H, K, 5, requires_grad=True) for _ in range(3))
    hinted = attention(queries, keys, values, None, is_causal=True)
    hinted_grads = torch.autograd.grad(hinted.square().sum(), (queries, keys, values))
    masked = attention(queries, keys, values, causal_valid_lens(B, K))
    masked_grads = torch.autograd.grad(masked.square().sum(), (queries, keys, values))
    assert_close(hinted, masked)
    for a, b in zip(hinted_grads, masked_grads):
        assert_close(a, b)
    with pytest.raises(ValueError, match="as many queries as keys"):
        attention(queries[:, :, :2], keys, values, is_causal=True)


def multihead_head_loop_reference(mha: MultiHeadAttention, queries, keys, values, valid_lens):
    """Each head scored by its own call of the scoring module on 3-D inputs."""
    Dh = D // mha.num_heads
    q, k, v = mha.W_q(queries), mha.W_k(keys), mha.W_v(values)
    heads = [mha.attention(q[..., h * Dh:(h + 1) * Dh], k[..., h * Dh:(h + 1) * Dh],
                           v[..., h * Dh:(h + 1) * Dh], valid_lens)
             for h in range(mha.num_heads)]
    return mha.W_o(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("scoring", SCORING_FUNCTIONS)
@pytest.mark.parametrize("pattern", ["ragged", "per_query_zero"])
def test_multihead_heads_are_one_batched_call(scoring, pattern):
    mha = MultiHeadAttention(D, H, 0.0, scoring=scoring).eval()
    calls = []
    mha.attention.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    queries, keys, values = torch.randn(B, Q, D), torch.randn(B, K, D), torch.randn(B, K, D)
    valid_lens = lens_of(pattern)

    out = mha(queries, keys, values, valid_lens)
    assert out.shape == (B, Q, D)
    assert calls == [(B, H, Q, D // H)]  # one call, all heads at once
    assert mha.attention.attention_weights.shape == (B, H, Q, K)
    calls.clear()
    assert_close(out, multihead_head_loop_reference(mha, queries, keys, values, valid_lens))


@pytest.mark.parametrize("scoring", SCORING_FUNCTIONS)
@pytest.mark.slow
def test_multihead_gradcheck_float64(scoring):
    mha = MultiHeadAttention(4, 2, 0.0, bias=True, scoring=scoring).double()
    queries = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    values = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck_module(mha, (queries, keys, values), torch.tensor([4, 2]))
    assert gradcheck_module(mha, (queries, keys, values), torch.tensor([[1, 2, 3], [0, 4, 1]]))


def gradcheck_module(module: nn.Module, inputs, valid_lens) -> bool:
    """gradcheck with respect to the inputs and every parameter of ``module``."""
    names = [name for name, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]

    def f(*args):
        state = dict(zip(names, args[len(inputs):]))
        return torch.func.functional_call(module, state, (*args[:len(inputs)], valid_lens))

    return gradcheck(f, (*inputs, *params))


# ---------------------------------------------------------------- invariances

def padded_key_positions(valid_lens: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` True at keys no query of the sequence may attend to."""
    longest = valid_lens if valid_lens.dim() == 1 else valid_lens.max(dim=1).values
    return torch.arange(K) >= longest[:, None]


@pytest.mark.parametrize("keep_weights", [True, False], ids=["explicit", "fast"])
@pytest.mark.parametrize("scoring", SCORING_FUNCTIONS)
@pytest.mark.parametrize("pattern", ["ragged", "zero", "per_query", "per_query_zero"])
def test_padded_keys_and_values_change_nothing(pattern, scoring, keep_weights):
    mha = MultiHeadAttention(D, H, 0.0, bias=True, scoring=scoring).eval()
    mha.attention.keep_weights = keep_weights
    queries, keys, values = torch.randn(B, Q, D), torch.randn(B, K, D), torch.randn(B, K, D)
    valid_lens = lens_of(pattern)
    padded = padded_key_positions(valid_lens)
    assert padded.any()

    other_keys, other_values = keys.clone(), values.clone()
    other_keys[padded] = 100 * torch.randn(int(padded.sum()), D)
    other_values[padded] = 100 * torch.randn(int(padded.sum()), D)
    assert_close(mha(queries, other_keys, other_values, valid_lens),
                 mha(queries, keys, values, valid_lens))


@pytest.mark.parametrize("keep_weights", [True, False], ids=["explicit", "fast"])
@pytest.mark.parametrize("scoring", SCORING_FUNCTIONS)
def test_causal_self_attention_does_not_look_ahead(scoring, keep_weights):
    mha = MultiHeadAttention(D, H, 0.0, scoring=scoring).eval()
    mha.attention.keep_weights = keep_weights
    T = 5
    X = torch.randn(B, T, D)
    valid_lens = causal_valid_lens(B, T)
    out = mha(X, X, X, valid_lens)
    for t in range(T):
        changed = X.clone()
        changed[:, t] = torch.randn(B, D)
        other = mha(changed, changed, changed, valid_lens)
        assert_close(other[:, :t], out[:, :t])
        assert not torch.allclose(other[:, t], out[:, t])  # the check can fail


# ---------------------------------------------------------------- errors

def test_multihead_rejects_indivisible_heads_and_unknown_scoring():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3, 0.0)
    with pytest.raises(ValueError, match="scoring"):
        MultiHeadAttention(D, H, 0.0, scoring="cosine")
