"""A flow posterior: the inverse autoregressive flow of Kingma et al. (2016).

    z_0 = mu(x) + sigma(x) * eps,                       eps ~ N(0, I)
    z_t = g_t * z_{t-1} + (1 - g_t) * m_t,              [m_t, s_t] = MADE_t(z_{t-1}, h(x)),  g_t = sigmoid(s_t)
    log q(z_T|x) = log N(eps; 0, I) - sum_j log sigma_j - sum_t sum_j log g_tj

m_tj and s_tj depend on z_{t-1,<j} only (MADE masks), so each step's Jacobian
is triangular with diagonal g_t; the order of z is reversed between steps.
Drawing z and its density costs one pass; the density of any other z
inverts the flow (d passes per step), which `log_prob` does for DReG and
tests. The encoder head gives [mu, log sigma^2, h] (2 d + context numbers).

Example:
    >>> import kvae
    >>> model = kvae.VAE((8, 8, 1), latent_dim=4, posterior=kvae.flows.IAFPosterior(num_steps=2))
    >>> model.posterior.num_params(4)  # mu, log sigma^2 (4 each) and a 16-number context
    24
"""


import keras
import numpy as np
import tensorflow as tf

from kvae import registry
from kvae.distributions import Density, Posterior
from kvae.distributions.gaussian import log_density_of_noise, split_mean_log_var

__all__ = ["MaskedDense", "IAFPosterior", "made_steps", "iaf_forward", "iaf_inverse"]


