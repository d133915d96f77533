"""model.dropout.Dropout: the distribution of inverted dropout (Srivastava et
al. 2014), checked against its definition and against nn.Dropout."""

import math

import pytest
import torch
from torch import nn

from model.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_keep_rate_and_scale_match_the_definition(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5  # no zeros: a zero output means dropped
    y = dropout(x, p)
    kept = y != 0
    n = x.numel()
    # binomial(n, 1 - p): 5 standard deviations
    assert abs(kept.sum().item() - n * (1 - p)) < 5 * math.sqrt(n * p * (1 - p))
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_same_moments_as_nn_dropout(p):
    torch.manual_seed(0)
    x = torch.randn(2000, 500)
    ours, ref = Dropout(p)(x), nn.Dropout(p)(x)
    # both are unbiased and have variance E[x^2] * p / (1 - p) around x
    for y in (ours, ref):
        assert abs((y - x).mean().item()) < 5e-3
    var_ours, var_ref = (ours - x).pow(2).mean().item(), (ref - x).pow(2).mean().item()
    assert var_ours == pytest.approx(var_ref, rel=0.02)
    assert var_ours == pytest.approx(x.pow(2).mean().item() * p / (1 - p), rel=0.02)


def test_backward_uses_the_forward_mask():
    torch.manual_seed(0)
    x = (torch.rand(64, 33, dtype=torch.float64) + 0.5).requires_grad_()
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    mask = (y != 0).to(x.dtype)
    torch.testing.assert_close(x.grad, g * mask / 0.7)
    # and it is the derivative of the function it computed (fixed mask)
    torch.manual_seed(1)
    x2 = (torch.rand(6, 5, dtype=torch.float64) + 0.5).requires_grad_()
    state = torch.get_rng_state()

    def f(inp):
        torch.set_rng_state(state)  # the same mask at every evaluation
        return dropout(inp, 0.3)
    assert torch.autograd.gradcheck(f, (x2,))


def test_identity_in_eval_mode_and_for_p_zero():
    x = torch.randn(8, 16)
    m = Dropout(0.3).eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x
    assert dropout(x, 0.5, training=False) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_seeded_masks_repeat_and_dtype_is_kept():
    x = torch.randn(32, 32).to(torch.bfloat16)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_bad_probability_is_refused(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(torch.ones(3), p)
    with pytest.raises(ValueError):
        Dropout(p)
