"""Attention heatmaps with matplotlib (``show_heatmaps`` of d2l.ai §11.1)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["show_heatmaps"]


def show_heatmaps(matrices: torch.Tensor, xlabel: str, ylabel: str,
                  titles: Sequence[str] | None = None, figsize: tuple[float, float] = (3.5, 3.5),
                  cmap: str = "Reds", xticklabels: Sequence[str] | None = None,
                  yticklabels: Sequence[str] | None = None, path: str | None = None):
    """Draw a grid of matrices (e.g. attention weights) with one shared colour bar.

    Args:
        matrices: ``(rows, cols, Q, K)`` — e.g. ``(layers, heads, queries, keys)``.
        xlabel, ylabel: axis labels (shown on the bottom row / first column).
        titles: one title per column.
        figsize: size of one cell in inches.
        cmap: matplotlib colour map.
        xticklabels, yticklabels: labels of the K keys and Q queries (e.g.
            subwords); all are shown, rotated on the x axis.
        path: write the figure to this file (PNG by extension) and close it.

    Returns:
        The matplotlib ``Figure``.

    Raises:
        ValueError: if ``matrices`` is not 4-D or tick labels mismatch its sizes.

    Source: d2l.ai §11.1.3 (``show_heatmaps``).
    """
    if matrices.dim() != 4:
        raise ValueError(f"matrices must be (rows, cols, Q, K); got shape {tuple(matrices.shape)}")
    rows, cols, Q, K = matrices.shape
    if xticklabels is not None and len(xticklabels) != K:
        raise ValueError(f"{len(xticklabels)} x tick labels for {K} columns of each matrix")
    if yticklabels is not None and len(yticklabels) != Q:
        raise ValueError(f"{len(yticklabels)} y tick labels for {Q} rows of each matrix")
    fig, axes = plt.subplots(rows, cols, figsize=(figsize[0] * cols, figsize[1] * rows),
                             sharex=True, sharey=True, squeeze=False)
    data = matrices.detach().float().cpu()
    vmax = float(data.max())
    for i in range(rows):
        for j in range(cols):
            ax = axes[i, j]
            image = ax.imshow(data[i, j].numpy(), cmap=cmap, vmin=0.0, vmax=vmax)
            if i == rows - 1:
                ax.set_xlabel(xlabel)
            if j == 0:
                ax.set_ylabel(ylabel)
            if titles is not None:
                ax.set_title(titles[j])
            if xticklabels is not None:
                ax.set_xticks(range(K), list(xticklabels), rotation=90, fontsize=8)
            if yticklabels is not None:
                ax.set_yticks(range(Q), list(yticklabels), fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
    return fig
