"""The kernels that compute additive (Bahdanau) attention scores for
:class:`model.attention.AdditiveAttention`.

``score(q, k) = w_v^T tanh(q + k)`` over a ``(B, [H,] Q, K, num_hiddens)`` hidden
tensor: :func:`_naive_additive_scores` is the formula; :class:`_ChunkedAdditiveScores`
computes it a few queries at a time and recomputes tanh in backward;
:func:`fused_additive_scores` computes scores and gradients with ``torch.compile``d
reductions that never store the hidden tensor. All three are tested against each
other (``tests/model/test_attention.py``).

Source: Bahdanau, Cho & Bengio 2015 (additive attention); d2l.ai "Attention
Scoring Functions".
"""

from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable

__all__ = ["fused_additive_available", "fused_additive_scores"]


def _naive_additive_scores(queries: torch.Tensor, keys: torch.Tensor,
                           w_v: torch.Tensor) -> torch.Tensor:
    """The textbook formula ``w_v^T tanh(q_i + k_j)`` with the whole hidden tensor at once.

    Args:
        queries: projected queries ``W_q q``, ``(B, [H,] Q, A)``.
        keys: projected keys ``W_k k``, ``(B, [H,] K, A)``.
        w_v: the output weights, ``(A,)``.

    Returns:
        Scores ``(B, [H,] Q, K)``. Holds (and autograd saves) a
        ``(B, [H,] Q, K, A)`` tensor; kept as the reference for
        :class:`_ChunkedAdditiveScores`.
    """
    features = torch.tanh(queries.unsqueeze(-2) + keys.unsqueeze(-3))  # (B, [H,] Q, K, A)
    return features @ w_v  # (B, [H,] Q, K)


class _ChunkedAdditiveScores(torch.autograd.Function):
    """:func:`_naive_additive_scores` a chunk of queries at a time, tanh recomputed in backward.

    Forward holds one chunk's ``(B, [H,] c, K, A)`` tanh tensor at a time and
    saves only its inputs. Backward recomputes each chunk's tanh ``t`` and
    turns it, in place, into ``dscore * (1 - t^2)``; its sums over keys and
    over queries, times ``w_v``, are the gradients of the queries and keys
    (``w_v`` does not depend on the query or key, so it multiplies the sums
    rather than every element). No double backward.
    """

    @staticmethod
    def forward(ctx, queries: torch.Tensor, keys: torch.Tensor, w_v: torch.Tensor,
                chunk_size: int) -> torch.Tensor:
        ctx.save_for_backward(queries, keys, w_v)
        ctx.chunk_size = chunk_size
        chunks = [torch.tanh_(q.unsqueeze(-2) + keys.unsqueeze(-3)) @ w_v  # (B, [H,] c, K)
                  for q in queries.split(chunk_size, dim=-2)]  # q: (B, [H,] c, A)
        return torch.cat(chunks, dim=-2)  # (B, [H,] Q, K)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_scores: torch.Tensor):
        queries, keys, w_v = ctx.saved_tensors
        grad_scores = grad_scores.to(torch.result_type(queries, keys))  # bf16 autocast may differ
        # Sums over many chunks: accumulate in at least float32 (bf16 / fp16 training).
        acc_dtype = torch.promote_types(keys.dtype, torch.float32)
        grad_queries, grad_keys = [], torch.zeros((), dtype=acc_dtype, device=keys.device)
        grad_w_v = torch.zeros_like(w_v, dtype=acc_dtype)
        for q, g in zip(queries.split(ctx.chunk_size, dim=-2),  # (B, [H,] c, A)
                        grad_scores.split(ctx.chunk_size, dim=-2)):  # (B, [H,] c, K)
            t = torch.tanh_(q.unsqueeze(-2) + keys.unsqueeze(-3))  # (B, [H,] c, K, A)
            grad_w_v += g.reshape(-1) @ t.reshape(-1, t.shape[-1])  # (A,)
            # d score / d (q + k) = w_v * (1 - t^2). Times the incoming gradient, in place;
            # w_v multiplies the sums instead (it depends on neither query nor key).
            grad_hidden = t.square_().neg_().add_(1).mul_(g.unsqueeze(-1))  # (B, [H,] c, K, A)
            grad_queries.append(grad_hidden.sum(dim=-2) * w_v)  # (B, [H,] c, A)
            grad_keys = grad_keys + grad_hidden.sum(dim=-3, dtype=acc_dtype)  # (B, [H,] K, A)
        return (torch.cat(grad_queries, dim=-2).sum_to_size(queries.shape).to(queries.dtype),
                (grad_keys * w_v).sum_to_size(keys.shape).to(keys.dtype),
                grad_w_v.to(w_v.dtype), None)


