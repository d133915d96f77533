"""Attention pooling by similarity (Nadaraya–Watson kernel regression) on d2l.ai's toy data.

    python scripts/attention_examples.py --out runs/attention_examples

Draws 50 sorted training inputs uniformly in [0, 5) with outputs
``y = 2 sin(x) + x^0.8 + noise`` (noise ~ N(0, 0.5^2)), and predicts at the
test inputs ``arange(0, 5, 0.1)`` with

(a) non-parametric attention pooling, a Gaussian kernel of fixed bandwidth
    (``--bandwidth``, 1 as in d2l.ai), and
(b) the parametric model ``NWKernelRegression``, whose inverse bandwidth
    ``w`` is learned by SGD on the summed squared error with leave-one-out
    keys (each training input attends to all the other training points);
    the loss of every epoch is printed.

Writes four PNGs into ``--out``: ``{nonparametric,parametric}_predictions.png``
(prediction against the noise-free truth, with the training points) and
``{nonparametric,parametric}_attention.png`` (attention weights of the test
inputs over the training inputs, drawn by ``inference.plotting.show_heatmaps``).
Then soft attention pooling (``model.attention_pool`` on the example of Qiu
Xipeng, *Neural Networks and Deep Learning*, pp. 199-203, and uniform
weights giving the mean), ``AttentionPooling`` (additive scoring, a learned
query, two sets with ``valid_lens``) and HiT-MAC's ``TanhAttention`` (five
items, one of them padding) are printed, with
``attention_pooling_weights.png`` and ``tanh_attention_weights.png``.
Everything is seeded (``--seed``); it runs in a few seconds on a CPU.

Source: d2l.ai §11.2 "Attention Pooling by Similarity"; the data, the
parametric model and its training follow the earlier d2l.ai edition's section
"Attention Pooling: Nadaraya–Watson Kernel Regression".
"""

from __future__ import annotations

import os

from .common import make_parser

SCRIPT = "attention_examples.py"

__all__ = ["main", "run"]


def parse_args(argv=None):
    """The options (``--help`` lists them)."""
    p = make_parser(SCRIPT, __doc__)
    p.add_argument("--out", default="runs/attention_examples", help="folder for the PNGs")
    p.add_argument("--seed", type=int, default=0, help="seeds the data and the initial w")
    p.add_argument("--n-train", type=int, default=50, help="number of training points")
    p.add_argument("--bandwidth", type=float, default=1.0,
                   help="kernel width h of the non-parametric pooling")
    p.add_argument("--epochs", type=int, default=5, help="SGD steps (full batch) for w")
    p.add_argument("--lr", type=float, default=0.5, help="SGD learning rate for w")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    """Fit, plot and print as the module docstring says; returns the losses, w, MSEs and paths."""
    args = parse_args(argv)
    import torch

    from benchmarks.examples import (fit_parametric, plot_attention, plot_predictions,
                                     pooling_examples, toy_data)
    from model.nadaraya_watson import nadaraya_watson

    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    data = toy_data(args.n_train)
    x_train, y_train, x_test = data["x_train"], data["y_train"], data["x_test"]
    n_test = len(x_test)

    # (a) non-parametric: fixed Gaussian kernel
    y_hat_np, weights_np = nadaraya_watson(x_test, x_train, y_train, args.bandwidth)
    # (b) parametric: learn w = 1 / h on leave-one-out keys, then attend to all training points
    net, losses = fit_parametric(x_train, y_train, args.epochs, args.lr)
    with torch.no_grad():
        y_hat_p = net(x_test, x_train.expand(n_test, -1), y_train.expand(n_test, -1))  # (n_test,)
    w = float(net.w.detach())

    mse = {"nonparametric": float(((y_hat_np - data["y_truth"]) ** 2).mean()),
           "parametric": float(((y_hat_p - data["y_truth"]) ** 2).mean())}
    print(f"test MSE against the truth: non-parametric (h={args.bandwidth:g}) "
          f"{mse['nonparametric']:.4f}, parametric (w={w:.3f}, h=1/w={1 / w:.3f}) "
          f"{mse['parametric']:.4f}")

    paths = {name: os.path.join(args.out, f"{name}.png") for name in (
        "nonparametric_predictions", "parametric_predictions",
        "nonparametric_attention", "parametric_attention")}
    np_title = f"Non-parametric, h = {args.bandwidth:g}"
    p_title = f"Parametric, learned w = {w:.2f} (h = {1 / w:.2f})"
    plot_predictions(data, y_hat_np, np_title, paths["nonparametric_predictions"])
    plot_predictions(data, y_hat_p, p_title, paths["parametric_predictions"])
    plot_attention(data, weights_np, np_title, paths["nonparametric_attention"])
    plot_attention(data, net.attention_weights, p_title, paths["parametric_attention"])
    pooling = pooling_examples(args.out)
    paths.update(pooling.pop("paths"))
    for path in paths.values():
        print(f"wrote {path}")
    return {"losses": losses, "w": w, "mse": mse, "paths": paths, **pooling}


def run(argv: list[str] | None = None) -> None:
    """The command: :func:`main` with its one-line errors and exit status
    (``python scripts/attention_examples.py`` and the installed entry point call it)."""
    main(argv)
