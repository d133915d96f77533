"""Tests for model/nadaraya_watson.py and scripts/attention_examples.py.

References: a NumPy evaluation of the Nadaraya–Watson estimator
``sum_i K(q - k_i) v_i / sum_j K(q - k_j)`` with the Gaussian density
``K(u) = exp(-u^2 / (2 h^2)) / (sqrt(2 pi) h)`` (normalising constant kept, so
the softmax form is checked too); its limits (nearest key as ``h -> 0``, mean
of the values as ``h -> inf``); the parametric model at ``w = 1 / h`` against
the non-parametric one; ``torch.autograd.gradcheck`` in float64; and
leave-one-out rows against ``torch.cat`` of the other points. The script is
run once into a temp folder. Everything runs in seconds on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.autograd import gradcheck
from torch.testing import assert_close

from model.nadaraya_watson import NWKernelRegression, leave_one_out, nadaraya_watson
from inference.plotting import show_heatmaps

from conftest import load_script

REPO = Path(__file__).resolve().parents[2]
BANDWIDTHS = [0.1, 0.5, 1.0, 3.0]


@pytest.fixture(scope="module")
def examples():
    return load_script("attention_examples")


def toy(n_q: int = 7, n_k: int = 11) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float64 queries in [-1, 6), sorted keys in [0, 5) and values (seeded by conftest)."""
    queries = torch.rand(n_q, dtype=torch.float64) * 7 - 1
    keys, _ = torch.sort(torch.rand(n_k, dtype=torch.float64) * 5)
    values = torch.randn(n_k, dtype=torch.float64)
    return queries, keys, values


def reference_nadaraya_watson(queries, keys, values, h):
    """The estimator with the Gaussian density, element by element in NumPy."""
    q, k, v = (t.numpy() for t in (queries, keys, values))
    density = np.exp(-((q[:, None] - k[None, :]) ** 2) / (2 * h ** 2)) / (np.sqrt(2 * np.pi) * h)
    weights = density / density.sum(axis=1, keepdims=True)
    return torch.from_numpy(weights @ v), torch.from_numpy(weights)


@pytest.mark.parametrize("h", BANDWIDTHS, ids=lambda h: f"h{h}")
def test_weights_are_a_distribution_over_training_points(h):
    queries, keys, values = toy()
    _, weights = nadaraya_watson(queries, keys, values, bandwidth=h)
    assert weights.shape == (len(queries), len(keys))
    assert (weights >= 0).all()
    assert_close(weights.sum(-1), torch.ones(len(queries), dtype=torch.float64))


@pytest.mark.parametrize("h", BANDWIDTHS, ids=lambda h: f"h{h}")
def test_matches_numpy_weighted_average(h):
    queries, keys, values = toy()
    predictions, weights = nadaraya_watson(queries, keys, values, bandwidth=h)
    expected_predictions, expected_weights = reference_nadaraya_watson(queries, keys, values, h)
    assert_close(weights, expected_weights)
    assert_close(predictions, expected_predictions)


def test_d2l_default_is_softmax_of_half_squared_distance():
    """h = 1 is d2l.ai's ``softmax(-(x - x_i)^2 / 2)``, written as d2l.ai writes it."""
    queries, keys, values = toy()
    X_repeat = queries.repeat_interleave(len(keys)).reshape((-1, len(keys)))
    expected = torch.softmax(-(X_repeat - keys) ** 2 / 2, dim=1)
    predictions, weights = nadaraya_watson(queries, keys, values)
    assert_close(weights, expected)
    assert_close(predictions, expected @ values)


def test_small_bandwidth_picks_the_nearest_training_point():
    keys = torch.tensor([0.0, 0.7, 1.5, 2.1, 3.4], dtype=torch.float64)
    values = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)
    at_training_inputs, _ = nadaraya_watson(keys, keys, values, bandwidth=1e-3)
    assert_close(at_training_inputs, values)
    between = torch.tensor([0.2, 1.0, 1.9, 5.0], dtype=torch.float64)  # nearest: 0.0, 0.7, 2.1, 3.4
    predictions, _ = nadaraya_watson(between, keys, values, bandwidth=1e-2)
    assert_close(predictions, values[[0, 1, 3, 4]])


def test_large_bandwidth_gives_the_mean_of_values():
    queries, keys, values = toy()
    predictions, weights = nadaraya_watson(queries, keys, values, bandwidth=1e4)
    assert_close(predictions, values.mean().expand(len(queries)), rtol=1e-6, atol=1e-6)
    assert_close(weights, torch.full_like(weights, 1 / len(keys)), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kwargs, match", [
    ({"bandwidth": 0.0}, "bandwidth must be > 0"),
    ({"bandwidth": -1.0}, "bandwidth must be > 0"),
    ({"bandwidth": float("nan")}, "bandwidth must be > 0"),
    ({"values": torch.zeros(3)}, "keys but 3 values"),
    ({"keys": torch.zeros(2, 11)}, "must be 1-D"),
], ids=["zero", "negative", "nan", "lengths", "2d_keys"])
def test_bad_inputs_say_what_to_do(kwargs, match):
    queries, keys, values = toy()
    args = {"queries": queries, "keys": keys, "values": values, **kwargs}
    with pytest.raises(ValueError, match=match):
        nadaraya_watson(**args)


