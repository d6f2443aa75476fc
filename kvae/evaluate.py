"""Metrics of a trained VAE: the importance-sampled log-likelihood (with a
progress bar for long runs), test-set summaries (ELBO, KL, bits/dim) and
active units. The latent tools (interpolation, traversal, anomaly scores,
denoising, inpainting) are in kvae.latent.

Example:
    >>> import numpy as np, kvae
    >>> from kvae import evaluate
    >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    >>> x = np.random.default_rng(0).integers(0, 2, (4, 8, 8, 1)).astype("float32")
    >>> ll = evaluate.log_likelihood(model, x, k=10)
    >>> ll.shape, bool((ll < 0).all())
    ((4,), True)
"""

import math
import weakref

import keras
import numpy as np
import tensorflow as tf

__all__ = ["log_weights", "log_likelihood", "batches", "posterior_modes", "active_units", "summary", "ROWS_BY_COMPONENTS"]

#: log_likelihood's bound on (examples x samples x prior components) per call
ROWS_BY_COMPONENTS = 2**22


def log_weights(model, x, labels, k, seed, prior=None):
    """log p(x|z_i) + log p(z_i) - log q(z_i|x) for k draws z_i ~ q(z|x).

    Args:
        model: a `kvae.VAE`.
        x: float32 [B, *input_shape]; labels: int [B] or None.
        k: int, draws per example.
        seed: int [2] tensor (stateless).
        prior: `model.prior.distribution(model)` if computed already, or None.

    Returns:
        float32 [k, B].
    """
    return model.terms(x, labels, k, seed, prior=prior).log_weights


#: model -> (weights fingerprint, its compiled chunk function): one trace per model and batch shape, however
#: many times log_likelihood is called on it (a score of many chunks would retrace, and warn, every call)
_CHUNK_FUNCTIONS = weakref.WeakKeyDictionary()


def _weights_version(model):
    """A fingerprint of the weights the prior and the likelihood weights depend on: a change (training,
    load_weights) makes a new compiled function, with the prior computed anew."""
    weights = model.weights
    return float(tf.add_n([tf.reduce_sum(tf.cast(w, tf.float64) * (i + 1)) for i, w in enumerate(weights)]).numpy()) \
        if weights else 0.0


def _chunk_function(model):
    """log-sum-exp of a chunk's log-weights, compiled once per model while its weights do not change
    (the prior is computed once, outside: the VampPrior's encoder runs once, not per chunk)."""
    version = _weights_version(model)
    cached = _CHUNK_FUNCTIONS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    prior = model.prior.distribution(model)

    @tf.function(reduce_retracing=True)
    def chunk_lse(xb, lb, n, seed):
        return tf.reduce_logsumexp(log_weights(model, xb, lb, n, seed, prior), axis=0)

    _CHUNK_FUNCTIONS[model] = (version, chunk_lse)
    return chunk_lse


