"""Worked examples of the attention library, as ``scripts/attention_examples.py``
prints and plots them: Nadaraya–Watson kernel regression on d2l.ai's toy
data (non-parametric and with a learned bandwidth), soft attention pooling,
``AttentionPooling`` and HiT-MAC's ``TanhAttention``.

Source: d2l.ai §11.2; Qiu Xipeng, *Neural Networks and Deep Learning*,
pp. 199–203; Xu, Zhong & Wang, NeurIPS 2020.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from inference.plotting import show_heatmaps  # (selects the Agg backend first)
from model.pooling import AttentionPooling, TanhAttention, attention_pool
from model.nadaraya_watson import NWKernelRegression, leave_one_out

import matplotlib.pyplot as plt  # noqa: E402  (after inference.plotting: no display needed)

__all__ = ["truth", "toy_data", "fit_parametric", "plot_predictions", "plot_attention",
           "pooling_examples"]


def truth(x: torch.Tensor) -> torch.Tensor:
    """The noise-free function ``f(x) = 2 sin(x) + x^0.8`` of d2l.ai."""
    return 2 * torch.sin(x) + x ** 0.8


def toy_data(n_train: int = 50) -> dict[str, torch.Tensor]:
    """d2l.ai's regression data, drawn from the global torch generator (seed it first).

    Returns ``x_train``, ``y_train`` ``(n_train,)`` (inputs sorted, outputs
    with N(0, 0.5^2) noise), ``x_test`` ``(50,)`` = ``arange(0, 5, 0.1)`` and
    ``y_truth`` = ``f(x_test)``.
    """
    x_train, _ = torch.sort(torch.rand(n_train) * 5)  # (n_train,)
    y_train = truth(x_train) + torch.normal(0.0, 0.5, (n_train,))  # (n_train,)
    x_test = torch.arange(0, 5, 0.1)  # (n_test,)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_truth": truth(x_test)}


def fit_parametric(x_train: torch.Tensor, y_train: torch.Tensor, epochs: int = 5,
                   lr: float = 0.5, log: bool = True) -> tuple[NWKernelRegression, list[float]]:
    """Learn ``w`` of :class:`NWKernelRegression` by full-batch SGD on leave-one-out keys.

    The loss is the squared error summed over the training points (as in
    d2l.ai). Returns the model and the loss before each step.
    """
    keys, values = leave_one_out(x_train, y_train)  # (n, n - 1), (n, n - 1)
    net = NWKernelRegression()
    loss = nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        l = loss(net(x_train, keys, values), y_train)
        l.backward()
        optimizer.step()
        losses.append(float(l.detach()))
        if log:
            print(f"epoch {epoch + 1}, loss {losses[-1]:.6f}, w {float(net.w.detach()):.4f}")
    return net, losses


def plot_predictions(data: dict[str, torch.Tensor], y_hat: torch.Tensor, title: str,
                     path: str) -> None:
    """Prediction and truth on the test inputs, with the training points, as in d2l.ai."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(data["x_test"], data["y_truth"], label="Truth")
    ax.plot(data["x_test"], y_hat.detach(), "--", label="Pred")
    ax.plot(data["x_train"], data["y_train"], "o", alpha=0.5, label="Training data")
    ax.set(xlabel="x", ylabel="y", xlim=(0, 5), ylim=(-1, 5), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def every_nth(inputs: torch.Tensor, n: int = 10) -> list[str]:
    """Tick labels showing every ``n``-th input value (the others blank)."""
    return [f"{float(x):.1f}" if i % n == 0 else "" for i, x in enumerate(inputs)]


def plot_attention(data: dict[str, torch.Tensor], weights: torch.Tensor, title: str,
                   path: str) -> None:
    """Weights ``(n_test, n_train)`` of the sorted test inputs over the sorted training inputs."""
    show_heatmaps(weights.detach().unsqueeze(0).unsqueeze(0),  # (1, 1, n_test, n_train)
                  xlabel="Sorted training inputs", ylabel="Sorted testing inputs",
                  titles=[title], figsize=(4.5, 4.5),
                  xticklabels=every_nth(data["x_train"]), yticklabels=every_nth(data["x_test"]),
                  path=path)


def _rounded(t: torch.Tensor) -> list:
    return [[round(float(v), 3) for v in row] for row in t.detach()]


def pooling_examples(out: str) -> dict:
    """Soft attention pooling (Qiu Xipeng, pp. 199-203) and HiT-MAC's tanh
    self-attention, printed, with a heatmap of each one's attention weights."""
    values = torch.tensor([[[.1, .1, .2], [.8, .8, .8], [0, 0, 0], [.8, .8, 1]],
                           [[.2, .2, .6], [0, 0, .6], [.5, .5, .5], [1, 1, .6]]])
    weights = torch.tensor([[0, 0, 0, 1.], [0, 0, .5, .5]])
    pooled = attention_pool(values, weights)
    mean = attention_pool(values, torch.full((2, 4), 0.25))
    print(f"attention_pool(values, {weights.tolist()}) = {_rounded(pooled)}")
    print(f"uniform weights give the mean: {_rounded(mean)} (values.mean(1) = "
          f"{_rounded(values.mean(1))})")
    torch.manual_seed(0)
    sentences, valid_lens = torch.randn(2, 6, 8), torch.tensor([4, 6])
    pool = AttentionPooling(8, scoring="additive")
    vectors = pool(sentences, valid_lens)  # (2, 8)
    print(f"AttentionPooling (additive, learned query) over 2 sets of 6 vectors, valid_lens "
          f"{valid_lens.tolist()}: weights {_rounded(pool.attention_weights)}, "
          f"pooled shape {tuple(vectors.shape)}")
    layer = TanhAttention(feature_dim=4, weight_dim=8)
    items = torch.randn(1, 5, 4)  # e.g. 5 targets seen by one sensor (HiT-MAC)
    z, global_feature = layer(items, torch.tensor([4]))
    print(f"TanhAttention (HiT-MAC) on 5 items, the last one padding: z {tuple(z.shape)}, "
          f"global feature {_rounded(global_feature)}")
    paths = {name: os.path.join(out, f"{name}.png")
             for name in ("attention_pooling_weights", "tanh_attention_weights")}
    show_heatmaps(pool.attention_weights.detach()[None, None], xlabel="vector", ylabel="set",
                  titles=["AttentionPooling (additive)"], figsize=(4, 2.5),
                  path=paths["attention_pooling_weights"])
    show_heatmaps(layer.attention_weights.detach()[None], xlabel="key item", ylabel="query item",
                  titles=["TanhAttention (HiT-MAC)"], path=paths["tanh_attention_weights"])
    return {"pooled": pooled.tolist(), "mean": mean.tolist(),
            "pooling_weights": pool.attention_weights.detach(), "global_feature":
            global_feature.detach(), "paths": paths}
