"""Likelihoods p(x|z): Bernoulli, continuous Bernoulli and Gaussian, built as
`tfp.distributions` from the decoder's float32 parameters.

Example:
    >>> get_likelihood("bernoulli").param_shape((28, 28, 1))
    (28, 28, 1)
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry
from kvae.distributions.gaussian import LOG_SCALE_MAX, LOG_SCALE_MIN, f32
from kvae.distributions.part import Part

tfd = tfp.distributions

__all__ = ["Likelihood", "Bernoulli", "ContinuousBernoulli", "Gaussian", "get_likelihood"]


class Likelihood(Part):
    """A family of p(x|z) over an event of shape `input_shape`.

    The decoder outputs `params_per_value` numbers per data value, stacked on the
    last axis, so its output shape is `input_shape[:-1] + (C * params_per_value,)`.
    """

    params_per_value = 1
    #: the data must lie in [0, 1] (Bernoulli and continuous Bernoulli)
    unit_interval = False
    #: the decoder's output can be read as logits (for export)
    has_logits = False
    #: the bound to which the full-int8 TFLite decoder clips the logits (`kvae.exporters`), or None: not clipped
    int8_logit_clip = None
    #: the TFLite variants `kvae export` writes when none are named; None: all of them
    tflite_variants = None
    #: TFLite variants refused up front: {variant: the reason}
    tflite_refuses = {}

    def param_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return input_shape[:-1] + (input_shape[-1] * self.params_per_value,)

    def distribution(self, params, event_ndims):
        raise NotImplementedError

    def log_prob(self, params, x, event_ndims):
        """log p(x|z), summed over the last `event_ndims` axes (x broadcasts
        against params): what training and evaluation compute. Default: the
        distribution's; a family may give a cheaper exact form."""
        return self.distribution(params, event_ndims).log_prob(x)

    def mean(self, params):
        """E[x|z] in the data's shape: probabilities or means."""
        raise NotImplementedError

    def export_log_prob(self, params, x):
        """log p(x|z) summed over each example's values, [B], written with ops
        every edge runtime has (TFLite builtins, onnxruntime): the device
        scorer's density (`kvae export --scorer`). None: not exportable."""
        return None


def _sum_per_example(t):
    return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


