"""Dropout whose mask is drawn with ``torch.rand`` (a faster CPU path).

``nn.Dropout`` draws its mask with ``Tensor.bernoulli_``, which on the CPU is
much slower than drawing uniform numbers with ``torch.rand`` and comparing
them with ``p``: ``python scripts/benchmark_train.py --config
configs/multi30k_tiny.yaml --precision fp32 --profile`` (2-core AMD EPYC
family 23 model 49, float32) gave 287 ms per step in ``aten::bernoulli_``
(17% of a Transformer-tiny training step) before, 90 ms in
``aten::uniform_`` after. :class:`Dropout` computes the same
function: every element is zeroed independently with probability ``p`` and
the kept ones are scaled by ``1 / (1 - p)``; backward multiplies the gradient
by the same (saved, boolean) mask. Only the random numbers differ from
``nn.Dropout``'s, so a seeded run draws other masks than with ``nn.Dropout``.
On CUDA and other devices, where PyTorch's fused kernel is fast, it calls
``F.dropout``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Dropout", "dropout"]


class _UniformMaskDropout(torch.autograd.Function):
    """``x * (U >= p) / (1 - p)`` with ``U ~ Uniform[0, 1)`` drawn in float32."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(x.shape, device=x.device) >= p  # same shape as x, bool
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return (x * keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return (grad_output * keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout (Srivastava et al. 2014; d2l.ai §5.6), fast on the CPU.

    Shapes: ``x`` any shape; the output has the same shape and dtype.

    Args:
        x: input activations.
        p: probability of zeroing an element, in ``[0, 1]``.
        training: identity when False (as in ``F.dropout``).

    Returns:
        ``x`` with each element zeroed with probability ``p`` and the others
        multiplied by ``1 / (1 - p)`` (all zeros for ``p = 1``).

    Raises:
        ValueError: if ``p`` is outside ``[0, 1]``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0 or x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, training=True)
    return _UniformMaskDropout.apply(x, float(p))


class Dropout(nn.Dropout):
    """Drop-in ``nn.Dropout`` (same ``p``, same ``train()``/``eval()``) using
    :func:`dropout`: same distribution, a cheaper mask on the CPU.

    Shapes: input any shape, output the same.

    Raises:
        ValueError: if ``p`` is outside ``[0, 1]`` (from ``nn.Dropout``).

    Source: Srivastava et al. 2014, "Dropout"; d2l.ai §5.6.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return F.dropout(x, self.p, self.training, inplace=True)
        return dropout(x, self.p, self.training)
