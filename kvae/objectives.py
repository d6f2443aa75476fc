"""Training objectives as small objects: each owns its options, its schedule
variables, its compatibility check and `loss(terms)`.

The VAE draws k = `objective.num_samples` latents per example and hands the
objective a `Terms` (the log-densities at those draws); the objective returns
the per-example loss [B] that the step minimises (the VAE divides the sum by
the global batch). A new estimator is a new subclass, registered under a name:

    ELBO(beta)             reconstruction + kl_weight * KL      (kl_weight = beta; KLWarmup ramps it)
    FreeBitsELBO(floor)    reconstruction + kl_weight * sum_j max(floor, mean_batch KL_j)
    CapacityELBO(gamma)    reconstruction + gamma * |mean_batch KL - C|   (CapacityAnnealing raises C)
    IWAE(k)                -log (1/k) sum_i p(x, z_i) / q(z_i|x)      (KLWarmup can weight p(z_i) / q(z_i|x))
    DReG(k)                the IWAE bound, with the doubly reparameterised gradient (Tucker et al., 2019)

"mean_batch" is the mean over the GLOBAL batch (kvae.replicas.batch_mean), so
N replicas take the step one device takes. Everything here is float32.
Over 350 lines: five estimators, each with its math in its docstring, and
the shared Terms, KL and lookup; splitting them would scatter one interface.

Example:
    >>> import tensorflow as tf
    >>> from kvae import objectives
    >>> terms = objectives.Terms(log_px_z=tf.constant([[-10.0, -20.0]]), log_pz=tf.constant([[-1.0, -1.0]]),
    ...                          log_qz=tf.constant([[0.0, 0.0]]), kl=tf.constant([2.0, 3.0]))
    >>> objectives.ELBO(beta=0.5).loss(terms).numpy()
    array([11. , 21.5], dtype=float32)
    >>> objectives.IWAE(num_samples=1).loss(terms).numpy()  # k = 1: the ELBO with the Monte Carlo KL
    array([11., 21.], dtype=float32)
"""

import dataclasses
import math
from typing import Any, Optional

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from kvae import registry, replicas

tfd = tfp.distributions

__all__ = ["Terms", "Objective", "ELBO", "FreeBitsELBO", "CapacityELBO", "IWAE", "DReG", "kl_divergence", "get"]


@dataclasses.dataclass
class Terms:
    """What the model computed for a batch, for an objective to combine.

    Args:
        log_px_z: float32 [k, B], log p(x|z_i) at k draws z_i ~ q(z|x).
        log_pz: float32 [k, B], log p(z_i) under the prior.
        log_qz: float32 [k, B], log q(z_i|x).
        kl: float32 [B], KL(q(z|x) || p(z)): analytic where TFP has it, else
            the mean over the k draws of log q(z_i|x) - log p(z_i).
        q_params: float32 [B, P] the posterior's parameters (or None).
        posterior: the model's `kvae.distributions.Posterior` (or None).
        prior: the model's `kvae.priors.Prior` (or None).
        z: float32 [k, B, latent_dim], the draws (or None).
    """

    log_px_z: tf.Tensor
    log_pz: tf.Tensor
    log_qz: tf.Tensor
    kl: tf.Tensor
    q_params: Optional[tf.Tensor] = None
    posterior: Any = None
    prior: Any = None
    z: Optional[tf.Tensor] = None

    @property
    def reconstruction(self):
        """-E_q log p(x|z) per example [B], the mean over the k draws."""
        return -tf.reduce_mean(self.log_px_z, axis=0)

    @property
    def log_weights(self):
        """log p(x|z_i) + log p(z_i) - log q(z_i|x): [k, B]."""
        return self.log_px_z + self.log_pz - self.log_qz


def kl_divergence(q, p, log_qz=None, log_pz=None):
    """KL(q || p) per example [B].

    Analytic where TFP registers a closed form; otherwise (also when q or p
    is not a `tfd.Distribution`, e.g. a flow posterior or kvae's VampPrior
    mixture) the Monte Carlo estimate mean_i (log q(z_i) - log p(z_i)) over
    the draws in `log_qz`, `log_pz` ([k, B]), whose gradient flows through
    the reparameterised z_i.

    Args:
        q: the posterior, batch [B].
        p: the prior.
        log_qz, log_pz: float32 [k, B] or None.

    Returns:
        float32 [B].

    Example:
        >>> import tensorflow_probability as tfp
        >>> tfd = tfp.distributions
        >>> q = tfd.MultivariateNormalDiag([[1.0, 0.0]], [[1.0, 1.0]])
        >>> p = tfd.MultivariateNormalDiag([0.0, 0.0], [1.0, 1.0])
        >>> kl_divergence(q, p).numpy()  # mu^2 / 2
        array([0.5], dtype=float32)
    """
    try:
        if isinstance(q, tfd.Distribution) and isinstance(p, tfd.Distribution):
            return tfd.kl_divergence(q, p)
        raise NotImplementedError
    except NotImplementedError:
        if log_qz is None or log_pz is None:
            raise ValueError(f"No analytic KL between {type(q).__name__} and {type(p).__name__}: "
                             "pass log_qz and log_pz for a Monte Carlo estimate.") from None
        return tf.reduce_mean(log_qz - log_pz, axis=0)


