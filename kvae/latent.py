"""Latent tools of a trained VAE: interpolation, traversal, the 2-D latent map,
ranking of scores, corruption masks and noise, denoising and inpainting
(anomaly scores are in kvae.anomaly). The `kvae` commands of the same names
call these, so Python gets the CLI's results.

Every tool works on the posterior's mode (`VAE.encode`). On a hyperspherical
latent space (a posterior whose `support` is 'sphere') the tools that move
coordinates freely (traversal, latent map) refuse, and interpolation is
projected back onto the sphere.

Example:
    >>> import numpy as np, kvae
    >>> from kvae import latent
    >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    >>> x = np.zeros((2, 8, 8, 1), np.float32)
    >>> latent.interpolate(model, x[0], x[1], steps=5).shape
    (5, 8, 8, 1)
    >>> latent.mask((1, 4, 4, 1), "bottom")[0, :, 0, 0]
    array([1., 1., 0., 0.], dtype=float32)
"""

import numpy as np


__all__ = ["slerp", "interpolate", "traverse", "latent_map", "rank", "mask", "corrupt",
           "denoise", "inpaint", "MASKS"]

#: kinds of `mask`
MASKS = ("bottom", "random")


def _mode(model, x, labels=None):
    return model.encode(np.asarray(x, np.float32), labels)[0].numpy()


def _on_sphere(model):
    return model.posterior.support == "sphere"


def _refuse_on_sphere(model, tool):
    if _on_sphere(model):
        raise ValueError(f"The {tool} varies latent coordinates freely, but this model's latents lie on "
                         "the unit sphere (power_spherical posterior): use interpolate instead.")


def slerp(z_a, z_b, t):
    """Spherical interpolation between two vectors (linear when they are parallel):

        slerp(a, b, t) = (sin((1 - t) w) a + sin(t w) b) / sin w,   w = angle(a, b)

    Args:
        z_a, z_b: float arrays [d]; t: float in [0, 1].

    Returns:
        float array [d].

    Example:
        >>> np.round(slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.5), 4)
        array([0.7071, 0.7071])
    """
    na, nb = np.linalg.norm(z_a), np.linalg.norm(z_b)
    cos = np.clip(np.dot(z_a, z_b) / max(na * nb, 1e-12), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6:
        return (1 - t) * z_a + t * z_b
    return (np.sin((1 - t) * omega) * z_a + np.sin(t * omega) * z_b) / np.sin(omega)


def interpolate(model, x_a, x_b, steps=8, method="linear", labels=None):
    """Decoded points between the posterior modes of two inputs.

    Args:
        model: a `kvae.VAE`.
        x_a, x_b: arrays [*input_shape], one example each.
        steps: int >= 2, points including both ends.
        method: 'linear' or 'spherical' (`slerp`). On a hyperspherical latent
            space the path is projected back onto the sphere.
        labels: one int (conditional models) or None.

    Returns:
        float32 [steps, *input_shape].
    """
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}.")
    if method not in ("linear", "spherical"):
        raise ValueError(f"Unknown interpolation {method!r}: 'linear' or 'spherical'.")
    lab = None if labels is None else np.asarray(labels, np.int32).reshape(1)
    z_a, z_b = _mode(model, np.asarray(x_a)[None], lab)[0], _mode(model, np.asarray(x_b)[None], lab)[0]
    ts = np.linspace(0.0, 1.0, int(steps))
    if method == "linear":
        z = np.stack([(1 - t) * z_a + t * z_b for t in ts])
    else:
        z = np.stack([slerp(z_a, z_b, t) for t in ts])
    if _on_sphere(model):
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return model.decode(z.astype(np.float32), None if lab is None else np.repeat(lab, len(ts))).numpy()