@pytest.mark.parametrize("h", BANDWIDTHS, ids=lambda h: f"h{h}")
def test_parametric_model_with_w_one_over_h_is_nonparametric_pooling(h):
    queries, keys, values = toy()
    net = NWKernelRegression(w_init=1 / h).double()
    output = net(queries, keys.expand(len(queries), -1), values.expand(len(queries), -1))
    expected_predictions, expected_weights = nadaraya_watson(queries, keys, values, bandwidth=h)
    assert output.shape == (len(queries),)
    assert_close(output, expected_predictions)
    assert_close(net.attention_weights, expected_weights)


def test_parametric_model_gradients():
    queries, keys, values = toy(4, 5)
    keys, values = keys.expand(4, -1).contiguous(), values.expand(4, -1).contiguous()
    net = NWKernelRegression().double()

    def f(w, queries, keys, values):  # the module's forward with w as an input
        return torch.func.functional_call(net, {"w": w}, (queries, keys, values))

    inputs = tuple(t.detach().clone().requires_grad_(True) for t in (net.w, queries, keys, values))
    assert gradcheck(f, inputs)


def test_parametric_model_rejects_shared_1d_keys():
    queries, keys, values = toy()
    with pytest.raises(ValueError, match="keys.expand"):
        NWKernelRegression()(queries, keys, values)


def test_leave_one_out_excludes_the_point_itself():
    n = 6
    inputs, outputs = torch.randperm(n).double(), torch.randn(n, dtype=torch.float64)
    keys, values = leave_one_out(inputs, outputs)
    assert keys.shape == values.shape == (n, n - 1)
    for i in range(n):
        assert inputs[i] not in keys[i]
        assert_close(keys[i], torch.cat([inputs[:i], inputs[i + 1:]]))
        assert_close(values[i], torch.cat([outputs[:i], outputs[i + 1:]]))
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out(inputs[:1], outputs[:1])


def test_parametric_training_loss_falls(examples):
    torch.manual_seed(0)
    from benchmarks.examples import fit_parametric, toy_data

    data = toy_data()
    net, losses = fit_parametric(data["x_train"], data["y_train"], epochs=5, log=False)
    assert len(losses) == 5 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    # the learned kernel predicts the training outputs from the other points better than the
    # initial one did, and better than the mean of the outputs
    keys, values = leave_one_out(data["x_train"], data["y_train"])
    with torch.no_grad():
        final = float(((net(data["x_train"], keys, values) - data["y_train"]) ** 2).sum())
    assert final < losses[0]
    assert final < float(((data["y_train"] - data["y_train"].mean()) ** 2).sum())


@pytest.mark.slow
def test_script_writes_pngs(examples, tmp_path):
    result = examples.main(["--out", str(tmp_path / "examples")])
    assert set(result["paths"]) == {"nonparametric_predictions", "parametric_predictions",
                                    "nonparametric_attention", "parametric_attention",
                                    "attention_pooling_weights", "tanh_attention_weights"}
    # the pooling examples: the textbook's numbers, the mean, padding left out
    assert torch.tensor(result["pooled"]) == pytest.approx(torch.tensor([[.8, .8, 1], [.75, .75, .55]]))
    assert torch.tensor(result["mean"]) == pytest.approx(torch.tensor(
        [[.425, .425, .5], [.425, .425, .575]]))
    weights = result["pooling_weights"]
    assert weights.sum(1) == pytest.approx(torch.ones(2)) and (weights[0, 4:] == 0).all()
    for path in result["paths"].values():
        content = Path(path).read_bytes()
        assert content.startswith(b"\x89PNG\r\n\x1a\n"), path
        assert len(content) > 1000, path
    assert result["losses"][-1] < result["losses"][0]


def test_show_heatmaps_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(rows, cols, Q, K\)"):
        show_heatmaps(torch.rand(3, 4), xlabel="keys", ylabel="queries")
    with pytest.raises(ValueError, match="3 x tick labels for 4 columns"):
        show_heatmaps(torch.rand(1, 1, 2, 4), "keys", "queries", xticklabels=list("abc"))
    with pytest.raises(ValueError, match="1 y tick labels for 2 rows"):
        show_heatmaps(torch.rand(1, 1, 2, 4), "keys", "queries", yticklabels=["a"])