class Objective:
    """Base class: options in `__init__`, variables in `build`, `loss(terms)`.

    Subclasses set `name`, take `num_samples` (draws of z per example), may
    override `check(model)` to refuse parts they cannot work with, and store
    every constructor argument under its own name for `get_config`.

    Args:
        num_samples: int >= 1, draws of z per example.
    """

    name = None
    #: the float32 variable a KL warm-up sets (`kvae.callbacks.KLWarmup`), made by `build`; None: no KL weight
    kl_weight = None
    #: the variable a capacity schedule sets (`kvae.callbacks.CapacityAnnealing`), made by `build`; None: none
    capacity = None
    #: whether a KL warm-up weights this objective's gradient (DReG's estimator does not use the weight)
    supports_kl_warmup = True
    #: whether `loss` at full KL weight is the bound to select models by (IWAE's L_k); False: the ELBO selects
    selects_by_loss = False

    def __init__(self, num_samples=1):
        if not int(num_samples) >= 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        self.num_samples = int(num_samples)

    def build(self):
        """Create the objective's schedule variables (called by the VAE, under its strategy scope)."""

    def check(self, model):
        """Raise ValueError if the model's parts do not suit this objective."""

    def loss(self, terms):
        """The per-example loss [B] to minimise, from a `Terms`."""
        raise NotImplementedError

    #: whether `gradients` needs a persistent tape (it differentiates twice)
    persistent_tape = False

    def gradients(self, tape, loss, terms, model):
        """The step's gradients for `model.trainable_variables`: by default of
        `loss` (the scaled batch loss recorded on `tape`). An estimator whose
        gradient is not the loss's own (DReG) overrides this."""
        return tape.gradient(loss, model.trainable_variables)

    def get_config(self):
        return {"num_samples": self.num_samples}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


def _nonnegative(value, what):
    if not float(value) >= 0 or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number >= 0, got {value}.")
    return float(value)


@keras.saving.register_keras_serializable(package="kvae")
class ELBO(Objective):
    """The (beta-)ELBO, averaged over `num_samples` draws of z per example:

        loss = E_q[-log p(x|z)] + kl_weight * KL(q(z|x) || p(z))

    `kl_weight` (a float32 variable) starts at `beta`; `kvae.callbacks.KLWarmup`
    changes it between steps without retracing. Not saved with the model.

    Args:
        beta: float >= 0, the weight of the KL term (1: the ELBO).
        num_samples: int >= 1, draws of z per example.

    Example:
        >>> import kvae
        >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, objective=kvae.objectives.ELBO(beta=4.0))
        >>> float(model.objective.kl_weight.numpy())
        4.0
    """

    name = "elbo"

    def __init__(self, beta=1.0, num_samples=1):
        super().__init__(num_samples)
        self.beta = _nonnegative(beta, "beta")
        self.kl_weight = None

    def build(self):
        if self.kl_weight is None:
            self.kl_weight = tf.Variable(self.beta, trainable=False, dtype=tf.float32, name="kl_weight")

    def kl_term(self, terms):
        """The KL term before weighting, per example [B]."""
        return terms.kl

    def loss(self, terms):
        self.build()
        return terms.reconstruction + self.kl_weight * self.kl_term(terms)

    def get_config(self):
        return {"beta": self.beta, **super().get_config()}