def traverse(model, dims=None, values=(-3, -2, -1, 0, 1, 2, 3), x=None, labels=None):
    """Vary one latent dimension at a time around a base point: the posterior
    mode of `x`, else z = 0.

    Args:
        model: a `kvae.VAE` (not hyperspherical).
        dims: latent indices (default all).
        values: the values each dimension takes in turn.
        x: array [*input_shape] or None; labels: one int or None.

    Returns:
        float32 [len(dims), len(values), *input_shape].
    """
    _refuse_on_sphere(model, "traversal")
    dims = list(range(model.latent_dim)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ValueError(f"Latent index {bad[0]} is out of range for latent_dim={model.latent_dim}.")
    lab1 = None if labels is None else np.asarray(labels, np.int32).reshape(1)
    base = np.zeros(model.latent_dim, np.float32) if x is None else _mode(model, np.asarray(x)[None], lab1)[0]
    z = np.repeat(base[None], len(dims) * len(values), axis=0)
    for i, d in enumerate(dims):
        z[i * len(values):(i + 1) * len(values), d] = values
    lab = None if labels is None else np.full(len(z), int(lab1[0]), np.int32)
    out = model.decode(z, lab).numpy()
    return out.reshape((len(dims), len(values)) + out.shape[1:])


def latent_map(model, n=15, span=3.0, labels=None):
    """For latent_dim = 2: decoded images on an n x n grid of z in [-span, span]^2,
    row by row from the top (z_2 = span) to the bottom.

    Args:
        model: a `kvae.VAE` with latent_dim 2; n: int, points per axis;
        span: float; labels: one int (conditional models) or None.

    Returns:
        float32 [n * n, *input_shape].
    """
    if model.latent_dim != 2:
        raise ValueError(f"The latent map needs latent_dim = 2; this model has {model.latent_dim}.")
    _refuse_on_sphere(model, "latent map")
    axis = np.linspace(-span, span, int(n))
    z = np.array([[a, b] for b in axis[::-1] for a in axis], np.float32)
    lab = None if labels is None else np.full(len(z), int(labels), np.int32)
    return model.decode(z, lab).numpy()

def rank(scores, n):
    """The indices of the n highest and the n lowest scores.

    Args:
        scores: array [N]; n: int >= 0 (at most N // 2 are returned each way).

    Returns:
        (most int [n'], least int [n']), most anomalous first, least first.

    Example:
        >>> rank([0.5, 3.0, 1.0, 2.0], 1)
        (array([1]), array([0]))
    """
    order = np.argsort(np.asarray(scores), kind="stable")
    n = max(0, min(int(n), len(order) // 2))
    return order[::-1][:n], order[:n]


def mask(shape, kind="bottom", seed=0):
    """A mask of observed (1) and missing (0) pixels for `inpaint`.

    Args:
        shape: (N, H, ...) of the images.
        kind: 'bottom' (the lower half of every image missing) or 'random'
            (each pixel missing with probability 1/2, from `seed`).

    Returns:
        float32 array of `shape`.
    """
    if kind == "bottom":
        m = np.ones(shape, np.float32)
        m[:, shape[1] // 2:] = 0
        return m
    if kind == "random":
        return (np.random.default_rng(seed).uniform(size=shape) < 0.5).astype(np.float32)
    raise ValueError(f"--missing must be bottom or random, got {kind!r}")


def corrupt(x, share, seed=0):
    """Replace a `share` of the pixels by coin flips (0 or 1): salt-and-pepper noise.

    Args:
        x: array [N, ...] in [0, 1]; share: float in [0, 1]; seed: int.

    Returns:
        float32 array like x.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"--noise must be in [0, 1], got {share}")
    rng = np.random.default_rng(seed)
    hit = rng.uniform(size=np.shape(x)) < share
    return np.where(hit, rng.uniform(size=np.shape(x)) > 0.5, x).astype(np.float32)


def denoise(model, x_noisy, labels=None):
    """The reconstruction of corrupted inputs (the posterior mode decoded).

    Args:
        model: a `kvae.VAE`; x_noisy: array [N, *input_shape]; labels: [N] or None.

    Returns:
        float32 [N, *input_shape].
    """
    return model.reconstruct(np.asarray(x_noisy, np.float32), labels).numpy()


def inpaint(model, x, mask, iterations=20, labels=None):
    """Fill the missing pixels (mask == 0) by iterating encode/decode on them
    while keeping the observed ones (mask == 1), as in Rezende et al. (2014):
    start from 0.5, then x_missing <- reconstruct(x)_missing, `iterations` times.

    Args:
        x: array [N, *input_shape]; mask: array of the same shape, 0 or 1.
        iterations: int >= 1; labels: [N] or None.

    Returns:
        float32 [N, *input_shape], equal to x where mask == 1.
    """
    x = np.asarray(x, np.float32)
    mask = np.asarray(mask, np.float32)
    if np.shape(mask) != np.shape(x):
        raise ValueError(f"The mask has shape {np.shape(mask)} but the inputs have shape {np.shape(x)}.")
    if not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError("The mask must hold only 0 (missing) and 1 (observed).")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    filled = x * mask + 0.5 * (1 - mask)
    for _ in range(int(iterations)):
        filled = x * mask + model.reconstruct(filled, labels).numpy() * (1 - mask)
    return filled
