"""Evaluation of a trained VAE. So far: the importance-sampled log-likelihood
(issue "Tighter bounds, evaluation and latent tools" adds the rest)."""

import math

import numpy as np
import tensorflow as tf


def log_weights(model, x, labels, k, seed):
    """log p(x|z_i) + log p(z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): [k, B]."""
    q_params = model.encode_params(x, labels)
    q = model.posterior.distribution(q_params)
    eps = tf.random.stateless_normal([k, tf.shape(x)[0], model.latent_dim], seed=seed, alg="philox")
    z = model.posterior.reparameterize(q_params, eps)  # [k, B, d]
    flat = tf.reshape(z, [-1, model.latent_dim])
    rep_labels = None if labels is None else tf.tile(tf.reshape(labels, [-1]), [k])
    x_params = model.decode_params(flat, rep_labels)
    x_params = tf.reshape(x_params, tf.concat([[k, tf.shape(x)[0]], tf.shape(x_params)[1:]], 0))
    log_px_z = model.likelihood.distribution(x_params, len(model.data_shape)).log_prob(tf.cast(x, tf.float32))
    return log_px_z + model.prior.distribution(model).log_prob(z) - q.log_prob(z)


def log_likelihood(model, x, labels=None, k=1000, chunk=100, batch_size=256, seed=0):
    """Importance-sampled estimate of log p(x) per example (nats, float64 numpy).

        log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x)

    The k samples are drawn `chunk` at a time and combined by a running
    log-sum-exp, so memory is bounded by batch_size x chunk whatever k is.
    The estimate is a lower bound in expectation (the IWAE bound L_k), which
    tightens towards log p(x) as k grows.
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
    return out
