"""Attention mechanisms: masking, scoring functions and multi-head attention.

Everything that attends in this project goes through this file: one masking
helper (:func:`valid_mask`), one softmax that honours it (:func:`masked_softmax`)
and two scoring functions (:class:`DotProductAttention`,
:class:`AdditiveAttention`) that :class:`MultiHeadAttention` runs for all
heads at once.

Names and call signatures follow the attention chapter of d2l.ai
("Attention Scoring Functions", "Multi-Head Attention", "Self-Attention and
Positional Encoding"), so code written against ``d2l.torch`` runs unchanged.

Mask convention (used everywhere in the project): a boolean mask is ``True``
where a query may attend to a key and ``False`` at padding or future
positions. Convert to the opposite convention only at the boundary with a
library that uses it (``nn.MultiheadAttention``'s ``key_padding_mask``).

Shapes: B batch, H heads, Q queries, K keys, d query/key size, v value size.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend, sdpa_kernel

from .dropout import Dropout

__all__ = [
    "valid_mask",
    "causal_valid_lens",
    "masked_softmax",
    "DotProductAttention",
    "AdditiveAttention",
    "ADDITIVE_KERNELS",
    "fused_additive_scores",
    "fused_additive_available",
    "MultiHeadAttention",
    "SCORING_FUNCTIONS",
    "attention_pool",
    "AttentionPooling",
    "TanhAttention",
]

#: The scoring functions :class:`MultiHeadAttention` (and the Transformer
#: config's ``attention`` field) accept.
SCORING_FUNCTIONS = ("dot", "additive")

#: The kernels :class:`AdditiveAttention` can compute its scores with.
ADDITIVE_KERNELS = ("auto", "fused", "chunked", "naive")


def valid_mask(valid_lens: torch.Tensor | None, num_queries: int, num_keys: int,
               device: torch.device | None = None) -> torch.Tensor | None:
    """Turn valid lengths into the boolean attention mask (True = attend).

    This is the only place in the project where a mask is made from lengths.

    Args:
        valid_lens: ``None`` (attend everywhere), ``(B,)`` (one length per
            sequence, shared by all its queries) or ``(B, Q)`` (one length
            per query, e.g. :func:`causal_valid_lens`). Key ``j`` is valid
            for query ``i`` of sequence ``b`` iff ``j < valid_lens[b(, i)]``.
        num_queries: Q.
        num_keys: K.
        device: where to build the mask; defaults to ``valid_lens.device``.

    Returns:
        ``None`` when ``valid_lens`` is None, else a bool tensor of shape
        ``(B, 1, K)`` for 1-D ``valid_lens`` or ``(B, Q, K)`` for 2-D.

    Raises:
        ValueError: if ``valid_lens`` has more than 2 dimensions, or its
            second dimension is not Q.

    Source: d2l.ai §11.3 (``_sequence_mask``), generalised to 2-D lengths.
    """
    if valid_lens is None:
        return None
    device = device if device is not None else valid_lens.device
    positions = torch.arange(num_keys, device=device)  # (K,)
    if valid_lens.dim() == 1:
        return positions[None, None, :] < valid_lens.to(device)[:, None, None]  # (B, 1, K)
    if valid_lens.dim() == 2:
        if valid_lens.shape[1] != num_queries:
            raise ValueError(
                f"valid_lens has shape {tuple(valid_lens.shape)} but there are "
                f"{num_queries} queries; 2-D valid_lens must be (batch, num_queries)")
        return positions[None, None, :] < valid_lens.to(device)[:, :, None]  # (B, Q, K)
    raise ValueError(
        f"valid_lens must be None, (batch,) or (batch, num_queries); got shape "
        f"{tuple(valid_lens.shape)}")


def causal_valid_lens(batch_size: int, num_steps: int, device: torch.device | None = None,
                      offset: int = 0) -> torch.Tensor:
    """Valid lengths that make self-attention causal (no peeking ahead).

    Query ``i`` may attend to keys ``0 .. offset + i``; passed as ``valid_lens``
    to any attention in this file this gives the decoder's masked
    self-attention with the same masking code as padding.

    Args:
        batch_size: B.
        num_steps: number of queries T.
        device: device of the result.
        offset: number of earlier positions already in the keys (incremental
            decoding with a cache); 0 in training.

    Returns:
        Long tensor ``(B, T)`` whose row is ``offset + 1, ..., offset + T``.

    Source: d2l.ai §11.7 (``dec_valid_lens`` in ``TransformerDecoderBlock``).
    """
    steps = torch.arange(offset + 1, offset + num_steps + 1, device=device)  # (T,)
    return steps.unsqueeze(0).expand(batch_size, num_steps)  # (B, T)


def _broadcast_mask(mask: torch.Tensor | None, scores_dim: int) -> torch.Tensor | None:
    """Insert head dimensions so a ``(B, Q|1, K)`` mask broadcasts over
    scores of shape ``(B, ..., Q, K)``."""
    if mask is None:
        return None
    for _ in range(scores_dim - 3):
        mask = mask.unsqueeze(1)
    return mask


def masked_softmax(X: torch.Tensor, valid_lens: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last axis that gives weight exactly 0 beyond the valid length.

    Args:
        X: scores ``(B, Q, K)``, or ``(B, H, Q, K)`` with the mask shared by
            the H heads.
        valid_lens: ``None``, ``(B,)`` or ``(B, Q)``; see :func:`valid_mask`.

    Returns:
        Weights of the shape of ``X``; each row sums to 1 over its valid keys
        and is exactly 0 at keys at or beyond the valid length. A valid
        length of 0 gives an all-zero row (so the attention output for that
        query is the zero vector, and no NaN reaches the gradients); this is
        also what ``F.scaled_dot_product_attention`` returns for a fully
        masked row.

    Raises:
        ValueError: from :func:`valid_mask` for badly shaped ``valid_lens``.

    Source: d2l.ai §11.3.2 (masked softmax operation).
    """
    if valid_lens is None:
        return F.softmax(X, dim=-1)
    mask = _broadcast_mask(valid_mask(valid_lens, X.shape[-2], X.shape[-1], X.device), X.dim())
    # A finite fill keeps fully masked rows NaN-free (uniform, then zeroed).
    scores = X.masked_fill(~mask, torch.finfo(X.dtype).min)
    return F.softmax(scores, dim=-1).masked_fill(~mask, 0.0)