# ---------------------------------------------------------------- fused additive scores
#
# The three score functions below are written for torch.compile: Inductor fuses
# each broadcast ``tanh`` into the reduction that consumes it (a C++/OpenMP loop
# on CPU, a Triton kernel on GPU), so the (N, Q, K, A) hidden tensor is never
# written to memory. They are also plain PyTorch, and compute the same thing
# eagerly (materializing that tensor), which is what the tests compare.


def _reciprocal_exp(hidden: torch.Tensor) -> torch.Tensor:
    """``r(x) = 1 / (exp(2x) + 1)``, from which ``tanh(x) = 1 - 2r`` and
    ``1 - tanh^2(x) = 4 r (1 - r)``; exact at both ends (exp overflowing to
    inf gives r = 0, underflowing to 0 gives r = 1).

    Compiled on CPU this is about 2.7x faster than ``torch.tanh`` (Inductor's
    vectorized ``exp`` is a short polynomial, its ``tanh`` the 1-ULP SLEEF
    routine). Each use calls this function again, and :func:`_run_kernel`
    compiles with AOTAutograd's graph CSE off: Inductor stores a node with an
    ``exp`` that two consumers read (on CPU it realizes reused
    transcendental ops), which would bring back the ``(N, Q, K, A)`` buffer,
    while separate copies are each inlined into the loop, where the kernel's
    own common-subexpression elimination computes the ``exp`` once.
    """
    return 1 / (torch.exp(2 * hidden) + 1)


def _tanh_by_exp(hidden: torch.Tensor) -> torch.Tensor:
    """``tanh(x) = 1 - 2 r(x)`` (see :func:`_reciprocal_exp`)."""
    return 1 - 2 * _reciprocal_exp(hidden)


def _sech2_by_exp(hidden: torch.Tensor) -> torch.Tensor:
    """``1 - tanh^2(x) = 4 r(x) (1 - r(x))``, two copies of r (see :func:`_reciprocal_exp`)."""
    return 4 * _reciprocal_exp(hidden) * (1 - _reciprocal_exp(hidden))


