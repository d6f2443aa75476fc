"""Priors p(z): Keras layers (so learned priors own their weights) that build a
`tfd.Distribution` with event shape [latent_dim] on request.

All math is float32 whatever the global dtype policy.

Example:
    >>> from kvae import priors
    >>> p = priors.get_prior("standard_normal", latent_dim=3, input_shape=(8, 8, 1))
    >>> round(float(p.distribution().log_prob([0.0, 0.0, 0.0])), 4)  # -3/2 log(2 pi)
    -2.7568
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry

tfd = tfp.distributions

__all__ = ["Prior", "StandardNormal", "MixtureOfGaussians", "VampPrior", "SphericalUniform", "DiagonalMixture",
           "get_prior"]


class DiagonalMixture:
    """p(z) = sum_k pi_k N(z; m_k, diag(exp(v_k))), K diagonal Gaussians, with
    the two methods the model uses (`log_prob`, `sample`) and memory [N, K]
    rather than TFP's [N, K, d]:

        log N(z; m_k, v_k) = -1/2 (z^2 . 1/v_k - 2 z . m_k/v_k + m_k^2 . 1/v_k + sum_j v_kj + d log 2 pi)

    The quadratic form is one matrix product, in float64 (in float32 its
    cancellation costs up to 0.03 nats when variances are small); the result
    is float32. Not a `tfd.Distribution`: the KL to it is a Monte Carlo estimate.

    Args:
        means, log_vars: float [K, d].
        logits: float [K] or None (equal weights).

    Example:
        >>> import numpy as np
        >>> p = DiagonalMixture(np.zeros((2, 3)), np.zeros((2, 3)))
        >>> round(float(p.log_prob(np.zeros((1, 3)))[0]), 4)  # -3/2 log(2 pi)
        -2.7568
    """

    def __init__(self, means, log_vars, logits=None):
        self.means = tf.cast(means, tf.float32)
        self.log_vars = tf.cast(log_vars, tf.float32)
        k = tf.shape(self.means)[0]
        self.log_weights = (tf.fill([k], -tf.math.log(tf.cast(k, tf.float32))) if logits is None
                            else tf.nn.log_softmax(tf.cast(logits, tf.float32)))

    def log_prob(self, z):
        """log p(z) [...] for z [..., d]."""
        z = tf.cast(z, tf.float32)
        flat = tf.cast(tf.reshape(z, [-1, tf.shape(z)[-1]]), tf.float64)
        means, log_vars = tf.cast(self.means, tf.float64), tf.cast(self.log_vars, tf.float64)
        inv = tf.exp(-log_vars)
        # one product of [z^2, z] and [1/v, -2 m/v] (one [N, 2d] x [2d, K] matmul costs less than two)
        quad = (tf.matmul(tf.concat([flat * flat, flat], -1), tf.concat([inv, -2.0 * means * inv], -1),
                          transpose_b=True) + tf.reduce_sum(means * means * inv, axis=-1))  # [N, K]
        d = tf.cast(tf.shape(means)[-1], tf.float64)
        log_norm = tf.reduce_sum(log_vars, axis=-1) + d * tf.math.log(2.0 * tf.constant(3.141592653589793, tf.float64))
        component = tf.cast(-0.5 * (quad + log_norm), tf.float32) + self.log_weights
        return tf.reshape(tf.reduce_logsumexp(component, axis=-1), tf.shape(z)[:-1])

    def sample(self, n, seed):
        """n draws [n, d] from the stateless int [2] `seed`."""
        seeds = tfp.random.split_seed(seed, 2)
        index = tfd.Categorical(logits=self.log_weights).sample(n, seed=seeds[0])
        eps = tf.random.stateless_normal(tf.stack([n, tf.shape(self.means)[-1]]), seeds[1])
        return tf.gather(self.means, index) + tf.exp(0.5 * tf.gather(self.log_vars, index)) * eps


class Prior(keras.layers.Layer):
    """Base class. Subclasses implement `distribution(model)`.

    `model` is the owning VAE; only priors defined through the encoder (the
    VampPrior) use it. `support` ('euclidean' or 'sphere') must match the
    posterior's; `standard_normal` says whether p(z) = N(0, I) (then per-
    dimension KLs exist, e.g. for free bits); `uses_encoder` whether
    `distribution(model)` runs the model's encoder (DReG cannot tell its
    gradient apart then); `num_components` how many mixture components it has
    (evaluation sizes its chunks by it).

    Args:
        latent_dim: int >= 1.
        **kwargs: for `keras.layers.Layer` (dtype defaults to float32).
    """

    support = "euclidean"
    standard_normal = False
    uses_encoder = False
    num_components = 1

    def __init__(self, latent_dim, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        self.latent_dim = int(latent_dim)

    def distribution(self, model=None):
        raise NotImplementedError

    def check(self, model):
        """Raise ValueError if the model's other parts do not suit this prior:
        by default the posterior must live where the prior does."""
        if model.posterior.support != self.support:
            raise ValueError(
                "A hyperspherical latent space needs both posterior='power_spherical' and "
                "prior='spherical_uniform' (z lives on the unit sphere); got the "
                f"{model.posterior.name!r} posterior with the {type(self).__name__} prior."
            )

    def call(self, z):
        """log p(z) [B] at latents z [B, latent_dim] (float32), for a prior that needs no model;
        a prior defined through the encoder (the VampPrior) is evaluated by `distribution(model)`."""
        return self.distribution().log_prob(tf.cast(z, tf.float32))

    def get_config(self):
        config = super().get_config()
        config.update(latent_dim=self.latent_dim)
        return config


@keras.saving.register_keras_serializable(package="kvae")
class StandardNormal(Prior):
    """p(z) = N(0, I). KL to a Gaussian posterior is analytic.

    Args:
        latent_dim: int >= 1.
    """

    standard_normal = True

    def distribution(self, model=None):
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )


@keras.saving.register_keras_serializable(package="kvae")
class MixtureOfGaussians(Prior):
    """A learned mixture p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)).

    Means start at N(0, 1) draws, scales at 1, weights uniform. KL to the
    posterior has no closed form, so the ELBO uses a one-sample Monte Carlo
    estimate log q(z|x) - log p(z).

    Args:
        latent_dim: int, dimension of z.
        num_components: int, number of mixture components K.
    """

    def __init__(self, latent_dim, num_components=10, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if int(num_components) < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}.")
        self.num_components = int(num_components)
        k, d = self.num_components, self.latent_dim
        self.means = self.add_weight(
            shape=(k, d), initializer=keras.initializers.RandomNormal(seed=0), name="means"
        )
        self.log_scales = self.add_weight(shape=(k, d), initializer="zeros", name="log_scales")
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")

    def distribution(self, model=None):
        log_scales = tf.clip_by_value(tf.cast(self.log_scales, tf.float32), -6.0, 4.0)
        return DiagonalMixture(self.means, 2.0 * log_scales, self.logits)

    def get_config(self):
        config = super().get_config()
        config.update(num_components=self.num_components)
        return config


@keras.saving.register_keras_serializable(package="kvae")
class VampPrior(Prior):
    """VampPrior (Tomczak and Welling, 2018): p(z) = 1/K sum_k q(z | u_k).

    The K pseudo-inputs u_k are learned, kept in [0, 1], and sent through the
    model's own encoder, so the prior is a mixture of posteriors. They are
    kept in [0, 1] either by a sigmoid of free logits drawn from N(0, 0.5^2)
    (`pseudo_inputs="sigmoid"`, grey images at first) or, as in Tomczak and
    Welling's code, by clipping free values drawn from N(0.05, 0.01^2)
    (`pseudo_inputs="clip"`, near-black images at first; a value pushed
    outside [0, 1] gets no gradient there, as with their hardtanh).
    KL is a Monte Carlo estimate. Unconditional models only. With a
    posterior that has `mean_log_var` (the diagonal Gaussian) the prior is a
    `DiagonalMixture` (memory [N, K], not [N, K, d]); else TFP's mixture of
    the posterior's own family. `num_components` = K, for callers that size
    their work by it (kvae.evaluate).

    A flow posterior (kvae.flows.IAFPosterior) has no closed-form density to
    mix: its density at z needs the flow inverted, once per component.
    `components="base"` mixes the posterior's base Gaussians instead,
    p(z) = 1/K sum_k N(z; mu(u_k), sigma(u_k)^2) with mu, sigma the encoder's
    Gaussian before the flow (the posterior's `base_mean_log_var`): still a
    learned mixture tied to the encoder at the pseudo-inputs, no longer the
    mixture of the posteriors themselves. With the diagonal Gaussian posterior
    the two choices are the same prior.

    Args:
        latent_dim: int, dimension of z.
        input_shape: shape of one data example (the pseudo-inputs' shape).
        num_pseudo_inputs: int, K.
        pseudo_inputs: "sigmoid" (default) or "clip", how they are kept in [0, 1].
        components: "posterior" (default) or "base", what is mixed (above).
    """

    def __init__(self, latent_dim, input_shape, num_pseudo_inputs=50, pseudo_inputs="sigmoid",
                 components="posterior", **kwargs):
        super().__init__(latent_dim, **kwargs)
        if int(num_pseudo_inputs) < 1:
            raise ValueError(f"num_pseudo_inputs must be >= 1, got {num_pseudo_inputs}.")
        if pseudo_inputs not in ("sigmoid", "clip"):
            raise ValueError(f"pseudo_inputs must be 'sigmoid' or 'clip', got {pseudo_inputs!r}.")
        if components not in ("posterior", "base"):
            raise ValueError(f"components must be 'posterior' or 'base', got {components!r}.")
        self.data_shape = tuple(int(s) for s in input_shape)
        self.num_pseudo_inputs = int(num_pseudo_inputs)
        self.squash, self.components = pseudo_inputs, components
        mean, std = (0.0, 0.5) if pseudo_inputs == "sigmoid" else (0.05, 0.01)
        self.pseudo_logits = self.add_weight(  # the free parameters: logits, or the clipped values
            shape=(self.num_pseudo_inputs,) + self.data_shape,
            initializer=keras.initializers.RandomNormal(mean, std, seed=0),
            name="pseudo_logits",
        )

    def check(self, model):
        super().check(model)
        if model.conditional:
            raise ValueError("The VampPrior is not supported for a conditional model.")
        if self.components == "base":
            if not model.posterior.has_base_gaussian:
                raise ValueError(f"VampPrior(components='base') mixes the posterior's base Gaussians; the "
                                 f"{model.posterior.name!r} posterior has none (no base_mean_log_var).")
        elif not model.posterior.closed_form:
            hint = (" VampPrior(components='base') mixes its base Gaussians instead (prior='vamp_base', "
                    "--prior vamp_base)."
                    if model.posterior.has_base_gaussian else "")
            raise ValueError(f"The VampPrior is a mixture of posteriors, which needs a closed-form posterior; the "
                             f"{model.posterior.name!r} posterior is not one (for two stochastic layers use "
                             f"posterior='hierarchical' with prior='hierarchical_vamp').{hint}")

    uses_encoder = True

    @property
    def num_components(self):
        return self.num_pseudo_inputs

    def pseudo_inputs(self):
        """The K pseudo-inputs, float32 [K, *input_shape] in [0, 1]."""
        free = tf.cast(self.pseudo_logits, tf.float32)
        return tf.sigmoid(free) if self.squash == "sigmoid" else tf.clip_by_value(free, 0.0, 1.0)

    def distribution(self, model=None):
        if model is None:
            raise ValueError("VampPrior.distribution needs the VAE whose encoder it uses.")
        params = model.encode_params(self.pseudo_inputs())
        if self.components == "base":
            return DiagonalMixture(*model.posterior.base_mean_log_var(params))
        if model.posterior.diagonal_gaussian:
            return DiagonalMixture(*model.posterior.mean_log_var(params))
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_pseudo_inputs])),
            components_distribution=model.posterior.distribution(params),
        )

    def get_config(self):
        config = super().get_config()
        config.update(input_shape=list(self.data_shape), num_pseudo_inputs=self.num_pseudo_inputs)
        config.update(pseudo_inputs=self.squash, components=self.components)
        return config


@keras.saving.register_keras_serializable(package="kvae")
class SphericalUniform(Prior):
    """p(z) = the uniform distribution on the unit sphere S^{d-1} in R^d, the
    prior of a hyperspherical (S-VAE) latent space. Its log density is
    -log area(S^{d-1}) = log Gamma(d/2) - log 2 - (d/2) log pi. KL to the
    'power_spherical' posterior is analytic (-entropy - log density).

    Args:
        latent_dim: int >= 2.
    """

    support = "sphere"

    def __init__(self, latent_dim, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if self.latent_dim < 2:
            raise ValueError(f"The spherical uniform prior needs latent_dim >= 2, got {latent_dim}.")

    def distribution(self, model=None):
        return tfd.SphericalUniform(dimension=self.latent_dim, dtype=tf.float32)


registry.register("prior", "standard_normal")(lambda latent_dim, **_: StandardNormal(latent_dim))
registry.register("prior", "mixture")(lambda latent_dim, **_: MixtureOfGaussians(latent_dim))
registry.register("prior", "vamp")(lambda latent_dim, input_shape, **_: VampPrior(latent_dim, input_shape))
registry.register("prior", "vamp_base")(
    lambda latent_dim, input_shape, **_: VampPrior(latent_dim, input_shape, components="base"))
registry.register("prior", "spherical_uniform")(lambda latent_dim, **_: SphericalUniform(latent_dim))


def get_prior(spec, latent_dim, input_shape):
    """A `Prior` layer from a name ('standard_normal', 'mixture', 'vamp',
    'vamp_base' (a VampPrior of a flow posterior's base Gaussians),
    'spherical_uniform'), a serialised config, or an instance
    (`kvae.registry.get`).

    Args:
        spec: str, dict or `Prior`.
        latent_dim: int, the model's latent dimension (a given prior must match it).
        input_shape: tuple, one example's shape (the VampPrior's pseudo-inputs).

    Returns:
        A `Prior`.
    """
    prior = registry.get("prior", spec, latent_dim=latent_dim, input_shape=input_shape)
    if prior.latent_dim != latent_dim:
        raise ValueError(
            f"The prior's latent_dim ({prior.latent_dim}) differs from the model's ({latent_dim})."
        )
    return prior