@keras.saving.register_keras_serializable(package="kvae")
class MaskedDense(keras.layers.Layer):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask [in, out].

    Args:
        mask: array [in, out] of 0/1.
    """

    def __init__(self, mask, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mask = np.asarray(mask, np.float32)
        self.kernel = self.add_weight(shape=self.mask.shape, initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=self.mask.shape[1:], initializer="zeros", name="bias")

    def call(self, x):
        dtype = self.compute_dtype  # the layer's dtype policy (float16 under mixed_float16)
        kernel = tf.cast(self.kernel, dtype) * tf.cast(self.mask, dtype)
        # tensordot: one 2-D matmul over all leading axes ([k, B, in] in evaluation), not a broadcast batch matmul
        return tf.tensordot(tf.cast(x, dtype), kernel, 1) + tf.cast(self.bias, dtype)

    def get_config(self):
        return {**super().get_config(), "mask": self.mask.tolist()}


def made_masks(dim, hidden):
    """MADE masks (Germain et al., 2015) for inputs in order 1..dim: hidden unit
    h has degree 1 + h mod (dim - 1) and sees inputs of degree <= it; output j
    (degree j + 1) sees hidden units of degree < j + 1, so output j depends on
    inputs 0..j-1 only. Returns (in->hidden [dim, hidden], hidden->out [hidden, dim])."""
    degree_in = np.arange(1, dim + 1)
    degree_hidden = 1 + np.arange(hidden) % max(dim - 1, 1)
    return ((degree_hidden[None, :] >= degree_in[:, None]).astype(np.float32),
            (degree_in[None, :] > degree_hidden[:, None]).astype(np.float32))


def made_steps(d, num_steps, hidden_units, context_dim, gate_bias=1.0):
    """The layers of `num_steps` IAF steps over d latents, each [z_in, h_in,
    m_out, s_out]: a MADE with one hidden layer of `hidden_units` ReLUs that
    also sees a context of `context_dim` numbers (0: none), its gate's bias at
    +`gate_bias` (each step starts close to the identity). Used by
    `IAFPosterior` and by `kvae.hierarchical.HierarchicalPosterior(flow_steps=...)`.

    Args:
        d: int >= 2, latents.
        num_steps, hidden_units: int >= 1.
        context_dim: int >= 0.
        gate_bias: float.

    Returns:
        list of `num_steps` lists of 4 layers, for `iaf_forward` and `iaf_inverse`.
    """
    if int(d) < 2:
        raise ValueError(f"An IAF needs at least 2 latents, got {d}.")
    to_hidden, to_out = made_masks(d, hidden_units)
    steps = []
    for t in range(num_steps):
        z_in = MaskedDense(to_hidden, name=f"made{t}_in")
        h_in = keras.layers.Dense(hidden_units, use_bias=False, dtype="float32", name=f"made{t}_context")
        m_out = MaskedDense(to_out, name=f"made{t}_m")
        s_out = MaskedDense(to_out, name=f"made{t}_s")
        s_out.bias.assign(np.full([d], gate_bias, np.float32))
        if context_dim:
            h_in.build((None, context_dim))
        steps.append([z_in, h_in, m_out, s_out])
    return steps


def _made(step, z, context):
    z_in, h_in, m_out, s_out = step
    hidden = z_in(z)
    if context is not None:
        hidden = hidden + h_in(context)
    hidden = tf.nn.relu(hidden)
    return m_out(hidden), s_out(hidden)


def iaf_forward(steps, z, context=None):
    """Every step of `made_steps`' flow from z_0 [..., B, d], with the context
    [B, c] (None: none).

    Args:
        steps: from `made_steps`.
        z: [..., B, d] float32, z_0.
        context: [B, context_dim] or None.

    Returns:
        (z_T [..., B, d], the log-determinant of dz_T/dz_0: the sum of log-gates [..., B]).
    """
    log_det = 0.0
    for step in steps:
        m, s = _made(step, z, context)
        gate = tf.sigmoid(s)
        z = gate * z + (1.0 - gate) * m
        log_det += tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)
        z = tf.reverse(z, axis=[-1])
    return z, log_det


def iaf_inverse(steps, z, context=None):
    """z_0 from z_T: each step inverted one coordinate at a time (d passes).

    Args:
        steps: from `made_steps`.
        z: [..., B, d] float32, z_T.
        context: [B, context_dim] or None, as given to `iaf_forward`.

    Returns:
        z_0 [..., B, d].
    """
    d = int(steps[0][2].bias.shape[0])
    for step in reversed(steps):
        y = tf.reverse(z, axis=[-1])
        x = tf.zeros_like(y)
        for _ in range(d):  # after pass j, coordinates 0..j are exact
            m, s = _made(step, x, context)
            gate = tf.sigmoid(s)
            x = (y - (1.0 - gate) * m) / gate
        z = x
    return z


@keras.saving.register_keras_serializable(package="kvae")
class IAFPosterior(Posterior, keras.layers.Layer):
    """q(z|x) as a diagonal Gaussian followed by `num_steps` inverse
    autoregressive flow steps (the module docstring has the math), each a MADE
    with one hidden layer of `hidden_units` ReLUs that also sees the encoder's
    context h(x). The gate's bias starts at +`gate_bias` (g near 1: each step
    starts close to the identity, as in the paper). `mode_stddev` returns the
    flow's image of the base mean (eps = 0) and the base standard deviations.
    The flow's weights are made when the VAE asks `num_params(latent_dim)`.

    Args:
        num_steps: int >= 1.
        hidden_units: int >= 1, per MADE.
        context_dim: int >= 0, size of h(x).
        gate_bias: float.

    Example:
        >>> import kvae
        >>> kvae.registry.get("posterior", "iaf")
        IAFPosterior(num_steps=2, hidden_units=320, context_dim=16, gate_bias=1.0)
    """

    name = "iaf"
    closed_form = False
    has_base_gaussian = True

    def __init__(self, num_steps=2, hidden_units=320, context_dim=16, gate_bias=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("name", "iaf")
        keras.layers.Layer.__init__(self, **kwargs)
        if int(num_steps) < 1 or int(hidden_units) < 1 or int(context_dim) < 0:
            raise ValueError(f"IAFPosterior needs num_steps >= 1, hidden_units >= 1 and context_dim >= 0, got "
                             f"{num_steps}, {hidden_units}, {context_dim}.")
        self.num_steps, self.hidden_units = int(num_steps), int(hidden_units)
        self.context_dim, self.gate_bias = int(context_dim), float(gate_bias)
        self.latent_dim = None

    def __repr__(self):
        return Posterior.__repr__(self)

    def get_config(self):
        return {"num_steps": self.num_steps, "hidden_units": self.hidden_units, "context_dim": self.context_dim,
                "gate_bias": self.gate_bias}

    # ------------------------------------------------------------ weights
    def num_params(self, latent_dim):
        if int(latent_dim) < 2:
            raise ValueError(f"The iaf posterior needs latent_dim >= 2, got {latent_dim}.")
        if self.latent_dim is None:
            self._make_steps(int(latent_dim))
        elif self.latent_dim != int(latent_dim):
            raise ValueError(f"This IAFPosterior was built for latent_dim={self.latent_dim}, not {latent_dim}.")
        return 2 * self.latent_dim + self.context_dim

    def _make_steps(self, d):
        self.latent_dim = d
        self.steps = made_steps(d, self.num_steps, self.hidden_units, self.context_dim, self.gate_bias)

    def build(self, input_shape=None):
        self.built = True

    # ---------------------------------------------------------------- math
    def _split(self, params):
        mean, log_var = split_mean_log_var(params, self.latent_dim)
        return mean, log_var, tf.cast(params, tf.float32)[..., 2 * self.latent_dim:]

    def base_mean_log_var(self, params):
        """The base Gaussian's (mean, clamped log-variance), before the flow, each [B, d]."""
        return self._split(params)[:2]

    def _forward(self, z, context):
        return iaf_forward(self.steps, z, context if self.context_dim else None)

    def _inverse(self, z, context):
        return iaf_inverse(self.steps, z, context if self.context_dim else None)

    @staticmethod
    def _base_log_prob(eps, log_var):
        return log_density_of_noise(eps, log_var)

    def sample_and_log_prob(self, params, eps, seed=None):
        mean, log_var, context = self._split(params)
        eps = tf.cast(eps, tf.float32)
        z, log_det = self._forward(mean + tf.exp(0.5 * log_var) * eps, context)
        return z, self._base_log_prob(eps, log_var) - log_det

    def sample(self, params, eps, seed=None):
        return self.sample_and_log_prob(params, eps, seed)[0]

    def log_prob(self, params, z):
        mean, log_var, context = self._split(params)
        z0 = self._inverse(tf.cast(z, tf.float32), context)
        eps = (z0 - mean) * tf.exp(-0.5 * log_var)
        _, log_det = self._forward(z0, context)
        return self._base_log_prob(eps, log_var) - log_det

    def distribution(self, params):
        return Density(self, params)

    def mode_stddev(self, params):
        mean, log_var, context = self._split(params)
        return self._forward(mean, context)[0], tf.exp(0.5 * log_var)


registry.register("posterior", "iaf")(lambda **_: IAFPosterior())