def _hidden(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``q_i + k_j`` ``(N, Q, K, A)`` in float32 (float64 for float64 inputs); in the
    compiled kernels an expression inside their loops, never stored."""
    acc = torch.float64 if queries.dtype == torch.float64 else torch.float32
    return queries.to(acc).unsqueeze(-2) + keys.to(acc).unsqueeze(-3)


def _additive_scores_kernel(queries: torch.Tensor, keys: torch.Tensor,
                            w_v: torch.Tensor) -> torch.Tensor:
    """Scores ``w_v . tanh(q_i + k_j)`` of projected ``queries`` ``(N, Q, A)`` and
    ``keys`` ``(N, K, A)`` (one dtype) with ``w_v`` ``(A,)`` -> ``(N, Q, K)``, float32
    (float64 for float64 inputs)."""
    hidden = _hidden(queries, keys)  # (N, Q, K, A)
    return (_tanh_by_exp(hidden) * w_v.to(hidden.dtype)).sum(-1)  # (N, Q, K)


def _additive_query_grads_kernel(queries: torch.Tensor, keys: torch.Tensor,
                                 grad_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sums over keys, in one loop: ``sum_j g_ij (1 - tanh^2(q_i + k_j))`` and
    ``sum_j g_ij tanh(q_i + k_j)``, each ``(N, Q, A)``, for ``grad_scores`` ``g`` ``(N, Q, K)``."""
    hidden = _hidden(queries, keys)  # (N, Q, K, A)
    grad = grad_scores.to(hidden.dtype).unsqueeze(-1)  # (N, Q, K, 1)
    return ((grad * _sech2_by_exp(hidden)).sum(-2),  # (N, Q, A)
            (grad * _tanh_by_exp(hidden)).sum(-2))  # (N, Q, A)


def _additive_key_grads_kernel(queries: torch.Tensor, keys: torch.Tensor,
                               grad_scores: torch.Tensor) -> torch.Tensor:
    """``sum_i g_ij (1 - tanh^2(q_i + k_j))`` ``(N, K, A)`` for ``g`` ``(N, Q, K)``."""
    hidden = _hidden(queries, keys)  # (N, Q, K, A)
    grad = grad_scores.to(hidden.dtype).unsqueeze(-1)  # (N, Q, K, 1)
    return (grad * _sech2_by_exp(hidden)).sum(-3)  # (N, K, A)


#: Compiled versions of the kernels above, made on first use.
_COMPILED_KERNELS: dict = {}
#: Device type -> None (fused works there) or the error that made it fall back.
_FUSED_PROBES: dict[str, str | None] = {}
#: Enough compiled variants per kernel for every dtype x autocast x size-1 case.
_RECOMPILE_LIMIT = 64


def _run_kernel(kernel, *args: torch.Tensor):
    """Run ``kernel`` compiled by ``torch.compile(dynamic=True)`` (compiled once,
    reused for every sequence length); inside an outer ``torch.compile`` the
    plain function, which the outer graph fuses the same way."""
    if torch.compiler.is_compiling():
        return kernel(*args)
    compiled = _COMPILED_KERNELS.get(kernel)
    if compiled is None:
        compiled = _COMPILED_KERNELS[kernel] = torch.compile(kernel, dynamic=True, fullgraph=True)
    with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT), \
            torch._functorch.config.patch(cse=False):  # see _reciprocal_exp
        return compiled(*args)


