"""Figures: image grids and training curves.

Used by the callbacks during training, by the CLI afterwards and by the
notebooks, so every picture kvae makes comes from here. Figures are built with
`matplotlib.figure.Figure` directly, not pyplot: no global backend is switched
(a notebook's inline display keeps working) and nothing is left open. The
`*_figure` functions return the figure (a notebook shows it); `save_*` write PNGs.
"""

import csv
import math
from pathlib import Path

import numpy as np

from kvae import files
from kvae.extras import require

__all__ = ["grid_image", "grid_figure", "save_grid", "pairs_figure", "save_pairs", "read_metrics", "curves_figure",
           "save_curves"]


def _figure(figsize):
    return require("matplotlib.figure", "plots", "Pictures").Figure(figsize=figsize)


def _save(fig, path):
    """Write atomically: a killed process never leaves half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")


def grid_image(images, columns=None, pad=1):
    """Tile images into one array, `pad` white pixels between them.

    Args:
        images: [N, H, W, C] (C = 1 or 3) or [N, D] (D a square) in [0, 1].
        columns: int or None (about sqrt(N)).
        pad: int.

    Returns:
        float32 [rows * (H + pad) + pad, columns * (W + pad) + pad] (C = 1) or with C = 3 last.

    Example:
        >>> grid_image(np.zeros((6, 4, 4, 1)), columns=3).shape
        (11, 16)
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim == 2:  # vectors: show as a square-ish image if possible
        side = int(math.isqrt(images.shape[1]))
        if side * side != images.shape[1]:
            raise ValueError(f"Cannot show vectors of length {images.shape[1]} as images.")
        images = images.reshape(-1, side, side, 1)
    n, h, w, c = images.shape
    if c not in (1, 3):
        raise ValueError(f"Images need 1 or 3 channels to be shown, got {c}.")
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), "float32")
    for i, im in enumerate(np.clip(images, 0, 1)):
        r, k = divmod(i, columns)
        canvas[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    return canvas[..., 0] if c == 1 else canvas


def grid_figure(images, title=None, columns=None, width=None):
    """A figure of a grid of images in [0, 1] (see `grid_image`).

    Args:
        images: as in `grid_image`; title: str or None; columns: int or None;
        width: inches or None (small images are enlarged).

    Returns:
        matplotlib.figure.Figure.
    """
    canvas = grid_image(images, columns)
    scale = width or max(4.0, min(12.0, canvas.shape[1] / 12))  # inches: small images are enlarged
    fig = _figure((scale, scale * canvas.shape[0] / canvas.shape[1] + (0.4 if title else 0)))
    ax = fig.subplots()
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def save_grid(images, path, title=None, columns=None):
    """Save a grid of images in [0, 1] as a PNG, atomically.

    Args:
        images: as in `grid_image`; path: str or Path; title, columns: as in `grid_figure`.
    """
    _save(grid_figure(images, title, columns), path)


def pairs_figure(inputs, outputs, title=None, columns=8):
    """Inputs and their reconstructions: rows alternate input / output.

    Args:
        inputs, outputs: [N, ...] images in [0, 1], the same shape.
        title: str or None; columns: int, images per row.

    Returns:
        matplotlib.figure.Figure.
    """
    inputs, outputs = np.asarray(inputs), np.asarray(outputs)
    columns = min(columns, len(inputs))
    rows = []
    for start in range(0, len(inputs), columns):
        chunk_in, chunk_out = inputs[start:start + columns], outputs[start:start + columns]
        blank = np.ones((columns - len(chunk_in),) + inputs.shape[1:], "float32")
        rows += [np.concatenate([chunk_in, blank]), np.concatenate([chunk_out, blank])]
    return grid_figure(np.concatenate(rows), title=title, columns=columns)


def save_pairs(inputs, outputs, path, title=None, columns=8):
    """Save `pairs_figure` as a PNG, atomically.

    Args:
        inputs, outputs, title, columns: as in `pairs_figure`; path: str or Path.
    """
    _save(pairs_figure(inputs, outputs, title, columns), path)


def read_metrics(csv_path):
    """Read a run's metrics.csv (Keras CSVLogger).

    Args:
        csv_path: str or Path.

    Returns:
        dict {column: [float per epoch]}; {} for an empty file.
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def curves_figure(metrics):
    """ELBO, reconstruction and KL per epoch, train and validation; and the
    loss the objective minimised, when it is not -ELBO at the end (the IWAE
    and DReG bounds, which their recipes also select on; free bits).

    Args:
        metrics: {name: [value per epoch]}, e.g. `model.fit(...).history` or
            `read_metrics` (an `epoch` column numbers the x axis from 1).

    Returns:
        matplotlib.figure.Figure with three axes, or four with the loss.
    """
    length = max((len(v) for v in metrics.values()), default=0)
    epochs = [int(e) + 1 for e in metrics.get("epoch", range(length))]
    panels = [("elbo", "ELBO (nats, higher is better)"), ("reconstruction", "reconstruction -E log p(x|z)"),
              ("kl", "KL(q || p)")]
    if _loss_is_not_the_elbo(metrics):
        panels.append(("loss", "loss, the objective minimised (nats)"))
    fig = _figure((4 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels))
    for ax, (key, label) in zip(axes, panels):
        shown = []
        for prefix, style in [("", "-"), ("val_", "--")]:
            if prefix + key in metrics:
                ax.plot(epochs, metrics[prefix + key], style, marker="o", markersize=3 if length <= 100 else 1,
                        label="validation" if prefix else "train")
                shown.append(metrics[prefix + key])
        skipped = _zoom_past_start(ax, shown)
        ax.set_title(label + (f" (epochs 1-{skipped} off scale)" if skipped else ""), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if shown:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _loss_is_not_the_elbo(metrics, tolerance=0.01):
    """Whether `loss` differs from -`elbo` by more than `tolerance` nats at
    the last epoch that has both (train or validation): then it is a curve of
    its own. A KL warm-up that has ended does not count (its loss is -ELBO by then)."""
    for prefix in ("", "val_"):
        loss, elbo = metrics.get(prefix + "loss"), metrics.get(prefix + "elbo")
        if loss is not None and elbo is not None:
            gap = np.abs(np.asarray(loss, "float64") + np.asarray(elbo, "float64"))
            gap = gap[np.isfinite(gap)]
            if gap.size and gap[-1] > tolerance:
                return True
    return False


def _zoom_past_start(ax, series, share=0.1, min_epochs=20):
    """Fit the y axis to the epochs after the first `share` of a run of at least
    `min_epochs` epochs: the first epochs' large values would otherwise flatten
    the part a user reads (the train/validation gap). Returns how many leading
    epochs may fall off the axis (0: none, the axis was left as plotted)."""
    length = max((len(v) for v in series), default=0)
    skip = int(length * share)
    if length < min_epochs or not skip:
        return 0
    tail = np.concatenate([np.asarray(v, dtype="float64")[skip:] for v in series])
    tail = tail[np.isfinite(tail)]
    if not tail.size:
        return 0
    low, high = float(tail.min()), float(tail.max())
    margin = 0.05 * (high - low) or 0.5
    ax.set_ylim(low - margin, high + margin)
    return skip


def save_curves(metrics, path):
    """Save `curves_figure` as a PNG, atomically.

    Args:
        metrics: as in `curves_figure`; path: str or Path.
    """
    _save(curves_figure(metrics), path)
