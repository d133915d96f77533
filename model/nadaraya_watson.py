"""Nadaraya–Watson kernel regression: attention pooling by similarity.

The oldest attention mechanism: predict ``f(q)`` as a weighted average of the
training outputs ``v_i``, the weight of each given by how similar its input
``k_i`` is to the query ``q``,

    f(q) = sum_i alpha(q, k_i) v_i,    alpha(q, k_i) = K(q - k_i) / sum_j K(q - k_j).

With the Gaussian kernel ``K(u) = exp(-u^2 / (2 h^2)) / (sqrt(2 pi) h)`` the
normalising constant cancels and the weights are a softmax over the keys of
the scores ``-(q - k_i)^2 / (2 h^2)``:

    alpha(q, k_i) = softmax_i(-((q - k_i) / h)^2 / 2).

:func:`nadaraya_watson` is this non-parametric pooling with a fixed
bandwidth ``h``; :class:`NWKernelRegression` is d2l.ai's parametric version,
which multiplies the distance by a learned ``w`` (so ``w = 1 / h``) and is
trained on leave-one-out keys (:func:`leave_one_out`). Both score with
:func:`gaussian_scores` and normalise with the project's
:func:`~model.attention.masked_softmax`, so all attention weights in the
project come from the same softmax.

Shapes: n_q queries, n_k keys (= values); inputs and outputs are scalars.

Sources: Nadaraya, E. A. (1964), "On estimating regression", Theory of
Probability and Its Applications 9(1); Watson, G. S. (1964), "Smooth
regression analysis", Sankhyā A 26(4); d2l.ai §11.2 "Attention Pooling by
Similarity" (Gaussian kernel, eq. 11.2.1). The toy data, the learned ``w`` and
the leave-one-out training are from the earlier d2l.ai edition's section
"Attention Pooling: Nadaraya–Watson Kernel Regression" (``sec_nadaraya-watson``,
``NWKernelRegression``).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import masked_softmax

__all__ = ["gaussian_scores", "nadaraya_watson", "NWKernelRegression", "leave_one_out"]


def gaussian_scores(queries: torch.Tensor, keys: torch.Tensor,
                    scale: torch.Tensor | float) -> torch.Tensor:
    """Scores of the Gaussian kernel: ``-((q - k) * scale)^2 / 2``.

    ``scale`` is the inverse bandwidth ``1 / h`` (the learned ``w`` of
    :class:`NWKernelRegression`). Multiplying the distance before squaring
    (rather than dividing by ``2 h^2``) is the same number and keeps a tiny
    bandwidth from underflowing ``h^2`` to 0.

    Shapes:
        queries ``(n_q,)``, keys ``(n_k,)`` (shared by all queries) or
        ``(n_q, n_k)`` (one row per query), scale a float or a 1-element
        tensor -> scores ``(n_q, n_k)``.

    Source: d2l.ai §11.2, eq. 11.2.1 (Gaussian kernel), with a width.
    """
    return -((queries.unsqueeze(-1) - keys) * scale) ** 2 / 2  # (n_q, n_k)


def nadaraya_watson(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                    bandwidth: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-parametric attention pooling with a Gaussian kernel of width ``bandwidth``.

    ``attention_weights[i, j] = softmax_j(-(queries[i] - keys[j])^2 / (2 h^2))``
    and ``predictions[i] = sum_j attention_weights[i, j] * values[j]``. With
    ``h = 1`` this is d2l.ai's ``softmax(-(x - x_i)^2 / 2)``. As ``h -> 0``
    each query takes the value of its nearest key; as ``h -> inf`` every
    query gets the mean of the values.

    Args:
        queries: inputs to predict at ``(n_q,)``.
        keys: training inputs ``(n_k,)``.
        values: training outputs ``(n_k,)``.
        bandwidth: kernel width ``h > 0``, in units of the inputs.

    Returns:
        ``(predictions (n_q,), attention_weights (n_q, n_k))``; each row of
        the weights is non-negative and sums to 1.

    Raises:
        ValueError: if ``bandwidth`` is not positive, or the inputs are not
            1-D, or keys and values differ in length.

    Source: Nadaraya 1964; Watson 1964; d2l.ai §11.2 (``nadaraya_watson``).
    """
    if not bandwidth > 0:  # also catches NaN
        raise ValueError(f"bandwidth must be > 0 (the kernel width in units of the inputs); "
                         f"got {bandwidth}")
    if queries.dim() != 1 or keys.dim() != 1 or values.dim() != 1:
        raise ValueError(
            f"queries, keys and values must be 1-D (scalar inputs and outputs); got shapes "
            f"{tuple(queries.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}. For one "
            f"row of keys per query use NWKernelRegression")
    if keys.shape != values.shape:
        raise ValueError(f"{keys.numel()} keys but {values.numel()} values; pass one value "
                         f"(training output) per key (training input)")
    scores = gaussian_scores(queries, keys, 1.0 / bandwidth)  # (n_q, n_k)
    attention_weights = masked_softmax(scores, None)  # (n_q, n_k)
    return attention_weights @ values, attention_weights  # (n_q,), (n_q, n_k)


