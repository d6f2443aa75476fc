"""Posteriors q(z|x) and likelihoods p(x|z).

Networks output plain float32 tensors of *parameters*; the classes here know how
many parameters they need, and build `tfp.distributions` objects from them inside
train/test steps and objectives. Nothing here is a `tfp.layers` layer (those do
not work with Keras 3).

Log-variances and log-scales are clamped before `exp`, so that a float16 network
body cannot overflow them, and every builder casts its parameters to float32.
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

#: clamp for the posterior's log-variance: stddev in [exp(-6), exp(4)].
LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 8.0
#: clamp for a learned Gaussian likelihood's log-scale: sigma in [~1e-3, ~7.4].
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 2.0


def _f32(t):
    return tf.cast(t, tf.float32)


class _Named:
    """Small base: a name, keyword arguments, and Keras (de)serialisation."""

    name = None

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# ----------------------------------------------------------------- posteriors
class Posterior(_Named):
    """A family of q(z|x), parametrised by a flat float32 vector per example."""

    def num_params(self, latent_dim):
        raise NotImplementedError

    def distribution(self, params):
        """The `tfd.Distribution` with batch shape [B] and event shape [latent_dim]."""
        raise NotImplementedError

    def reparameterize(self, params, eps):
        """z = g(params, eps) with eps ~ N(0, I) of shape [..., B, latent_dim]."""
        raise NotImplementedError

    def mean_stddev(self, params):
        """Posterior mean and marginal standard deviations, each [B, latent_dim]."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="kvae")
class DiagonalGaussian(Posterior):
    """q(z|x) = N(mu, diag(sigma^2)); params = [mu, log sigma^2] (2 d numbers).

    z = mu + sigma * eps. log sigma^2 is clamped to [LOG_VAR_MIN, LOG_VAR_MAX].
    """

    name = "diagonal"

    def num_params(self, latent_dim):
        return 2 * latent_dim

    def _split(self, params):
        mean, log_var = tf.split(_f32(params), 2, axis=-1)
        return mean, tf.clip_by_value(log_var, LOG_VAR_MIN, LOG_VAR_MAX)

    def mean_stddev(self, params):
        mean, log_var = self._split(params)
        return mean, tf.exp(0.5 * log_var)

    def distribution(self, params):
        mean, stddev = self.mean_stddev(params)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=stddev)

    def reparameterize(self, params, eps):
        mean, stddev = self.mean_stddev(params)
        return mean + stddev * eps

    def kl_per_dim_to_standard_normal(self, params):
        """KL(q_j || N(0, 1)) for each latent dimension j: [B, latent_dim].

        0.5 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
        """
        mean, log_var = self._split(params)
        return 0.5 * (tf.square(mean) + tf.exp(log_var) - 1.0 - log_var)


@keras.saving.register_keras_serializable(package="kvae")
class FullCovarianceGaussian(Posterior):
    """q(z|x) = N(mu, L L^T) with L lower-triangular; params = [mu, vec(L)].

    vec(L) holds d(d+1)/2 numbers; the diagonal of L goes through softplus (plus
    1e-5) so that L is a valid Cholesky factor. z = mu + L eps.
    """

    name = "full_covariance"

    def num_params(self, latent_dim):
        return latent_dim + latent_dim * (latent_dim + 1) // 2

    def _split(self, params):
        params = _f32(params)
        n = params.shape[-1]
        d = int((math.isqrt(8 * n + 9) - 3) // 2)  # solves n = d + d(d+1)/2
        mean, tril = params[..., :d], params[..., d:]
        scale_tril = tfp.bijectors.FillScaleTriL(diag_shift=1e-5)(tril)
        return mean, scale_tril

    def mean_stddev(self, params):
        mean, scale_tril = self._split(params)
        return mean, tf.sqrt(tf.reduce_sum(tf.square(scale_tril), axis=-1))

    def distribution(self, params):
        mean, scale_tril = self._split(params)
        return tfd.MultivariateNormalTriL(loc=mean, scale_tril=scale_tril)

    def reparameterize(self, params, eps):
        mean, scale_tril = self._split(params)
        return mean + tf.linalg.matvec(scale_tril, eps)


# ---------------------------------------------------------------- likelihoods
class Likelihood(_Named):
    """A family of p(x|z) over an event of shape `input_shape`.

    The decoder outputs `params_per_value` numbers per data value, stacked on the
    last axis, so its output shape is `input_shape[:-1] + (C * params_per_value,)`.
    """

    params_per_value = 1
    #: the data must lie in [0, 1] (Bernoulli and continuous Bernoulli)
    unit_interval = False
    #: the decoder's output can be read as logits (for export)
    has_logits = False

    def param_shape(self, input_shape):
        input_shape = tuple(input_shape)
        return input_shape[:-1] + (input_shape[-1] * self.params_per_value,)

    def distribution(self, params, event_ndims):
        raise NotImplementedError

    def mean(self, params):
        """E[x|z] in the data's shape: probabilities or means."""
        raise NotImplementedError


@keras.saving.register_keras_serializable(package="kvae")
class Bernoulli(Likelihood):
    """p(x|z) = prod_i Bern(x_i; sigmoid(logit_i)), for binary (or [0,1]) pixels.

    log p(x|z) = sum_i x_i * logit_i - softplus(logit_i).
    """

    name = "bernoulli"
    unit_interval = True
    has_logits = True

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.Bernoulli(logits=_f32(params), dtype=tf.float32),
            reinterpreted_batch_ndims=event_ndims,
        )

    def mean(self, params):
        return tf.sigmoid(_f32(params))


@keras.saving.register_keras_serializable(package="kvae")
class ContinuousBernoulli(Likelihood):
    """p(x|z) = prod_i CB(x_i; lambda_i) (Loaiza-Ganem and Cunningham, 2019).

    The properly normalised density on [0, 1] of the Bernoulli kernel
    lambda^x (1 - lambda)^(1 - x); its mean differs from lambda = sigmoid(logit).
    """

    name = "continuous_bernoulli"
    unit_interval = True
    has_logits = True

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.ContinuousBernoulli(logits=_f32(params)),
            reinterpreted_batch_ndims=event_ndims,
        )

    def mean(self, params):
        return tfd.ContinuousBernoulli(logits=_f32(params)).mean()


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
        params = _f32(params)
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


# -------------------------------------------------------------------- lookup
POSTERIORS = {"diagonal": DiagonalGaussian, "full_covariance": FullCovarianceGaussian}
LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "continuous_bernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian_learned": lambda: Gaussian(learn_scale=True),
}


def _lookup(spec, table, base, what):
    if isinstance(spec, base):
        return spec
    if isinstance(spec, str):
        if spec not in table:
            raise ValueError(
                f"Unknown {what} {spec!r}. Choose one of: {', '.join(sorted(table))}."
            )
        return table[spec]()
    if isinstance(spec, dict):
        obj = keras.saving.deserialize_keras_object(spec)
        if isinstance(obj, base):
            return obj
    raise ValueError(f"Cannot make a {what} from {spec!r}.")


def get_posterior(spec):
    """A `Posterior` from a name ('diagonal', 'full_covariance'), config or instance."""
    return _lookup(spec, POSTERIORS, Posterior, "posterior")


def get_likelihood(spec):
    """A `Likelihood` from a name, config or instance.

    Names: 'bernoulli', 'continuous_bernoulli', 'gaussian' (sigma = 1),
    'gaussian_learned' (sigma predicted per value).
    """
    return _lookup(spec, LIKELIHOODS, Likelihood, "likelihood")
