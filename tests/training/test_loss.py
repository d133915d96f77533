"""The fused label-smoothed cross-entropy against ``F.cross_entropy``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.loss import label_smoothed_cross_entropy


def _case(n=40, v=23, dtype=torch.float64, pad_every=4, scale=3.0):
    logits = (torch.randn(n, v, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    target = torch.randint(0, v, (n,))
    target[::pad_every] = 0  # padding rows
    return logits, target


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_torch_cross_entropy(epsilon, dtype, tol):
    logits, target = _case(dtype=dtype)
    ref = F.cross_entropy(logits, target, ignore_index=0, label_smoothing=epsilon)
    (g_ref,) = torch.autograd.grad(ref * 1.7, logits)
    ours = label_smoothed_cross_entropy(logits, target, epsilon, ignore_index=0)
    (g_ours,) = torch.autograd.grad(ours * 1.7, logits)
    assert ours.item() == pytest.approx(ref.item(), rel=tol, abs=tol)
    torch.testing.assert_close(g_ours, g_ref, rtol=tol, atol=tol)
    assert g_ours[::4].abs().max() == 0  # padding rows get no gradient


def test_gradcheck_float64():
    logits, target = _case(n=9, v=7)
    assert torch.autograd.gradcheck(
        lambda z: label_smoothed_cross_entropy(z, target, 0.1, ignore_index=0), (logits,))


def test_bf16_logits_computed_in_float32():
    logits, target = _case(dtype=torch.bfloat16)
    ref = F.cross_entropy(logits.float(), target, ignore_index=0, label_smoothing=0.1)
    ours = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    ours.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_all_padding_and_extreme_logits():
    logits, target = _case()
    target[:] = 0
    loss = label_smoothed_cross_entropy(logits, target, 0.1, ignore_index=0)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max() == 0
    # a target 200 nats below the best class: F.cross_entropy gives ~200, the
    # value is clamped at ~87 but stays finite and the gradient is exact
    logits = torch.zeros(2, 5, requires_grad=True)
    with torch.no_grad():
        logits[:, 0] = 200.0
    target = torch.tensor([3, 0])
    ours = label_smoothed_cross_entropy(logits, target, 0.0)
    (g,) = torch.autograd.grad(ours, logits)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(logits, target), logits)
    assert torch.isfinite(ours) and 40 < ours.item() < 100
    torch.testing.assert_close(g, g_ref)


def test_bad_shapes_and_epsilon():
    with pytest.raises(ValueError, match=r"\(N, V\) and target \(N,\)"):
        label_smoothed_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="epsilon=1.0 must be in"):
        label_smoothed_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 1.0)
