"""Attention mechanisms: masking, scoring functions and multi-head attention.

Everything that attends in this project goes through this file: one masking
helper (:func:`valid_mask`), one softmax that honours it (:func:`masked_softmax`)
and two scoring functions (:class:`DotProductAttention`,
:class:`AdditiveAttention`) that :class:`MultiHeadAttention` runs for all
heads at once. The additive scores' kernels are in
:mod:`model.additive_kernels`, attention pooling in :mod:`model.pooling`.

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

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .additive_kernels import (_ChunkedAdditiveScores, _naive_additive_scores,
                               fused_additive_available, fused_additive_scores)
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
