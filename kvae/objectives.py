"""Variational objectives as pure functions of tensors and distributions.

Everything is per example (shape [B]) and float32; the model decides how to
reduce over the batch (and over replicas).
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def kl_divergence(q, p, z=None):
    """KL(q || p) per example.

    Analytic where TFP registers a closed form (Gaussian posterior against the
    standard normal prior); otherwise the one-sample Monte Carlo estimate
    log q(z) - log p(z) at the reparameterised sample `z` (unbiased, and its
    gradient flows through z).
    """
    try:
        return tfd.kl_divergence(q, p)
    except NotImplementedError:
        if z is None:
            raise ValueError(
                f"No analytic KL between {type(q).__name__} and {type(p).__name__}: "
                "pass the sample z for a Monte Carlo estimate."
            ) from None
        return q.log_prob(z) - p.log_prob(z)


def elbo_terms(x, likelihood_dist, q, p, z):
    """The two terms of the ELBO for one sample z ~ q(z|x) per example.

    Returns:
        (reconstruction, kl): -log p(x|z) and KL(q || p), each shape [B], so that
        ELBO = -(reconstruction + kl) and the beta-VAE loss is
        reconstruction + beta * kl.
    """
    reconstruction = -likelihood_dist.log_prob(tf.cast(x, tf.float32))
    return reconstruction, kl_divergence(q, p, z)


def beta_vae_loss(reconstruction, kl, beta=1.0):
    """Per-example negative beta-ELBO: E_q[-log p(x|z)] + beta * KL(q||p)."""
    return reconstruction + beta * kl


def free_bits_kl(kl_per_dim, floor):
    """The KL term with free bits (Kingma et al., 2016), per example.

    Each dimension's KL, averaged over the batch, counts at least `floor` nats:
        sum_j max(floor, mean_batch KL_j)
    so the optimiser gains nothing by pushing a dimension's KL below the
    floor (its gradient is zero there), which keeps units from collapsing.
    kl_per_dim: [B, d]. Returns [B] (the same value for every example).
    """
    per_dim = tf.reduce_mean(kl_per_dim, axis=0)
    total = tf.reduce_sum(tf.maximum(per_dim, floor))
    return tf.fill(tf.shape(kl_per_dim)[:1], total)


def iwae_bound(log_px_z, log_pz, log_qz):
    """The importance-weighted bound (Burda et al., 2016) per example.

    With k samples z_i ~ q(z|x) stacked on axis 0 (each argument [k, B]):

        L_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)

    L_1 is the ELBO; L_k <= log p(x) and does not decrease in expectation with
    k. Computed with a log-sum-exp in float32.
    """
    log_w = tf.cast(log_px_z, tf.float32) + tf.cast(log_pz, tf.float32) - tf.cast(log_qz, tf.float32)
    k = tf.cast(tf.shape(log_w)[0], tf.float32)
    return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(k)


def capacity_kl(kl, capacity, gamma):
    """The KL term of Burgess et al. (2018), per example: gamma * |mean_batch KL - C|.

    The KL is pushed towards a capacity C (nats) that a schedule raises during
    training, instead of towards 0. kl: [B]. Returns [B] (the same value)."""
    term = gamma * tf.abs(tf.reduce_mean(kl) - capacity)
    return tf.fill(tf.shape(kl), term)
