"""Scores that compare with another model or with held-in data: the likelihood
ratio to a background model (Ren et al. 2019), the likelihood regret (Xiao et
al. 2020) and typicality (Nalisnick et al. 2019b)."""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kvae import registry
from kvae.anomaly.base import Score, checked_inputs
from kvae.anomaly.likelihood import NLL
from kvae.evaluate import batches

__all__ = ["LikelihoodRatio", "LikelihoodRegret", "Typicality"]


class LikelihoodRatio(Score):
    """The likelihood ratio of Ren et al. (2019) against a background model:

        S(x) = -log p(x) + log p_bg(x)

    The background model is a VAE of the same kind trained on inputs with a
    share of pixels replaced by noise (`kvae train --perturb 0.2`), so it
    learns what the two models share (backgrounds, stroke density) and the
    ratio keeps what only the real model knows.

    Args:
        background: a `kvae.VAE`, or a run directory / `.keras` file.
        k: int, importance samples for both models; seed: int.
    """

    name = "likelihood_ratio"

    def __init__(self, background=None, k=100, seed=0):
        if background is None:
            raise ValueError("The likelihood ratio needs a background model (--background RUN): train one with "
                             "`kvae train --perturb 0.2` on the same data.")
        if isinstance(background, (str, Path)):
            from kvae.saving import load_model

            background = load_model(background)
        self.background, self.k, self.seed = background, int(k), int(seed)
        self._nll = NLL(k, seed)

    def __call__(self, model, x, labels=None, verbose=0):
        bg = self.background
        if tuple(bg.data_shape) != tuple(model.data_shape) or bg.likelihood.name != model.likelihood.name:
            raise ValueError(f"The background model ({bg.likelihood.name}, inputs {tuple(bg.data_shape)}) must have "
                             f"the model's likelihood and input shape ({model.likelihood.name}, "
                             f"{tuple(model.data_shape)}).")
        return self._nll(model, x, labels, verbose) - self._nll(bg, x, labels if bg.conditional else None, verbose)

    def get_config(self):
        return {"k": self.k, "seed": self.seed}


class LikelihoodRegret(Score):
    """Likelihood regret (Xiao et al. 2020): how much the ELBO of x improves
    when q(z|x) is fitted to x alone, with the decoder fixed:

        S(x) = ELBO(x; lambda*) - ELBO(x; lambda(x)),
        lambda* = argmax ELBO(x; lambda) from lambda(x) by `steps` Adam steps

    lambda are the posterior's parameters (the encoder's output), one set per
    input, optimised for a whole batch at once (independent: the loss is a
    sum over inputs and Adam is elementwise). Both ELBOs are estimated with
    the same `samples` draws (common random numbers), so the difference is
    not swamped by sampling noise; each step uses one fresh draw.

    Args:
        steps: int >= 1; learning_rate: float > 0; samples: int >= 1; seed: int; batch_size: int.
    """

    name = "likelihood_regret"

    def __init__(self, steps=50, learning_rate=0.05, samples=16, seed=0, batch_size=256):
        if int(steps) < 1 or int(samples) < 1 or not learning_rate > 0:
            raise ValueError(f"likelihood_regret needs steps >= 1, samples >= 1 and learning_rate > 0, got "
                             f"steps={steps}, samples={samples}, learning_rate={learning_rate}.")
        self.steps, self.learning_rate, self.samples = int(steps), float(learning_rate), int(samples)
        self.seed, self.batch_size = int(seed), int(batch_size)

    def __call__(self, model, x, labels=None, verbose=0):
        x, labels = checked_inputs(model, x, labels)
        steps, lr, samples = self.steps, self.learning_rate, self.samples
        b1, b2, tiny = 0.9, 0.999, 1e-7

        @tf.function(reduce_retracing=True)
        def regret(xb, lb, seed):
            def neg_elbo(params, k, s):
                t = model.terms(xb, lb, k, s, q_params=params)
                return t.reconstruction + t.kl

            def step(i, params, m, v):
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    loss = tf.reduce_sum(neg_elbo(params, 1, seed + tf.stack([0, 1 + tf.cast(i, tf.int64)])))
                g = tape.gradient(loss, params)
                m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
                t = tf.cast(i + 1, tf.float32)
                params = params - lr * (m / (1 - b1 ** t)) / (tf.sqrt(v / (1 - b2 ** t)) + tiny)
                return i + 1, params, m, v

            start = tf.stop_gradient(model.encode_params(xb, lb))
            zeros = tf.zeros_like(start)
            _, fitted, _, _ = tf.while_loop(lambda i, *_: i < steps, step, [tf.constant(0), start, zeros, zeros])
            return neg_elbo(start, samples, seed) - neg_elbo(fitted, samples, seed)

        out = np.empty(len(x), np.float64)
        bar = keras.utils.Progbar(len(x), unit_name="example") if verbose else None
        for start, xb, lb in batches(x, labels, self.batch_size):
            seed = tf.constant([self.seed, start * 1_000_003], tf.int64)
            out[start:start + len(xb)] = regret(xb, lb, seed).numpy()
            if bar is not None:
                bar.update(start + len(xb))
        return out

    def get_config(self):
        return {"steps": self.steps, "learning_rate": self.learning_rate, "samples": self.samples,
                "seed": self.seed}


class Typicality(Score):
    """The typicality test of Nalisnick et al. (2019b):

        S(x_1..x_M) = | (1/M) sum_m -log p(x_m) - H |

    H, the model's entropy, is estimated by the mean -log p(x) on held-in
    data (`fit`). With `group` = M > 1 the inputs are scored in consecutive
    groups of M (a batch test; N must be a multiple of M) and one score per
    group is returned; M = 1 scores each input.

    Args:
        k: int, importance samples; group: int >= 1; seed: int.
    """

    name = "typicality"
    needs_reference = True

    def __init__(self, k=100, group=1, seed=0):
        if int(group) < 1:
            raise ValueError(f"typicality's group must be >= 1, got {group}.")
        self.k, self.group, self.seed = int(k), int(group), int(seed)
        self._nll = NLL(k, seed)
        self.entropy = None

    def fit(self, model, x, labels=None):
        if len(x) < 2:
            raise ValueError(f"typicality needs held-in data to estimate the entropy, got {len(x)} inputs.")
        self.entropy = float(np.mean(self._nll(model, x, labels)))
        return self

    def __call__(self, model, x, labels=None, verbose=0):
        if self.entropy is None:
            raise ValueError("typicality needs held-in data first: call fit(model, x_heldin) (kvae anomalies "
                             "uses the run's validation split).")
        if len(x) % self.group:
            raise ValueError(f"typicality with group={self.group} needs a multiple of {self.group} inputs, "
                             f"got {len(x)}.")
        nll = self._nll(model, x, labels, verbose).reshape(-1, self.group).mean(axis=1)
        return np.abs(nll - self.entropy)

    def get_config(self):
        return {"k": self.k, "group": self.group, "seed": self.seed}


for _cls in (LikelihoodRatio, LikelihoodRegret, Typicality):
    registry.register("score", _cls.name)(_cls)