@keras.saving.register_keras_serializable(package="kvae")
class FreeBitsELBO(ELBO):
    """The ELBO with free bits (Kingma et al., 2016): each latent dimension's
    KL, averaged over the global batch, counts at least `free_bits` nats:

        loss = reconstruction + kl_weight * sum_j max(free_bits, mean_batch KL_j)

    The optimiser gains nothing by pushing a dimension's KL below the floor (its
    gradient is zero there), which keeps units from collapsing. Needs a
    posterior with a per-dimension analytic KL to the prior (the 'diagonal'
    posterior with the 'standard_normal' prior).

    Args:
        free_bits: float >= 0, the floor in nats per dimension.
        beta: float >= 0.
        num_samples: int >= 1.
    """

    name = "free_bits"

    def __init__(self, free_bits=0.5, beta=1.0, num_samples=1):
        super().__init__(beta, num_samples)
        self.free_bits = _nonnegative(free_bits, "free_bits")

    def check(self, model):
        if not model.posterior.has_kl_per_dim(model.prior):
            raise ValueError(f"free_bits needs a per-dimension KL (it floors each dimension's analytic KL), which "
                             f"the {model.posterior.name!r} posterior does not have against the "
                             f"{type(model.prior).__name__} (the 'diagonal' posterior with the 'standard_normal' "
                             "prior has it).")

    def kl_term(self, terms):
        per_dim = replicas.batch_mean(terms.posterior.kl_per_dim(terms.q_params, terms.prior))  # [d]
        return tf.fill(tf.shape(terms.kl), tf.reduce_sum(tf.maximum(per_dim, self.free_bits)))

    def get_config(self):
        return {"free_bits": self.free_bits, **super().get_config()}


@keras.saving.register_keras_serializable(package="kvae")
class CapacityELBO(Objective):
    """The capacity objective of Burgess et al. (2018):

        loss = reconstruction + gamma * |mean_batch KL - C|

    The KL is pushed towards a capacity C (nats, the float32 variable
    `capacity`, 0 at first) that `kvae.callbacks.CapacityAnnealing` raises
    during training, instead of towards 0. The mean is over the global batch.

    Args:
        gamma: float >= 0, the weight of the capacity term.
        num_samples: int >= 1.
    """

    name = "capacity"

    def __init__(self, gamma=1000.0, num_samples=1):
        super().__init__(num_samples)
        self.gamma = _nonnegative(gamma, "capacity_gamma")
        self.capacity = None

    def build(self):
        if self.capacity is None:
            self.capacity = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="kl_capacity")

    def loss(self, terms):
        self.build()
        term = self.gamma * tf.abs(replicas.batch_mean(terms.kl) - self.capacity)
        return terms.reconstruction + tf.fill(tf.shape(terms.kl), term)

    def get_config(self):
        return {"gamma": self.gamma, **super().get_config()}


@keras.saving.register_keras_serializable(package="kvae")
class IWAE(Objective):
    """The importance-weighted bound (Burda et al., 2016), per example:

        L_k = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),   z_i ~ q(z|x)

    loss = -L_k. L_1 is the ELBO; L_k <= log p(x) and does not decrease in
    expectation with k. Computed with `tfp.math.reduce_logmeanexp` in float32.
    The gradient is the plain reparameterised one (a new estimator, e.g.
    DReG, is a subclass overriding `loss`).

    A KL warm-up (`kvae.callbacks.KLWarmup`) sets `kl_weight` (a float32
    variable, 1 unless warming up) below 1, and the weights inside the
    log-mean-exp become p(x|z_i) (p(z_i) / q(z_i|x))^kl_weight: at k = 1 the
    warm-up's weighted ELBO, at kl_weight = 1 the bound L_k again. The warm-up
    is a schedule, not an option: `beta` stays 1 (a weighted L_k is no bound).

    Args:
        num_samples: int >= 1, k.
    """

    name = "iwae"
    beta = 1.0
    selects_by_loss = True

    def __init__(self, num_samples=5):
        super().__init__(num_samples)
        self.kl_weight = None

    def build(self):
        if self.kl_weight is None:
            self.kl_weight = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="kl_weight")

    def loss(self, terms):
        self.build()
        log_weights = terms.log_px_z + self.kl_weight * (terms.log_pz - terms.log_qz)
        return -tfp.math.reduce_logmeanexp(log_weights, axis=0)


