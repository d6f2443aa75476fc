"""Posteriors q(z|x): a family of distributions parametrised by a flat float32
vector per example, built as `tfp.distributions` inside steps and objectives.

Example:
    >>> q = get_posterior("diagonal").distribution([[0.0, 0.0, 0.0, 0.0]])
    >>> [int(n) for n in q.batch_shape + q.event_shape]
    [1, 2]
"""

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry, replicas
from kvae.distributions.gaussian import LOG_VAR_MAX, LOG_VAR_MIN, f32, split_mean_log_var
from kvae.distributions.part import Part

tfd = tfp.distributions

__all__ = ["Posterior", "Density", "DiagonalGaussian", "FullCovarianceGaussian", "PowerSpherical", "get_posterior"]


class Posterior(Part):
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
        return {"log_var_min": self.log_var_min, "log_var_max": self.log_var_max}

    def num_params(self, latent_dim):
        return 2 * latent_dim

    def mean_log_var(self, params):
        """(mean, clamped log-variance), each [B, latent_dim]."""
        return split_mean_log_var(params, low=self.log_var_min, high=self.log_var_max)

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
        params = f32(params)
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
        params = f32(params)
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
        v = tf.math.l2_normalize(f32(eps)[..., 1:], axis=-1)  # uniform on S^{d-2}
        y = tf.concat([t, tf.sqrt(1.0 - tf.square(t)) * v], axis=-1)  # around e_1
        # Householder reflection taking e_1 to mu (identity when mu = e_1).
        u = tf.math.l2_normalize(tf.concat([1.0 - mu[..., :1], -mu[..., 1:]], axis=-1), axis=-1)
        return tf.math.l2_normalize(y - 2.0 * tf.reduce_sum(y * u, -1, keepdims=True) * u, axis=-1)


for _name, _factory in [("diagonal", DiagonalGaussian), ("full_covariance", FullCovarianceGaussian),
                        ("power_spherical", PowerSpherical)]:
    registry.register("posterior", _name)(lambda _f=_factory, **_: _f())


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
