"""Posteriors q(z|x) and likelihoods p(x|z).

Networks output plain float32 tensors of *parameters*; the classes here know how
many parameters they need, and build `tfp.distributions` objects from them inside
train/test steps and objectives. Nothing here is a `tfp.layers` layer (those do
not work with Keras 3).

Log-variances and log-scales are clamped before `exp`, so that a float16 network
body cannot overflow them, and every builder casts its parameters to float32.

Over 350 lines: three posteriors and four likelihoods, each a few lines of
math, share one base class and one registration; a flow posterior (issue 12)
gets its own module.

Example:
    >>> from kvae import distributions
    >>> q = distributions.get_posterior("diagonal").distribution([[0.0, 0.0, 0.0, 0.0]])
    >>> [int(n) for n in q.batch_shape + q.event_shape]
    [1, 2]
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry, replicas

tfd = tfp.distributions

__all__ = ["Posterior", "Density", "DiagonalGaussian", "FullCovarianceGaussian", "PowerSpherical", "Likelihood",
           "Bernoulli", "ContinuousBernoulli", "Gaussian", "get_posterior", "get_likelihood",
           "LOG_VAR_MIN", "LOG_VAR_MAX", "LOG_SCALE_MIN", "LOG_SCALE_MAX"]

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
    """A family of q(z|x), parametrised by a flat float32 vector per example.

    `support` says where z lives ('euclidean' or 'sphere'); a prior must have
    the same (`kvae.priors.Prior.check`). `mode_stddev` gives the point that
    `VAE.encode` returns for every family: the mode of q (for the Gaussian
    families, the mean).
    """

    support = "euclidean"
    #: whether `distribution(params)` is a `tfd.Distribution` (a VampPrior mixes them)
    closed_form = True
    #: whether q(z|x) is a diagonal Gaussian whose parameters `mean_log_var` gives
    #: (the VampPrior then mixes them in closed form)
    diagonal_gaussian = False
    #: whether `base_mean_log_var` gives the diagonal Gaussian that a flow transforms
    #: (the posterior itself without a flow; VampPrior(components='base') mixes those)
    has_base_gaussian = False
    #: the size of the top layer of two stochastic layers (z2 = z[..., :top_dim]); None for one layer
    top_dim = None

    def check(self, model):
        """Raise ValueError if the model's other parts do not suit this posterior."""

    def mode_stddev(self, params):
        """The mode of q (the mean, for Gaussians; the mean direction on the sphere) and the
        marginal standard deviations, each [B, latent_dim]: what `VAE.encode` returns."""
        raise NotImplementedError

    def mean_log_var(self, params):
        """(mean, clamped log-variance), each [B, latent_dim], where `diagonal_gaussian`."""
        raise ValueError(f"The {self.name} posterior is not a diagonal Gaussian (it has no mean_log_var).")

    def base_mean_log_var(self, params):
        """The base Gaussian's (mean, clamped log-variance), each [B, latent_dim], where `has_base_gaussian`."""
        raise ValueError(f"The {self.name} posterior has no base Gaussian (it has no base_mean_log_var).")

    def has_kl_per_dim(self, prior):
        """Whether `kl_per_dim` is available against `prior`."""
        return False

    def kl_per_dim(self, params, prior):
        """KL(q_j || p_j) per latent dimension j: [B, latent_dim] (factorised pairs only)."""
        raise ValueError(f"The {self.name} posterior has no per-dimension KL to this prior.")

    def num_params(self, latent_dim):
        raise NotImplementedError

    def distribution(self, params):
        """The `tfd.Distribution` with batch shape [B] and event shape [latent_dim]."""
        raise NotImplementedError

    def reparameterize(self, params, eps):
        """z = g(params, eps) with eps ~ N(0, I) of shape [..., B, latent_dim]."""
        raise NotImplementedError

    def sample(self, params, eps, seed):
        """k reparameterised draws z [k, B, latent_dim], k = eps.shape[0].

        Gaussian families transform the standard normal noise `eps` [k, B, d];
        families without such a transform (the power spherical) also draw from
        the stateless `seed` (an int32 or int64 [2] tensor).
        """
        return self.reparameterize(params, eps)

    def sample_and_log_prob(self, params, eps, seed):
        """`sample`'s draws z [k, B, latent_dim] and log q(z|x) at them [k, B].
        A flow overrides this: it knows the density of its draws without
        inverting itself."""
        z = self.sample(params, eps, seed)
        return z, self.log_prob(params, z)

    def log_prob(self, params, z):
        """log q(z|x) [..., B] at any z [..., B, latent_dim]."""
        return self.distribution(params).log_prob(z)


class Density:
    """q(z|x) at fixed parameters for a posterior without a closed form (a
    flow, two stochastic layers): `log_prob(z)` only, from the posterior's
    `log_prob(params, z)`. Not a `tfd.Distribution`, so the KL is a Monte
    Carlo estimate.

    Args:
        posterior: a `Posterior`; params: its parameters [B, P].
    """

    def __init__(self, posterior, params):
        self.posterior, self.params = posterior, params

    def log_prob(self, z):
        return self.posterior.log_prob(self.params, z)