def _sdpa_backends(device: torch.device) -> list[SDPBackend]:
    """Kernels ``F.scaled_dot_product_attention`` may pick on ``device``.

    On CPU the fused flash kernel is about 3x slower than the math kernel at
    the sentence lengths of translation (fwd+bwd, bf16, (204, 4, 15, 64) with
    a padding mask: 33 ms vs 11 ms on 2 cores), so CPU uses the math kernel;
    on GPU every kernel is allowed.
    """
    if device.type == "cpu":
        return [SDPBackend.MATH]
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


class DotProductAttention(nn.Module):
    """Scaled dot-product attention: ``softmax(Q K^T / sqrt(d)) V``.

    When ``keep_weights`` is True (the default, as in d2l.ai) the weights of
    the last call are kept in ``.attention_weights`` for plotting, computed
    by the explicit path (:func:`masked_softmax`). When False, the call uses
    ``F.scaled_dot_product_attention`` (fused kernels) with the same mask,
    which computes the same function (tested) and sets
    ``.attention_weights`` to None.

    ``forward(..., is_causal=True)`` applies the causal mask (query ``i``
    sees keys ``0..i``, ``valid_lens`` ignored) without building it, so the
    fused kernel can use its causal mode (FlashAttention on GPU).

    Args:
        dropout: dropout probability on the attention weights (training only).
        keep_weights: keep the attention weights of each call.

    Shapes:
        queries ``(B, [H,] Q, d)``, keys ``(B, [H,] K, d)``, values
        ``(B, [H,] K, v)``, ``valid_lens`` None / ``(B,)`` / ``(B, Q)``
        -> output ``(B, [H,] Q, v)``; ``attention_weights`` ``(B, [H,] Q, K)``.

    Raises:
        ValueError: for badly shaped ``valid_lens`` (see :func:`valid_mask`),
            or ``is_causal`` with ``Q != K``.

    Source: Vaswani et al. 2017, eq. 1; d2l.ai §11.3.3.
    """

    def __init__(self, dropout: float, keep_weights: bool = True):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.keep_weights = keep_weights
        self.attention_weights: torch.Tensor | None = None

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid_lens: torch.Tensor | None = None, is_causal: bool = False
                ) -> torch.Tensor:
        if is_causal and queries.shape[-2] != keys.shape[-2]:
            raise ValueError(f"is_causal needs as many queries as keys, got "
                             f"{queries.shape[-2]} queries and {keys.shape[-2]} keys")
        if not self.keep_weights:
            self.attention_weights = None
            mask = None
            if not is_causal:
                mask = valid_mask(valid_lens, queries.shape[-2], keys.shape[-2], queries.device)
                mask = _broadcast_mask(mask, queries.dim())
            with sdpa_kernel(_sdpa_backends(queries.device)):
                return F.scaled_dot_product_attention(
                    queries, keys, values, attn_mask=mask, is_causal=is_causal,
                    dropout_p=self.dropout.p if self.training else 0.0)
        if is_causal:
            valid_lens = causal_valid_lens(queries.shape[0], queries.shape[-2], queries.device)
        d = queries.shape[-1]
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(d)  # (B, [H,] Q, K)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return self.dropout(self.attention_weights) @ values  # (B, [H,] Q, v)


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


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention: score ``w_v^T tanh(W_q q + W_k k)``.

    Queries and keys may have different sizes. When ``query_size`` /
    ``key_size`` are not given the projections are lazy (sized on the first
    call), as in d2l.ai.

    Kernels: the textbook formula holds a ``(B, [H,] Q, K, A)`` hidden tensor
    (A = ``num_hiddens``) and autograd saves it for backward: 256 MiB in
    float32 at B=64, H=8, Q=K=64, A=32, against 8 MiB for the ``(B, H, Q, K)``
    scores. Three kernels compute the same function (tested against each
    other and the formula), chosen by ``kernel``:

    - ``"fused"`` (:func:`fused_additive_scores`): ``torch.compile``d
      reductions that compute each ``tanh`` inside the loop that sums it, in
      forward and (recomputed) in backward; the hidden tensor never reaches
      memory. Needs Inductor: a C++ compiler on CPU, Triton on GPU. The first
      call compiles (seconds); one compilation serves every sequence length.
    - ``"chunked"``: eager PyTorch, a chunk of ``c`` queries at a time, ``c``
      the largest count whose ``(B, [H,] c, K, A)`` tensor has at most
      ``chunk_elements`` elements (at least one query); backward recomputes
      each chunk's ``tanh``. ``chunk_elements=None`` computes the whole tensor
      at once.
    - ``"naive"``: the formula with plain autograd (the tests' reference).
    - ``"auto"`` (default): ``"fused"`` where :func:`fused_additive_available`
      says it compiles on the inputs' device, otherwise ``"chunked"`` (with a
      warning, once).

    ``scripts/benchmark_attention.py`` measures all three against dot-product
    attention (README, "Additive attention kernels").

    Args:
        num_hiddens: size A of the hidden layer ``W_q q + W_k k``.
        dropout: dropout probability on the attention weights.
        key_size: feature size of the keys, or None for lazy.
        query_size: feature size of the queries, or None for lazy.
        chunk_elements: most elements of the hidden tensor the chunked kernel
            holds at once, or None for all at once. The default, 2**22, is
            16 MiB in float32 (4 queries per chunk in the example above).
            Also settable as an attribute.
        kernel: ``"auto"``, ``"fused"``, ``"chunked"`` or ``"naive"`` (above);
            also settable as an attribute.

    Shapes:
        queries ``(B, [H,] Q, q)``, keys ``(B, [H,] K, k)``, values
        ``(B, [H,] K, v)``, ``valid_lens`` None / ``(B,)`` / ``(B, Q)``
        -> output ``(B, [H,] Q, v)``; ``attention_weights`` ``(B, [H,] Q, K)``.
        ``projected_keys`` (optional, from :meth:`project_keys`)
        ``(B, [H,] K, A)`` replaces ``W_k keys``, so a decoder that attends
        to the same keys at every step projects them once.

    Raises:
        ValueError: for an unknown ``kernel`` or badly shaped ``valid_lens``
            (see :func:`valid_mask`).

    Source: Bahdanau et al. 2015, eq. A.1.2; d2l.ai §11.3.2. Chunking the
    queries: Rabe & Staats 2021, "Self-attention does not need O(n^2)
    memory"; recomputing in backward: Chen et al. 2016, "Training deep nets
    with sublinear memory cost"; fusing: see :func:`fused_additive_scores`.
    """

    def __init__(self, num_hiddens: int, dropout: float, key_size: int | None = None,
                 query_size: int | None = None, chunk_elements: int | None = 2 ** 22,
                 kernel: str = "auto"):
        super().__init__()
        self.W_k = (nn.LazyLinear(num_hiddens, bias=False) if key_size is None
                    else nn.Linear(key_size, num_hiddens, bias=False))
        self.W_q = (nn.LazyLinear(num_hiddens, bias=False) if query_size is None
                    else nn.Linear(query_size, num_hiddens, bias=False))
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)
        self.dropout = Dropout(dropout)
        self.chunk_elements = chunk_elements
        self.kernel = kernel
        self.keep_weights = True  # same switch as DotProductAttention; weights are always computed
        self.attention_weights: torch.Tensor | None = None

    def chunk_size(self, queries: torch.Tensor, keys: torch.Tensor) -> int | None:
        """Queries per chunk of the chunked kernel for projected ``queries``
        ``(B, [H,] Q, A)`` and ``keys`` ``(B, [H,] K, A)``; None for all at once."""
        if self.chunk_elements is None:
            return None
        lead = torch.broadcast_shapes(queries.shape[:-2], keys.shape[:-2])  # (B, [H])
        per_query = math.prod(lead) * keys.shape[-2] * keys.shape[-1]  # numel (B, [H,] 1, K, A)
        return max(1, self.chunk_elements // max(1, per_query))

    def resolved_kernel(self, device: torch.device | str) -> str:
        """The kernel that runs on ``device``: ``kernel`` with ``"auto"`` resolved.

        Raises:
            ValueError: if ``kernel`` is not one of :data:`ADDITIVE_KERNELS`.
        """
        if self.kernel not in ADDITIVE_KERNELS:
            raise ValueError(f"AdditiveAttention kernel={self.kernel!r} is unknown; "
                             f"use one of {ADDITIVE_KERNELS}")
        if self.kernel != "auto":
            return self.kernel
        return "fused" if fused_additive_available(device) else "chunked"

    def project_keys(self, keys: torch.Tensor) -> torch.Tensor:
        """``W_k keys``: ``(B, [H,] K, k)`` -> ``(B, [H,] K, A)``, for ``projected_keys``."""
        return self.W_k(keys)

    def scores(self, queries: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        """Unnormalized scores ``(B, [H,] Q, K)`` of raw ``queries`` ``(B, [H,] Q, q)``
        against projected keys ``(B, [H,] K, A)``, by :meth:`resolved_kernel`."""
        queries = self.W_q(queries)  # (B, [H,] Q, A)
        w_v = self.w_v.weight[0]  # (A,)
        kernel = self.resolved_kernel(queries.device)
        if kernel == "fused":
            return fused_additive_scores(queries, projected_keys, w_v)
        chunk_size = self.chunk_size(queries, projected_keys) if kernel == "chunked" else None
        if chunk_size is None:
            return _naive_additive_scores(queries, projected_keys, w_v)
        return _ChunkedAdditiveScores.apply(queries, projected_keys, w_v, chunk_size)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid_lens: torch.Tensor | None = None, *,
                projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        if projected_keys is None:
            projected_keys = self.project_keys(keys)  # (B, [H,] K, A)
        scores = self.scores(queries, projected_keys)  # (B, [H,] Q, K)
        weights = masked_softmax(scores, valid_lens)
        self.attention_weights = weights if self.keep_weights else None
        return self.dropout(weights) @ values  # (B, [H,] Q, v)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with all heads in one batched computation.

    Queries, keys and values are projected to ``num_hiddens`` features, split
    into ``num_heads`` heads of ``num_hiddens // num_heads`` features, scored
    by one scoring module for all heads at once (no loop over heads), and the
    concatenated heads are projected back by ``W_o``.

    Args:
        num_hiddens: model width D (output size and total projection size).
        num_heads: H; must divide ``num_hiddens``.
        dropout: dropout on the attention weights.
        bias: whether the four projections have biases.
        scoring: ``"dot"`` (scaled dot product, fused kernel when weights are
            not kept) or ``"additive"`` (an :class:`AdditiveAttention` of
            hidden size ``num_hiddens // num_heads`` shared by the heads,
            each head scoring its own projected queries and keys).
        query_size, key_size, value_size: input feature sizes; default
            ``num_hiddens``.

    Shapes:
        queries ``(B, Q, q)``, keys ``(B, K, k)``, values ``(B, K, v)``,
        ``valid_lens`` None / ``(B,)`` / ``(B, Q)`` -> ``(B, Q, D)``.
        ``self.attention.attention_weights`` is ``(B, H, Q, K)`` when kept.

    Raises:
        ValueError: if ``num_hiddens`` is not divisible by ``num_heads`` or
            ``scoring`` is unknown.

    Source: Vaswani et al. 2017, §3.2.2; d2l.ai §11.5.
    """

    def __init__(self, num_hiddens: int, num_heads: int, dropout: float, bias: bool = False,
                 scoring: str = "dot", query_size: int | None = None,
                 key_size: int | None = None, value_size: int | None = None):
        super().__init__()
        if num_hiddens % num_heads != 0:
            raise ValueError(
                f"num_hiddens={num_hiddens} is not divisible by num_heads={num_heads}; "
                f"choose num_heads among the divisors of num_hiddens")
        if scoring not in SCORING_FUNCTIONS:
            raise ValueError(f"scoring={scoring!r} is unknown; use one of {SCORING_FUNCTIONS}")
        self.num_heads = num_heads
        self.scoring = scoring
        head_size = num_hiddens // num_heads
        if scoring == "dot":
            self.attention: nn.Module = DotProductAttention(dropout)
        else:
            self.attention = AdditiveAttention(head_size, dropout, key_size=head_size,
                                               query_size=head_size)
        self.W_q = nn.Linear(query_size or num_hiddens, num_hiddens, bias=bias)
        self.W_k = nn.Linear(key_size or num_hiddens, num_hiddens, bias=bias)
        self.W_v = nn.Linear(value_size or num_hiddens, num_hiddens, bias=bias)
        self.W_o = nn.Linear(num_hiddens, num_hiddens, bias=bias)

    def transpose_qkv(self, X: torch.Tensor) -> torch.Tensor:
        """Split the last axis into heads: ``(B, T, D)`` -> ``(B, H, T, D/H)``."""
        X = X.reshape(X.shape[0], X.shape[1], self.num_heads, -1)  # (B, T, H, Dh)
        return X.transpose(1, 2)  # (B, H, T, Dh)

    def transpose_output(self, X: torch.Tensor) -> torch.Tensor:
        """Concatenate heads: ``(B, H, T, D/H)`` -> ``(B, T, D)``."""
        X = X.transpose(1, 2)  # (B, T, H, Dh)
        return X.reshape(X.shape[0], X.shape[1], -1)  # (B, T, D)

    def project_kv(self, keys: torch.Tensor, values: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project and split keys/values into heads (what a decoding cache stores).

        ``(B, K, k)``, ``(B, K, v)`` -> ``(B, H, K, Dh)``, ``(B, H, K, Dh)``.
        """
        keys = self.transpose_qkv(self.W_k(keys))  # (B, H, K, Dh)
        values = self.transpose_qkv(self.W_v(values))  # (B, H, K, Dh)
        return keys, values

    def project_qkv(self, X: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention's three projections of ``X`` ``(B, T, D)`` in one matrix product.

        ``W_q``, ``W_k`` and ``W_v`` stay separate parameters (as in d2l.ai);
        their weights are concatenated for the call, so the result equals the
        three separate projections (tested), with one ``(B*T, D) x (D, 3D)``
        product instead of three. Returns queries, keys, values, each
        ``(B, H, T, Dh)``.

        Source: the packed ``in_proj_weight`` of ``torch.nn.MultiheadAttention``.
        """
        weight = torch.cat([self.W_q.weight, self.W_k.weight, self.W_v.weight])  # (3D, D)
        bias = None
        if self.W_q.bias is not None:
            bias = torch.cat([self.W_q.bias, self.W_k.bias, self.W_v.bias])  # (3D,)
        queries, keys, values = F.linear(X, weight, bias).chunk(3, dim=-1)  # (B, T, D) each
        return self.transpose_qkv(queries), self.transpose_qkv(keys), self.transpose_qkv(values)

    def scoring_keys(self, keys: torch.Tensor) -> torch.Tensor | None:
        """What the scoring function computes from the keys alone, for a decoding
        cache: additive scoring's ``W_k`` of the head-split keys ``(B, H, K, Dh)``
        -> ``(B, H, K, Dh)``; None for dot-product scoring (nothing to keep).

        Passed back as ``projected_keys`` to :meth:`attend_heads` / :meth:`attend`,
        it spares a decoder re-projecting the same keys at every step.
        """
        if isinstance(self.attention, AdditiveAttention):
            return self.attention.project_keys(keys)
        return None

    def attend_heads(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     valid_lens: torch.Tensor | None = None, is_causal: bool = False,
                     projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        """Attend with projected, head-split queries ``(B, H, Q, Dh)`` to keys and
        values ``(B, H, K, Dh)`` -> ``(B, Q, D)`` (after ``W_o``).

        ``is_causal`` is a hint that ``valid_lens`` is exactly the causal mask
        (``Q == K``, position ``i`` sees keys ``0..i``): the fused dot-product
        kernel then uses its causal mode (FlashAttention on GPU) instead of a
        ``(B, Q, K)`` mask. The result is the same either way (tested).
        ``projected_keys``: :meth:`scoring_keys` of ``keys``, if kept (additive
        scoring only; the same result as without).
        """
        if is_causal and isinstance(self.attention, DotProductAttention):
            output = self.attention(queries, keys, values, valid_lens, is_causal=True)
        elif projected_keys is not None:
            output = self.attention(queries, keys, values, valid_lens,
                                    projected_keys=projected_keys)  # (B, H, Q, Dh)
        else:
            output = self.attention(queries, keys, values, valid_lens)  # (B, H, Q, Dh)
        return self.W_o(self.transpose_output(output))  # (B, Q, D)

    def attend(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               valid_lens: torch.Tensor | None = None,
               projected_keys: torch.Tensor | None = None) -> torch.Tensor:
        """Attend with raw queries ``(B, Q, q)`` to projected, head-split keys and
        values ``(B, H, K, Dh)`` (from :meth:`project_kv`) -> ``(B, Q, D)``;
        ``projected_keys`` as in :meth:`attend_heads`."""
        queries = self.transpose_qkv(self.W_q(queries))  # (B, H, Q, Dh)
        return self.attend_heads(queries, keys, values, valid_lens,
                                 projected_keys=projected_keys)  # (B, Q, D)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                valid_lens: torch.Tensor | None = None) -> torch.Tensor:
        if queries is keys and keys is values and self._packable():
            # Self-attention: one fused projection (same result, fewer kernels).
            return self.attend_heads(*self.project_qkv(queries), valid_lens)  # (B, Q, D)
        return self.attend(queries, *self.project_kv(keys, values), valid_lens)  # (B, Q, D)

    def _packable(self) -> bool:
        return (self.W_q.in_features == self.W_k.in_features == self.W_v.in_features
                and self.W_v.out_features == self.W_q.out_features)


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
