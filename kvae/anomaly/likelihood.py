"""Scores from the model's own likelihood: -log p(x) importance sampled, and the negative ELBO."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import evaluate, objectives, registry, replicas
from kvae.anomaly.base import Score, checked_inputs
from kvae.evaluate import batches

tfd = tfp.distributions

__all__ = ["NLL", "NegativeELBO"]


class NLL(Score):
    """-log p(x) in nats, importance sampled with k draws (`kvae.evaluate.log_likelihood`).

    Args:
        k: int >= 1, importance samples; seed: int; batch_size: int.
    """

    name = "nll"

    def __init__(self, k=100, seed=0, batch_size=256):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}.")
        self.k, self.seed, self.batch_size = int(k), int(seed), int(batch_size)

    def __call__(self, model, x, labels=None, verbose=0):
        x, labels = checked_inputs(model, x, labels)
        return -evaluate.log_likelihood(model, x, labels, k=self.k, seed=self.seed, batch_size=self.batch_size,
                                        verbose=verbose)

    def get_config(self):
        return {"k": self.k, "seed": self.seed}


def _kl(model, params, seed, draws=16):
    """KL(q || p) [B] at posterior parameters [B, num_params]: analytic where
    TFP has it, else the mean of `draws` seeded draws."""
    q, prior = model.posterior.distribution(params), model.prior.distribution(model)
    eps = replicas.noise(seed, tf.shape(params)[0], [draws, model.latent_dim])
    z, log_qz = model.posterior.sample_and_log_prob(params, tf.transpose(eps, [1, 0, 2]), seed)
    return objectives.kl_divergence(q, prior, log_qz, prior.log_prob(z))


class NegativeELBO(Score):
    """-ELBO at the posterior's mode: -(log p(x | z = mode(q(z|x))) - KL(q || p)).

    Deterministic where the KL is analytic (a diagonal Gaussian posterior and
    a standard normal prior), so the same input always gets the same score and
    the scorer exports to devices (`kvae export --scorer`); otherwise the KL is
    the mean of 16 seeded draws. It is not a bound on -log p(x) (the
    reconstruction is taken at the mode, not averaged over q), but costs one
    encoder and one decoder pass.

    Args:
        seed: int (the KL's draws where it is not analytic); batch_size: int.
    """

    name = "elbo"

    def __init__(self, seed=0, batch_size=256):
        self.seed, self.batch_size = int(seed), int(batch_size)

    def _traced(self, model):
        """One traced function per model, kept: `kvae.scoring` calls the score batch after batch."""
        cached = getattr(self, "_cache", None)
        if cached is not None and cached[0] is model:
            return cached[1]
        seed = tf.constant([self.seed, 7], tf.int64)

        @tf.function(reduce_retracing=True)
        def score(xb, lb):
            params = model.encode_params(xb, lb)
            mode = model.posterior.mode_stddev(params)[0]
            px = model.likelihood.distribution(model.decode_params(mode, lb), len(model.data_shape))
            return _kl(model, params, seed) - px.log_prob(xb)

        self._cache = (model, score)
        return score

    def __call__(self, model, x, labels=None, verbose=0):
        x, labels = checked_inputs(model, x, labels)
        score = self._traced(model)
        out = np.empty(len(x), np.float64)
        for start, xb, lb in batches(x, labels, self.batch_size):
            out[start:start + len(xb)] = score(xb, lb).numpy()
        return out

    def get_config(self):
        return {"seed": self.seed}


for _cls in (NLL, NegativeELBO):
    registry.register("score", _cls.name)(_cls)