@keras.saving.register_keras_serializable(package="kvae")
class DiagonalGaussian(Posterior):
    """q(z|x) = N(mu, diag(sigma^2)); params = [mu, log sigma^2] (2 d numbers).

    z = mu + sigma * eps. log sigma^2 is clamped to [log_var_min, log_var_max]
    (no gradient outside). A higher floor limits how sharp q can be, as the
    hardtanh(-6, 2) of Tomczak and Welling's networks does.

    Args:
        log_var_min, log_var_max: floats, the clamp (default LOG_VAR_MIN, LOG_VAR_MAX).

    Example:
        >>> DiagonalGaussian(log_var_min=-6.0, log_var_max=2.0).mean_log_var([[0.0, -9.0]])[1].numpy()
        array([[-6.]], dtype=float32)
    """

    name = "diagonal"
    diagonal_gaussian = has_base_gaussian = True

    def __init__(self, log_var_min=LOG_VAR_MIN, log_var_max=LOG_VAR_MAX):
        self.log_var_min, self.log_var_max = float(log_var_min), float(log_var_max)
        if not self.log_var_min < self.log_var_max:
            raise ValueError(f"log_var_min must be below log_var_max, got {self.log_var_min} and {self.log_var_max}.")

    def get_config(self):
        if (self.log_var_min, self.log_var_max) == (LOG_VAR_MIN, LOG_VAR_MAX):
            return {}  # the default: configs saved before the option load unchanged
        return {"log_var_min": self.log_var_min, "log_var_max": self.log_var_max}

    def num_params(self, latent_dim):
        return 2 * latent_dim

    def mean_log_var(self, params):
        """(mean, clamped log-variance), each [B, latent_dim]."""
        mean, log_var = tf.split(_f32(params), 2, axis=-1)
        return mean, tf.clip_by_value(log_var, self.log_var_min, self.log_var_max)

    _split = mean_log_var

    def base_mean_log_var(self, params):
        """No flow: the base Gaussian is the posterior itself."""
        return self.mean_log_var(params)

    def mode_stddev(self, params):
        mean, log_var = self._split(params)
        return mean, tf.exp(0.5 * log_var)

    def distribution(self, params):
        mean, stddev = self.mode_stddev(params)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=stddev)

    def reparameterize(self, params, eps):
        mean, stddev = self.mode_stddev(params)
        return mean + stddev * eps

    def has_kl_per_dim(self, prior):
        return prior.standard_normal

    def kl_per_dim(self, params, prior):
        """KL(q_j || N(0, 1)) for each latent dimension j: [B, latent_dim].

        0.5 (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2).
        """
        if not self.has_kl_per_dim(prior):
            super().kl_per_dim(params, prior)
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

    def mode_stddev(self, params):
        mean, scale_tril = self._split(params)
        return mean, tf.sqrt(tf.reduce_sum(tf.square(scale_tril), axis=-1))

    def distribution(self, params):
        mean, scale_tril = self._split(params)
        return tfd.MultivariateNormalTriL(loc=mean, scale_tril=scale_tril)

    def reparameterize(self, params, eps):
        mean, scale_tril = self._split(params)
        return mean + tf.linalg.matvec(scale_tril, eps)


