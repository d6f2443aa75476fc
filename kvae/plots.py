"""PNG figures: image grids and training curves (matplotlib, Agg backend).

Used by the callbacks during training and by the CLI afterwards, so every
picture kvae writes comes from here.
"""

import csv
import math
import os
import tempfile
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path):
    """Write atomically: a killed process never leaves half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)


def grid_image(images, columns=None, pad=1):
    """Tile [N, H, W, C] (C = 1 or 3) or [N, D] images in [0, 1] into one array."""
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


def save_grid(images, path, title=None, columns=None):
    """Save a grid of images in [0, 1] as a PNG."""
    plt = _pyplot()
    canvas = grid_image(images, columns)
    scale = max(4.0, min(12.0, canvas.shape[1] / 12))  # inches: small images are enlarged
    fig, ax = plt.subplots(figsize=(scale, scale * canvas.shape[0] / canvas.shape[1] + (0.4 if title else 0)))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)
    plt.close(fig)


def save_pairs(inputs, outputs, path, title=None, columns=8):
    """Inputs and their reconstructions: rows alternate input / output."""
    inputs, outputs = np.asarray(inputs), np.asarray(outputs)
    columns = min(columns, len(inputs))
    rows = []
    for start in range(0, len(inputs), columns):
        chunk_in, chunk_out = inputs[start:start + columns], outputs[start:start + columns]
        blank = np.ones((columns - len(chunk_in),) + inputs.shape[1:], "float32")
        rows += [np.concatenate([chunk_in, blank]), np.concatenate([chunk_out, blank])]
    save_grid(np.concatenate(rows), path, title=title, columns=columns)


def read_metrics(csv_path):
    """metrics.csv (Keras CSVLogger) as {column: [floats]}."""
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}


def save_curves(metrics, path):
    """ELBO, reconstruction and KL per epoch, train and validation."""
    plt = _pyplot()
    epochs = [int(e) + 1 for e in metrics.get("epoch", range(len(metrics.get("loss", []))))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, key, label in zip(axes, ["elbo", "reconstruction", "kl"],
                              ["ELBO (nats, higher is better)", "reconstruction -E log p(x|z)", "KL(q || p)"]):
        for prefix, style in [("", "-"), ("val_", "--")]:
            if prefix + key in metrics:
                ax.plot(epochs, metrics[prefix + key], style, marker="o", markersize=3,
                        label="validation" if prefix else "train")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