class _FusedAdditiveScores(torch.autograd.Function):
    """Additive scores ``(N, Q, K)`` of ``(N, Q, A)`` queries and ``(N, K, A)``
    keys with compiled kernels that never store the ``(N, Q, K, A)`` tanh.

    Forward is one fused reduction over A and saves only its inputs. Backward
    recomputes the tanh twice, inside two fused reductions: over keys (the
    query gradient, and the ``w_v`` gradient before its sum over N and Q)
    and over queries (the key gradient); ``w_v`` multiplies the sums, as in
    :class:`_ChunkedAdditiveScores`. Everything accumulates in at least
    float32. No double backward.
    """

    @staticmethod
    def forward(ctx, queries: torch.Tensor, keys: torch.Tensor, w_v: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(queries, keys, w_v)
        scores = _run_kernel(_additive_scores_kernel, queries, keys, w_v)  # (N, Q, K)
        return scores.to(queries.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_scores: torch.Tensor):
        queries, keys, w_v = ctx.saved_tensors
        grad_scores = grad_scores.contiguous()  # (N, Q, K)
        # In this order, with in-place products, at most two (N, Q|K, A) sums are alive.
        sum_q, sum_w = _run_kernel(_additive_query_grads_kernel, queries, keys, grad_scores)
        grad_w_v = sum_w.sum(dim=(0, 1)).to(w_v.dtype)  # (A,)
        del sum_w
        w = w_v.to(sum_q.dtype)
        grad_queries = sum_q.mul_(w).to(queries.dtype)  # (N, Q, A)
        del sum_q
        sum_k = _run_kernel(_additive_key_grads_kernel, queries, keys, grad_scores)
        return grad_queries, sum_k.mul_(w).to(keys.dtype), grad_w_v  # (N, K, A), (A,)


def fused_additive_scores(queries: torch.Tensor, keys: torch.Tensor,
                          w_v: torch.Tensor) -> torch.Tensor:
    """Additive scores ``w_v^T tanh(q_i + k_j)`` without the hidden tensor in memory.

    Computes :func:`_naive_additive_scores` (same values and gradients,
    tested) with kernels that ``torch.compile`` fuses: the
    ``(B, [H,] Q, K, A)`` tanh is neither stored in forward nor saved for
    backward, which recomputes it (see :class:`_FusedAdditiveScores`).
    Sequence lengths are dynamic: one compilation serves every length (plus
    one for ``Q == K``, one per dtype and for length-1 axes).

    Args:
        queries: projected queries ``W_q q``, ``(B, [H,] Q, A)``.
        keys: projected keys ``W_k k``, ``(B, [H,] K, A)``; leading
            dimensions broadcast against the queries'.
        w_v: the output weights, ``(A,)``.

    Returns:
        Scores ``(B, [H,] Q, K)`` in the queries' and keys' result dtype.

    Raises:
        Whatever ``torch.compile`` raises where it cannot compile (no C++
        compiler, no Triton): :class:`AdditiveAttention` checks once per
        device type with :func:`fused_additive_available` and falls back.

    Source: the additive score of Bahdanau et al. 2015 (eq. A.1.2); fusing
    the score computation so that its large intermediate never reaches memory,
    and recomputing it in backward, as FlashAttention does for dot-product
    scores (Dao et al. 2022).
    """
    lead = torch.broadcast_shapes(queries.shape[:-2], keys.shape[:-2])  # (B, [H])
    (Q, A), K = queries.shape[-2:], keys.shape[-2]
    dtype = torch.result_type(queries, keys)
    q = queries.to(dtype).expand(*lead, Q, A).reshape(-1, Q, A).contiguous()  # (N, Q, A)
    k = keys.to(dtype).expand(*lead, K, A).reshape(-1, K, A).contiguous()  # (N, K, A)
    scores = _FusedAdditiveScores.apply(q, k, w_v)  # (N, Q, K)
    return scores.reshape(*lead, Q, K)  # (B, [H,] Q, K)


def fused_additive_available(device: torch.device | str) -> bool:
    """Whether :func:`fused_additive_scores` compiles and runs on ``device``'s type.

    Checked once per device type (``"cpu"``, ``"cuda"``, ...) by computing the
    scores and gradients of a tiny problem, which also compiles the kernels.
    Where that fails (no C++ compiler for Inductor's CPU backend, no Triton
    for CUDA, a device Inductor does not support) the reason is logged once
    as a warning and False is returned; :class:`AdditiveAttention` then
    uses the chunked kernel.
    """
    device = torch.device(device)
    if device.type not in _FUSED_PROBES:
        try:
            with torch.enable_grad(), torch.autocast(device.type, enabled=False):
                q = torch.randn(2, 3, 4, device=device, requires_grad=True)
                k = torch.randn(2, 5, 4, device=device, requires_grad=True)
                w = torch.randn(4, device=device, requires_grad=True)
                fused_additive_scores(q, k, w).sum().backward()
            _FUSED_PROBES[device.type] = None
        except Exception as error:  # noqa: BLE001 - any compiler failure means: fall back
            reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            _FUSED_PROBES[device.type] = reason
            warnings.warn(f"fused additive attention is unavailable on {device.type} "
                          f"(torch.compile failed: {reason}); using the chunked kernel, "
                          f"which is slower", RuntimeWarning, stacklevel=2)
    return _FUSED_PROBES[device.type] is None