@keras.saving.register_keras_serializable(package="kvae")
class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bern(x_i; sigmoid(logit_i)), for binary (or [0,1]) pixels.

    log p(x|z) = sum_i x_i * logit_i - softplus(logit_i).
    """

    name = "bernoulli"
    unit_interval = True
    has_logits = True
    # The full-int8 decoder clips logits to +-8 (probabilities within 3.4e-4 of 0 and 1), so its 256
    # activation levels cover the informative range rather than saturated pixels; its `logits` are checked
    # against the clipped Keras logits, and its mean costs at most 3.4e-4. On a score computed on the
    # device from those logits, a pixel the model is sure of costs at least 3.4e-4 nats (<= 0.27 over 784
    # pixels), and one it is sure is wrong at most ~8 nats instead of |logit|: use the float32 or float16
    # decoder for anomaly scores.
    int8_logit_clip = 8.0

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.Bernoulli(logits=f32(params), dtype=tf.float32),
            reinterpreted_batch_ndims=event_ndims,
        )

    def log_prob(self, params, x, event_ndims):
        """sum x l - softplus(l): one fused softplus per value, where TFP's
        Bernoulli takes twice as long (bench/RESULTS.md, evaluation)."""
        logits = f32(params)
        per_value = tf.cast(x, tf.float32) * logits - tf.nn.softplus(logits)
        return tf.reduce_sum(per_value, axis=list(range(-int(event_ndims), 0)))

    def mean(self, params):
        return tf.sigmoid(f32(params))

    def export_log_prob(self, params, x):
        """sum x l - softplus(l), softplus(l) = max(l, 0) + log(1 + exp(-|l|))."""
        logits = f32(params)
        softplus = tf.nn.relu(logits) + tf.math.log(1.0 + tf.exp(-tf.abs(logits)))
        return _sum_per_example(x * logits - softplus)


@keras.saving.register_keras_serializable(package="kvae")
class ContinuousBernoulli(Likelihood):
    """p(x|z) = prod_i CB(x_i; lambda_i) (Loaiza-Ganem and Cunningham, 2019).

    The properly normalised density on [0, 1] of the Bernoulli kernel
    lambda^x (1 - lambda)^(1 - x); its mean differs from lambda = sigmoid(logit).
    """

    name = "continuous_bernoulli"
    unit_interval = True
    has_logits = True
    # Never clipped: its mean approaches 1 only as 1 - 1/logit (0.875 at logit 8). Its logits span thousands
    # of nats on grey images (+-3,886 on the 8x8 digits after 30 epochs), so reduced precision loses its
    # mean: float16 missed its 1e-3 by 1.18e-3 there, dynamic-range int8 by 0.164 (bench/export_errors.py);
    # both may still be asked for, and are verified like any artifact.
    tflite_variants = ("float32",)
    tflite_refuses = {"int8": "the full-int8 interpreter cannot compute the continuous Bernoulli's mean (its "
                              "1/logit divides by a quantised zero in LiteRT's int8 DIV); use float32 or float16"}

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.ContinuousBernoulli(logits=f32(params)),
            reinterpreted_batch_ndims=event_ndims,
        )

    def mean(self, params):
        """E[x|z] = 1 / (1 - exp(-eta)) - 1 / eta for logit eta, and its Taylor
        series 1/2 + eta/12 - eta^3/720 + eta^5/30240 for |eta| < 0.5
        (truncation < 7e-9), where the two terms cancel. Within 2e-6 of the
        float64 value, and written with ops every runtime has: TFP's `mean()`
        uses expm1, which tf2onnx exports as an op onnxruntime lacks."""
        eta = f32(params)
        small = tf.abs(eta) < 0.5
        safe = tf.where(small, tf.ones_like(eta), eta)
        exact = tf.math.reciprocal(1.0 - tf.exp(-safe)) - tf.math.reciprocal(safe)
        eta2 = eta * eta
        return tf.where(small, 0.5 + eta * (1.0 / 12.0 - eta2 * (1.0 / 720.0 - eta2 / 30240.0)), exact)


@keras.saving.register_keras_serializable(package="kvae")
class Gaussian(Likelihood):
    """p(x|z) = N(x; mu(z), sigma^2 I).

    With `learn_scale=False` sigma is the fixed `sigma` (sigma=1 makes
    -log p(x|z) the squared error / 2 plus a constant: the "MSE" VAE). With
    `learn_scale=True` the decoder outputs a log-sigma per value as well
    (clamped to [LOG_SCALE_MIN, LOG_SCALE_MAX]).

    Args:
        sigma: float, the fixed standard deviation (ignored if `learn_scale`).
        learn_scale: bool, whether the decoder predicts sigma per value.
    """

    name = "gaussian"

    def __init__(self, sigma=1.0, learn_scale=False):
        if not sigma > 0:
            raise ValueError(f"Gaussian likelihood needs sigma > 0, got sigma={sigma}.")
        self.sigma = float(sigma)
        self.learn_scale = bool(learn_scale)
        self.params_per_value = 2 if self.learn_scale else 1

    def get_config(self):
        return {"sigma": self.sigma, "learn_scale": self.learn_scale}

    def _loc_scale(self, params):
        params = f32(params)
        if not self.learn_scale:
            return params, tf.constant(self.sigma, tf.float32)
        loc, log_scale = tf.split(params, 2, axis=-1)
        return loc, tf.exp(tf.clip_by_value(log_scale, LOG_SCALE_MIN, LOG_SCALE_MAX))

    def distribution(self, params, event_ndims):
        loc, scale = self._loc_scale(params)
        return tfd.Independent(
            tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=event_ndims
        )

    def mean(self, params):
        return self._loc_scale(params)[0]

    def export_log_prob(self, params, x):
        """sum -(x - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
        loc, scale = self._loc_scale(params)
        return _sum_per_example(-0.5 * tf.square((x - loc) / scale) - tf.math.log(scale + tf.zeros_like(loc))
                                - 0.5 * math.log(2.0 * math.pi))


for _name, _factory in [("bernoulli", Bernoulli), ("continuous_bernoulli", ContinuousBernoulli),
                        ("gaussian", Gaussian), ("gaussian_learned", lambda: Gaussian(learn_scale=True))]:
    registry.register("likelihood", _name)(lambda _f=_factory, **_: _f())


def get_likelihood(spec):
    """A `Likelihood` from a name, a config or an instance (`kvae.registry.get`).

    Names: 'bernoulli', 'continuous_bernoulli', 'gaussian' (sigma = 1),
    'gaussian_learned' (sigma predicted per value).

    Args:
        spec: str, dict or `Likelihood`.

    Returns:
        Likelihood.

    Example:
        >>> get_likelihood("gaussian_learned").param_shape((28, 28, 1))
        (28, 28, 2)
    """
    return registry.get("likelihood", spec)