def log_likelihood(model, x, labels=None, k=1000, chunk=100, batch_size=256, seed=0, verbose=0):
    """Importance-sampled estimate of log p(x) per example, in nats:

        log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    The k samples are drawn `chunk` at a time and combined by a running
    log-sum-exp, so memory is bounded by batch_size x chunk whatever k is;
    with a mixture prior of K components (`prior.num_components`) fewer
    samples go in a call, so that batch_size x samples x K stays under
    `ROWS_BY_COMPONENTS` and memory does not grow with K either.
    The estimate is a lower bound in expectation (the IWAE bound L_k), which
    tightens towards log p(x) as k grows. Every (batch, chunk) gets its own
    int64 seed, hashed whole for samplers that take int32 seeds.

    Args:
        model: a `kvae.VAE`.
        x: array [N, *input_shape]; labels: int [N] (conditional models) or None.
        k: int >= 1, importance samples per example.
        chunk, batch_size: int >= 1, samples and examples per graph call.
        seed: int.
        verbose: 1 shows a progress bar (k=5000 on 10,000 images takes minutes).

    Returns:
        float64 numpy [N].
    """
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if int(chunk) < 1 or int(batch_size) < 1:
        raise ValueError("chunk and batch_size must be >= 1.")
    x = np.asarray(x, np.float32)
    model.check_inputs(x[:1], None if labels is None else labels[:1])
    components = int(model.prior.num_components)
    chunk = max(1, min(int(chunk), ROWS_BY_COMPONENTS // (int(batch_size) * components)))

    chunk_lse = _chunk_function(model)

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


def batches(x, labels, batch_size):
    """Consecutive batches of an in-memory array, as tensors: the one batching helper of the tools.

    Args:
        x: numpy [N, ...]; labels: int [N] or None; batch_size: int >= 1.

    Returns:
        an iterator of (start, x batch tensor, labels batch int32 tensor or None).
    """
    for start in range(0, len(x), batch_size):
        yield (start, tf.constant(x[start:start + batch_size]),
               None if labels is None else tf.constant(np.asarray(labels[start:start + batch_size], np.int32)))


def posterior_modes(model, x, labels=None, batch_size=256):
    """The posterior's mode of z for every example (what `VAE.encode` returns:
    the mean for Gaussian posteriors, the mean direction for the power
    spherical) and its parameters.

    Args:
        model: a `kvae.VAE`; x: array [N, *input_shape]; labels: [N] or None.

    Returns:
        (modes float32 [N, latent_dim], params float32 [N, num_params]).
    """
    modes, params = [], []
    for _, xb, lb in batches(np.asarray(x, np.float32), labels, batch_size):
        p = model.encode_params(xb, lb)
        params.append(p.numpy())
        modes.append(model.posterior.mode_stddev(p)[0].numpy())
    return np.concatenate(modes), np.concatenate(params)


def active_units(modes, threshold=0.01):
    """Active units (Burda et al., 2016): dimension j is active if
    Var_x(m_j(x)) > threshold, where m(x) is the posterior point `VAE.encode`
    returns (`posterior_modes`; Burda et al. use the mean, which it is for the
    Gaussian posteriors).

    Args:
        modes: array [N, latent_dim].
        threshold: float.

    Returns:
        (count int, per-dimension variances float64 [latent_dim]).

    Example:
        >>> import numpy as np
        >>> active_units(np.array([[0.0, 1.0], [0.0, -1.0]]))[0]
        1
    """
    variances = np.var(np.asarray(modes, np.float64), axis=0)
    return int(np.sum(variances > threshold)), variances


def summary(model, x, labels=None, k=100, batch_size=256, seed=0, verbose=0):
    """Test-set numbers in nats per example.

    Args:
        model: a `kvae.VAE`; x: array [N, *input_shape]; labels: [N] or None.
        k: int; if >= 1, also the importance-sampled log p(x) with k samples.
        batch_size, seed, verbose: as in `log_likelihood`.

    Returns:
        dict: examples, negative_elbo, reconstruction (-E_q log p(x|z)), kl,
        active_units, latent_dim, posterior_mode_variance, kl_per_dim (where
        the posterior has per-dimension KLs to the prior), reconstruction_mse,
        bits_per_dim, and with k >= 1: k, log_likelihood.
    """
    x = np.asarray(x, np.float32)
    model.check_inputs(x[:1], None if labels is None else labels[:1])
    recon, kl = [], []
    for i, (_, xb, lb) in enumerate(batches(x, labels, batch_size)):
        terms = model.terms(xb, lb, 1, seed=tf.constant([seed, -1 - i], tf.int64))
        recon.append(terms.reconstruction.numpy())
        kl.append(terms.kl.numpy())
    recon, kl = np.concatenate(recon), np.concatenate(kl)
    modes, params = posterior_modes(model, x, labels, batch_size)
    count, variances = active_units(modes)
    dims = float(np.prod(model.data_shape))
    out = {
        "examples": len(x),
        "negative_elbo": float(np.mean(recon + kl)),
        "reconstruction": float(np.mean(recon)),
        "kl": float(np.mean(kl)),
        "active_units": count,
        "latent_dim": model.latent_dim,
        "posterior_mode_variance": [float(v) for v in variances],
    }
    if model.posterior.has_kl_per_dim(model.prior):
        out["kl_per_dim"] = [float(v) for v in model.posterior.kl_per_dim(params, model.prior).numpy().mean(0)]
    recon_x = np.concatenate([model.reconstruct(xb, lb).numpy() for _, xb, lb in batches(x, labels, batch_size)])
    out["reconstruction_mse"] = float(np.mean((recon_x - x) ** 2))
    if k >= 1:
        ll = log_likelihood(model, x, labels, k=k, batch_size=batch_size, seed=seed, verbose=verbose)
        out.update(k=int(k), log_likelihood=float(np.mean(ll)),
                   bits_per_dim=float(-np.mean(ll) / (dims * math.log(2))))
    else:
        out["bits_per_dim"] = float(out["negative_elbo"] / (dims * math.log(2)))
    return out