@keras.saving.register_keras_serializable(package="kvae")
class PowerSpherical(Posterior):
    """A hyperspherical posterior (S-VAE): q(z|x) = PowerSpherical(mu, kappa) on
    the unit sphere S^{d-1} (De Cao & Aziz, 2020), with density

        q(z) proportional to (1 + mu^T z)^kappa,  ||z|| = ||mu|| = 1.

    params = [m, c] (d + 1 numbers): mu = m / ||m||, kappa = softplus(c) + 1.
    Sampling is exact and reparameterised (t = 2 Beta(a, b) - 1 along mu with
    a = (d-1)/2 + kappa, b = (d-1)/2, a uniform direction orthogonal to it, then
    a Householder reflection); t is drawn from a stateless seed. Pair it with
    the 'spherical_uniform' prior: the KL is then analytic. `mode_stddev`
    returns the mode mu (a point on the sphere, which is what the decoder
    was trained on; the mean E[z] = E[t] mu lies inside the ball) and the
    marginal standard deviations.
    """

    name = "power_spherical"
    support = "sphere"

    def num_params(self, latent_dim):
        return latent_dim + 1

    def _split(self, params):
        params = _f32(params)
        direction = tf.math.l2_normalize(params[..., :-1], axis=-1, epsilon=1e-12)
        concentration = tf.nn.softplus(params[..., -1]) + 1.0
        return direction, concentration

    def distribution(self, params):
        return tfd.PowerSpherical(*self._split(params))

    def mode_stddev(self, params):
        q = self.distribution(params)
        return q.mean_direction, tf.sqrt(tf.maximum(tf.linalg.diag_part(q.covariance()), 0.0))

    def reparameterize(self, params, eps):
        raise ValueError("The power spherical posterior also needs a seed: use sample(params, eps, seed).")

    def sample(self, params, eps, seed):
        """TFP's sampler, rewritten so that it is safe to differentiate: t = 2B - 1
        is kept 1e-6 away from +-1 (with d = 2, Beta(kappa + 1/2, 1/2) draws round
        to exactly 1 in float32, and d/dt sqrt(1 - t^2) is then infinite). The
        direction orthogonal to mu comes from the Gaussian noise `eps`
        (normalised), t from the stateless `seed` (all of its bits:
        `replicas.int32_seed`). Under a strategy t is drawn for the global
        batch and sliced (TFP's Beta sampler is element-wise in seed and
        position), so N replicas draw what one device draws."""
        mu, kappa = self._split(params)
        d = tf.cast(tf.shape(mu)[-1], tf.float32)
        kappa_all, start = replicas.gather(kappa)
        beta = tfd.Beta((d - 1.0) / 2.0 + kappa_all, (d - 1.0) / 2.0)
        t = beta.sample(tf.shape(eps)[0], seed=replicas.int32_seed(seed))[:, start:start + tf.shape(kappa)[0]]
        t = 2.0 * t - 1.0  # [k, B]
        t = tf.clip_by_value(t, -1.0 + 1e-6, 1.0 - 1e-6)[..., None]
        v = tf.math.l2_normalize(_f32(eps)[..., 1:], axis=-1)  # uniform on S^{d-2}
        y = tf.concat([t, tf.sqrt(1.0 - tf.square(t)) * v], axis=-1)  # around e_1
        # Householder reflection taking e_1 to mu (identity when mu = e_1).
        u = tf.math.l2_normalize(tf.concat([1.0 - mu[..., :1], -mu[..., 1:]], axis=-1), axis=-1)
        return tf.math.l2_normalize(y - 2.0 * tf.reduce_sum(y * u, -1, keepdims=True) * u, axis=-1)


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

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.Bernoulli(logits=_f32(params), dtype=tf.float32),
            reinterpreted_batch_ndims=event_ndims,
        )

    def log_prob(self, params, x, event_ndims):
        """sum x l - softplus(l): one fused softplus per value, where TFP's
        Bernoulli takes twice as long (bench/RESULTS.md, evaluation)."""
        logits = _f32(params)
        per_value = tf.cast(x, tf.float32) * logits - tf.nn.softplus(logits)
        return tf.reduce_sum(per_value, axis=list(range(-int(event_ndims), 0)))

    def mean(self, params):
        return tf.sigmoid(_f32(params))

    def export_log_prob(self, params, x):
        """sum x l - softplus(l), softplus(l) = max(l, 0) + log(1 + exp(-|l|))."""
        logits = _f32(params)
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

    def distribution(self, params, event_ndims):
        return tfd.Independent(
            tfd.ContinuousBernoulli(logits=_f32(params)),
            reinterpreted_batch_ndims=event_ndims,
        )

    def mean(self, params):
        """E[x|z] = 1 / (1 - exp(-eta)) - 1 / eta for logit eta, and its Taylor
        series 1/2 + eta/12 - eta^3/720 + eta^5/30240 for |eta| < 0.5
        (truncation < 7e-9), where the two terms cancel. Within 2e-6 of the
        float64 value, and written with ops every runtime has: TFP's `mean()`
        uses expm1, which tf2onnx exports as an op onnxruntime lacks."""
        eta = _f32(params)
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

    def export_log_prob(self, params, x):
        """sum -(x - mu)^2 / (2 sigma^2) - log sigma - log(2 pi) / 2."""
        loc, scale = self._loc_scale(params)
        return _sum_per_example(-0.5 * tf.square((x - loc) / scale) - tf.math.log(scale + tf.zeros_like(loc))
                                - 0.5 * math.log(2.0 * math.pi))


# -------------------------------------------------------------------- lookup
for _name, _factory in [("diagonal", DiagonalGaussian), ("full_covariance", FullCovarianceGaussian),
                        ("power_spherical", PowerSpherical)]:
    registry.register("posterior", _name)(lambda _f=_factory, **_: _f())
for _name, _factory in [("bernoulli", Bernoulli), ("continuous_bernoulli", ContinuousBernoulli),
                        ("gaussian", Gaussian), ("gaussian_learned", lambda: Gaussian(learn_scale=True))]:
    registry.register("likelihood", _name)(lambda _f=_factory, **_: _f())


def get_posterior(spec):
    """A `Posterior` from a name ('diagonal', 'full_covariance',
    'power_spherical'), a config or an instance (`kvae.registry.get`).

    Args:
        spec: str, dict or `Posterior`.

    Returns:
        Posterior.

    Example:
        >>> get_posterior("diagonal").num_params(latent_dim=3)
        6
    """
    return registry.get("posterior", spec)


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