@keras.saving.register_keras_serializable(package="kvae")
class DReG(IWAE):
    """The IWAE bound with the doubly reparameterised gradient estimator
    (Tucker, Lawson, Gu and Maddison, 2019). The value is the IWAE loss
    -L_k; with normalised weights w~_i = softmax_i(log w_i) (held constant),
    the gradients are

        decoder and prior (theta):  -sum_i w~_i   d log w_i / d theta          (the IWAE gradient)
        encoder (phi):              -sum_i w~_i^2 (d log w_i / d z_i) (d z_i / d phi)

    where in the encoder's term log q(z_i|x) is taken at the posterior's
    parameters held constant, so only the path through z_i remains. Both are
    unbiased for the IWAE bound's gradient; the encoder's has far lower
    variance at large k (the plain estimator's signal-to-noise ratio falls
    like 1/sqrt(k), Rainforth et al., 2018). The encoder's gradient is
    carried back from z alone, so the prior must not be computed by the
    encoder (not the VampPrior) and the posterior must have a log-density
    at any z (`Posterior.log_prob`).

    Args:
        num_samples: int >= 1, k.

    Example:
        >>> import kvae
        >>> kvae.VAE((8, 8, 1), 2, objective="dreg", num_samples=5).objective
        DReG(num_samples=5)
    """

    name = "dreg"
    persistent_tape = True
    supports_kl_warmup = False

    def build(self):
        """DReG has no KL weight (no warm-up): its surrogate is for L_k itself."""

    def check(self, model):
        if model.prior.uses_encoder:
            raise ValueError(f"The 'dreg' objective carries the encoder's gradient back through z only, but the "
                             f"{type(model.prior).__name__} is computed by the encoder: use 'iwae' with it.")

    def loss(self, terms):
        value = -tfp.math.reduce_logmeanexp(terms.log_weights, axis=0)
        # log w_i with q's parameters held constant: only the path through z_i stays.
        log_q = terms.posterior.log_prob(tf.stop_gradient(terms.q_params), terms.z)
        weights = tf.stop_gradient(tf.nn.softmax(terms.log_weights, axis=0))
        surrogate = -tf.reduce_sum(weights * (terms.log_px_z + terms.log_pz - log_q), axis=0)
        return tf.stop_gradient(value) + surrogate - tf.stop_gradient(surrogate)

    def gradients(self, tape, loss, terms, model):
        encoder_vars = {id(v) for v in model.encoder_variables}
        theta = [v for v in model.trainable_variables if id(v) not in encoder_vars]
        phi = [v for v in model.trainable_variables if id(v) in encoder_vars]
        *grads_theta, grad_z = tape.gradient(loss, theta + [terms.z])  # grad_z: w~_i d log w_i / d z_i
        weights = tf.stop_gradient(tf.nn.softmax(terms.log_weights, axis=0))[..., None]
        grads_phi = tape.gradient(terms.z, phi, output_gradients=weights * grad_z)
        by_id = dict(zip(map(id, theta + phi), grads_theta + grads_phi))
        return [by_id[id(v)] for v in model.trainable_variables]


def _elbo(beta=1.0, num_samples=1, free_bits=0.0, capacity_gamma=0.0):
    """'elbo': the ELBO, or with free_bits > 0 a `FreeBitsELBO`, with capacity_gamma > 0 a `CapacityELBO`."""
    free_bits, capacity_gamma = _nonnegative(free_bits, "free_bits"), _nonnegative(capacity_gamma, "capacity_gamma")
    if capacity_gamma > 0 and free_bits > 0:
        raise ValueError("capacity_gamma replaces the KL term of the 'elbo' objective: "
                         "it cannot be combined with free_bits.")
    if capacity_gamma > 0:
        return CapacityELBO(capacity_gamma, num_samples)
    if free_bits > 0:
        return FreeBitsELBO(free_bits, beta, num_samples)
    return ELBO(beta, num_samples)


def _bound(cls):
    """A registry factory for a bound (IWAE, DReG): it takes num_samples, and refuses the ELBO's options."""
    def factory(beta=1.0, num_samples=1, free_bits=0.0, capacity_gamma=0.0):
        if _nonnegative(free_bits, "free_bits") > 0 or _nonnegative(capacity_gamma, "capacity_gamma") > 0:
            raise ValueError(f"free_bits and capacity_gamma apply to the 'elbo' objective, not to {cls.name!r}.")
        return cls(num_samples)

    return factory


registry.register("objective", "elbo")(_elbo)
for _cls in (IWAE, DReG):
    registry.register("objective", _cls.name)(_bound(_cls))


def get(spec, **options):
    """An `Objective` from a name ('elbo', 'iwae'), a config, or an instance.

    Args:
        spec: str ('elbo', 'iwae', 'dreg'), dict or `Objective`.
        **options: for a name: beta, num_samples, free_bits, capacity_gamma
            ('elbo' with free_bits > 0 is a `FreeBitsELBO`, with
            capacity_gamma > 0 a `CapacityELBO`); None means not given.

    Returns:
        An `Objective`.

    Example:
        >>> get("elbo", free_bits=0.5)
        FreeBitsELBO(free_bits=0.5, beta=1.0, num_samples=1)
    """
    options = {k: v for k, v in options.items() if v is not None}
    if options and not isinstance(spec, str):
        raise ValueError(f"Give {', '.join(options)} to the objective object, not to the VAE.")
    return registry.get("objective", spec, **options)