class NWKernelRegression(nn.Module):
    """Parametric Nadaraya–Watson regression: a Gaussian kernel with a learned width.

    ``attention_weights[i, j] = softmax_j(-((queries[i] - keys[i, j]) * w)^2 / 2)``
    and ``output[i] = sum_j attention_weights[i, j] * values[i, j]``, i.e.
    :func:`nadaraya_watson` with bandwidth ``1 / w`` but a row of keys per
    query. Each query has its own keys so that it can be trained with
    leave-one-out keys (:func:`leave_one_out`): were a training input among
    its own keys, the loss would be minimised by ``w -> inf`` (each point
    copies its own output). At test time pass the training inputs repeated
    for every query (``x_train.expand(n_q, -1)``).

    The weights of the last call are kept in ``.attention_weights`` for
    plotting, as in d2l.ai.

    Args:
        w_init: initial ``w``; None draws it from U(0, 1) as d2l.ai does.

    Shapes:
        queries ``(n_q,)``, keys ``(n_q, n_k)``, values ``(n_q, n_k)`` ->
        ``(n_q,)``; ``attention_weights`` ``(n_q, n_k)``; ``w`` ``(1,)``.

    Raises:
        ValueError: if the shapes do not match the above.

    Source: d2l.ai, earlier edition, "Attention Pooling: Nadaraya–Watson
    Kernel Regression" (``NWKernelRegression``), eq. ``nadaraya-watson-gaussian-para``.
    """

    def __init__(self, w_init: float | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.rand(1) if w_init is None else torch.tensor([float(w_init)]))
        self.attention_weights: torch.Tensor | None = None

    def forward(self, queries: torch.Tensor, keys: torch.Tensor,
                values: torch.Tensor) -> torch.Tensor:
        if queries.dim() != 1 or keys.dim() != 2 or keys.shape[0] != queries.shape[0] \
                or values.shape != keys.shape:
            raise ValueError(
                f"expected queries (n_q,), keys (n_q, n_k) and values (n_q, n_k); got "
                f"{tuple(queries.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}. Repeat "
                f"shared keys per query with keys.expand(n_q, -1), or build leave-one-out "
                f"keys with leave_one_out(x_train, y_train)")
        scores = gaussian_scores(queries, keys, self.w)  # (n_q, n_k)
        self.attention_weights = masked_softmax(scores, None)  # (n_q, n_k)
        pooled = self.attention_weights.unsqueeze(1) @ values.unsqueeze(-1)  # (n_q, 1, 1)
        return pooled.reshape(-1)  # (n_q,)


def leave_one_out(inputs: torch.Tensor, outputs: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values for training: each training point attends to all the others.

    Row ``i`` holds every training input (output) except the ``i``-th, in
    their original order.

    Args:
        inputs: training inputs ``(n,)``, the queries of training.
        outputs: training outputs ``(n,)``.

    Returns:
        ``(keys (n, n - 1), values (n, n - 1))``.

    Raises:
        ValueError: if the two are not 1-D of the same length ``n >= 2``.

    Source: d2l.ai, earlier edition, "Attention Pooling: Nadaraya–Watson
    Kernel Regression" (``X_tile[(1 - d2l.eye(n_train)).type(torch.bool)]``).
    """
    if inputs.dim() != 1 or inputs.shape != outputs.shape or inputs.numel() < 2:
        raise ValueError(
            f"inputs and outputs must be 1-D of the same length, at least 2; got shapes "
            f"{tuple(inputs.shape)} and {tuple(outputs.shape)}")
    n = inputs.numel()
    others = ~torch.eye(n, dtype=torch.bool, device=inputs.device)  # (n, n), False on the diagonal
    keys = inputs.expand(n, n)[others].reshape(n, n - 1)  # (n, n - 1)
    values = outputs.expand(n, n)[others].reshape(n, n - 1)  # (n, n - 1)
    return keys, values
