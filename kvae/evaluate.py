"""Evaluation of a trained VAE: the importance-sampled log-likelihood (with a
progress bar for long runs), test-set summaries, active units, and the latent
tools (interpolation, traversal, latent map, anomaly scores, denoising, inpainting)."""

import math

import keras
import numpy as np
import tensorflow as tf


def log_weights(model, x, labels, k, seed):
    """log p(x|z_i) + log p(z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): [k, B]."""
    eps = tf.random.stateless_normal([k, tf.shape(x)[0], model.latent_dim], seed=seed, alg="philox")
    log_px_z, log_pz, log_qz, _, _ = model.log_importance_weights(x, labels, eps, seed=seed)
    return log_px_z + log_pz - log_qz


def log_likelihood(model, x, labels=None, k=1000, chunk=100, batch_size=256, seed=0, verbose=0):
    """Importance-sampled estimate of log p(x) per example (nats, float64 numpy).

        log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    The k samples are drawn `chunk` at a time and combined by a running
    log-sum-exp, so memory is bounded by batch_size x chunk whatever k is.
    The estimate is a lower bound in expectation (the IWAE bound L_k), which
    tightens towards log p(x) as k grows. `verbose=1` shows a progress bar
    (examples done, time left): k=5000 on 10,000 images takes minutes.
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if int(chunk) < 1 or int(batch_size) < 1:
        raise ValueError("chunk and batch_size must be >= 1.")
    x = np.asarray(x, np.float32)
    model._as_input(x[:1])
    if model.conditional and labels is None:
        model._one_hot(None)

    @tf.function(reduce_retracing=True)
    def chunk_lse(xb, lb, n, seed):
        return tf.reduce_logsumexp(log_weights(model, xb, lb, n, seed), axis=0)

    out = np.empty(len(x), np.float64)
    bar = keras.utils.Progbar(len(x), unit_name="example") if verbose else None
    for start in range(0, len(x), batch_size):
        xb = tf.constant(x[start:start + batch_size])
        lb = None if labels is None else tf.constant(np.asarray(labels[start:start + batch_size], np.int32))
        total = None
        for i, first in enumerate(range(0, int(k), int(chunk))):
            n = min(int(chunk), int(k) - first)
            s = tf.constant([seed, start * 1_000_003 + i], tf.int64)
            part = chunk_lse(xb, lb, tf.constant(n), s).numpy().astype(np.float64)
            total = part if total is None else np.logaddexp(total, part)
        out[start:start + len(xb)] = total - math.log(int(k))
        if bar is not None:
            bar.update(start + len(xb))
    return out


def _batches(x, labels, batch_size):
    for start in range(0, len(x), batch_size):
        yield (tf.constant(x[start:start + batch_size]),
               None if labels is None else tf.constant(np.asarray(labels[start:start + batch_size], np.int32)))


def posterior_means(model, x, labels=None, batch_size=256):
    """Posterior means (and parameters) of z for every example: ([N, d], [N, p])."""
    means, params = [], []
    for xb, lb in _batches(np.asarray(x, np.float32), labels, batch_size):
        p = model.encode_params(xb, lb)
        params.append(p.numpy())
        means.append(model.posterior.mean_stddev(p)[0].numpy())
    return np.concatenate(means), np.concatenate(params)


def active_units(means, threshold=0.01):
    """Burda et al. (2016): dimension j is active if Var_x(E_q[z_j | x]) > threshold.
    `means` are posterior means [N, d]. Returns (count, per-dimension variances)."""
    variances = np.var(np.asarray(means, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


def summary(model, x, labels=None, k=100, batch_size=256, seed=0, verbose=0):
    """Test-set numbers in nats per example: importance-sampled log p(x) (k
    samples, if k >= 1), negative ELBO, bits per dimension, reconstruction
    (-E_q log p(x|z)) and KL, KL per latent dimension (diagonal posterior with
    the standard normal prior), active units, and the mean squared error of
    `reconstruct`."""
    x = np.asarray(x, np.float32)
    model._as_input(x[:1])
    recon, kl = [], []
    for i, (xb, lb) in enumerate(_batches(x, labels, batch_size)):
        r, q, _, _ = model.compute_terms(xb, lb, seed=tf.constant([seed, -1 - i], tf.int64))
        recon.append(r.numpy())
        kl.append(q.numpy())
    recon, kl = np.concatenate(recon), np.concatenate(kl)
    means, params = posterior_means(model, x, labels, batch_size)
    count, variances = active_units(means)
    dims = float(np.prod(model.data_shape))
    out = {
        "examples": len(x),
        "negative_elbo": float(np.mean(recon + kl)),
        "reconstruction": float(np.mean(recon)),
        "kl": float(np.mean(kl)),
        "active_units": count,
        "latent_dim": model.latent_dim,
        "posterior_mean_variance": [float(v) for v in variances],
    }
    if hasattr(model.posterior, "kl_per_dim_to_standard_normal") and type(model.prior).__name__ == "StandardNormal":
        out["kl_per_dim"] = [float(v) for v in model.posterior.kl_per_dim_to_standard_normal(params).numpy().mean(0)]
    recon_x = np.concatenate([model.reconstruct(xb, lb).numpy() for xb, lb in _batches(x, labels, batch_size)])
    out["reconstruction_mse"] = float(np.mean((recon_x - x) ** 2))
    if k >= 1:
        ll = log_likelihood(model, x, labels, k=k, batch_size=batch_size, seed=seed, verbose=verbose)
        out.update(k=int(k), log_likelihood=float(np.mean(ll)),
                   bits_per_dim=float(-np.mean(ll) / (dims * math.log(2))))
    else:
        out["bits_per_dim"] = float(out["negative_elbo"] / (dims * math.log(2)))
    return out


# ---------------------------------------------------------------- latent tools
def _mean_z(model, x, labels=None):
    return model.encode(np.asarray(x, np.float32), labels)[0].numpy()


def slerp(z_a, z_b, t):
    """Spherical interpolation between two vectors (linear when they are parallel)."""
    na, nb = np.linalg.norm(z_a), np.linalg.norm(z_b)
    cos = np.clip(np.dot(z_a, z_b) / max(na * nb, 1e-12), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6:
        return (1 - t) * z_a + t * z_b
    return (np.sin((1 - t) * omega) * z_a + np.sin(t * omega) * z_b) / np.sin(omega)


def _spherical(model):
    return model.posterior.name == "power_spherical"


def _refuse_on_sphere(model, tool):
    if _spherical(model):
        raise ValueError(f"The {tool} varies latent coordinates freely, but this model's latents lie on "
                         "the unit sphere (power_spherical posterior): use interpolate instead.")


def interpolate(model, x_a, x_b, steps=8, method="linear", labels=None):
    """Decoded points between the posterior means of two inputs: [steps, *shape].
    `method`: 'linear' or 'spherical'. For a hyperspherical latent space the
    linear path is projected back onto the sphere."""
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}.")
    if method not in ("linear", "spherical"):
        raise ValueError(f"Unknown interpolation {method!r}: 'linear' or 'spherical'.")
    lab = None if labels is None else np.asarray(labels, np.int32).reshape(1)
    z_a, z_b = _mean_z(model, np.asarray(x_a)[None], lab)[0], _mean_z(model, np.asarray(x_b)[None], lab)[0]
    ts = np.linspace(0.0, 1.0, int(steps))
    if method == "linear":
        z = np.stack([(1 - t) * z_a + t * z_b for t in ts])
    else:
        z = np.stack([slerp(z_a, z_b, t) for t in ts])
    if _spherical(model):
        z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return model.decode(z.astype(np.float32), None if lab is None else np.repeat(lab, len(ts))).numpy()


def traverse(model, dims=None, values=(-3, -2, -1, 0, 1, 2, 3), x=None, labels=None):
    """Vary one latent dimension at a time around a base point (the posterior
    mean of `x`, else 0): images [len(dims), len(values), *shape]."""
    _refuse_on_sphere(model, "traversal")
    dims = list(range(model.latent_dim)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ValueError(f"Latent index {bad[0]} is out of range for latent_dim={model.latent_dim}.")
    base = np.zeros(model.latent_dim, np.float32) if x is None else _mean_z(
        model, np.asarray(x)[None], None if labels is None else np.asarray(labels).reshape(1))[0]
    z = np.repeat(base[None], len(dims) * len(values), axis=0)
    for i, d in enumerate(dims):
        z[i * len(values):(i + 1) * len(values), d] = values
    lab = None if labels is None else np.full(len(z), int(np.asarray(labels).reshape(-1)[0]), np.int32)
    out = model.decode(z, lab).numpy()
    return out.reshape((len(dims), len(values)) + out.shape[1:])


def latent_map(model, n=15, span=3.0, labels=None):
    """For latent_dim = 2: decoded images on an n x n grid of z in [-span, span]^2."""
    if model.latent_dim != 2:
        raise ValueError(f"The latent map needs latent_dim = 2; this model has {model.latent_dim}.")
    _refuse_on_sphere(model, "latent map")
    axis = np.linspace(-span, span, int(n))
    z = np.array([[a, b] for b in axis[::-1] for a in axis], np.float32)
    lab = None if labels is None else np.full(len(z), int(labels), np.int32)
    return model.decode(z, lab).numpy()


def anomaly_scores(model, x, labels=None, k=100, seed=0, verbose=0):
    """-log p(x) per input (importance-sampled with k samples): higher is more anomalous."""
    return -log_likelihood(model, x, labels, k=k, seed=seed, verbose=verbose)


def _check_same_shape(x, other, what):
    if np.shape(other) != np.shape(x):
        raise ValueError(f"The {what} has shape {np.shape(other)} but the inputs have shape {np.shape(x)}.")


def denoise(model, x_noisy, labels=None):
    """The reconstruction of corrupted inputs (the posterior mean decoded)."""
    return model.reconstruct(np.asarray(x_noisy, np.float32), labels).numpy()


def inpaint(model, x, mask, iterations=20, labels=None):
    """Fill the missing pixels (mask == 0) by iterating encode/decode on them
    while keeping the observed ones (mask == 1), as in Rezende et al. (2014):
    start from 0.5, then x_missing <- reconstruct(x)_missing, `iterations` times."""
    x = np.asarray(x, np.float32)
    mask = np.asarray(mask, np.float32)
    _check_same_shape(x, mask, "mask")
    if not np.isin(mask, (0.0, 1.0)).all():
        raise ValueError("The mask must hold only 0 (missing) and 1 (observed).")
    if int(iterations) < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}.")
    filled = x * mask + 0.5 * (1 - mask)
    for _ in range(int(iterations)):
        filled = x * mask + model.reconstruct(filled, labels).numpy() * (1 - mask)
    return filled
