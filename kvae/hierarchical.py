"""Two stochastic layers, as a posterior and a prior over z = [z2, z1]
(Tomczak and Welling's HVAE, 2018): the VAE's decoder reads both layers,
p(x | z1, z2), and nothing else in the model changes.

    posterior   q(z2|x) q(z1|x, z2)    q(z2|x) = N(mu2(x), sigma2(x)^2) from the encoder head,
                                        q(z1|x, z2) = N(mu1, sigma1^2) = MLP([h(x), z2]),
                                        optionally followed by IAF steps over [z2, z1] (flow_steps)
    prior       p(z2) p(z1|z2)          p(z2) = VampPrior: 1/K sum_k q(z2|u_k) (pseudo-inputs u_k),
                                        p(z1|z2) = N(m(z2), s(z2)^2) = MLP(z2)

The top layer z2 holds the first `top_dim` coordinates of z (half of
latent_dim by default). Log-variances are clamped as everywhere in kvae.
With `flow_steps` > 0 the posterior's draw [z2, z1] goes through that many
inverse autoregressive flow steps (kvae.flows, Kingma et al. 2016) that also
see h(x): log q(z_T|x) = log q(z2|x) + log q(z1|x, z2) - sum of log-gates.
The prior's VampPrior components stay q(z2|u_k) before the flow, as
`VampPrior(components="base")` does for the one-layer model.

Example:
    >>> import kvae
    >>> model = kvae.VAE((8, 8, 1), latent_dim=4, posterior="hierarchical", prior="hierarchical_vamp")
    >>> tuple(model.sample(2, seed=0).shape)
    (2, 8, 8, 1)
"""


import keras
import tensorflow as tf

from kvae import registry
from kvae.distributions import Density, Posterior
from kvae.distributions.gaussian import log_density, split_mean_log_var
from kvae.flows import iaf_forward, iaf_inverse, made_steps
from kvae.networks import GatedDense
from kvae.priors import DiagonalMixture, Prior

__all__ = ["HierarchicalPosterior", "HierarchicalVampPrior"]


def _top_dim(latent_dim, top_dim):
    top = int(latent_dim) // 2 if top_dim is None else int(top_dim)
    if int(latent_dim) < 2 or not 1 <= top < int(latent_dim):
        raise ValueError(f"Two stochastic layers need latent_dim >= 2 and 1 <= top_dim < latent_dim, got "
                         f"latent_dim={latent_dim}, top_dim={top_dim}.")
    return top


class _MLP(keras.layers.Layer):
    """[context, z] -> out, float32, on z of any rank: `hidden_layers` layers of
    `hidden_units` (ReLU, or GatedDense if `gated`), then a linear layer. The
    first layer's matmul is split, context @ W_c + z @ W_z: with k samples of z
    per example the context's part is computed once, not k times."""

    def __init__(self, hidden_units, out, input_dim, context_dim=0, hidden_layers=1, gated=False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.units, self.context_dim, self.gated = int(hidden_units), int(context_dim), bool(gated)
        width = 2 * self.units if self.gated else self.units
        self.hidden = keras.layers.Dense(width, dtype="float32", name="hidden")
        self.hidden.build((None, self.context_dim + input_dim))
        self.more = []
        for i in range(int(hidden_layers) - 1):
            layer = (GatedDense(self.units, dtype="float32", name=f"hidden_{i + 2}") if self.gated else
                     keras.layers.Dense(self.units, activation="relu", dtype="float32", name=f"hidden_{i + 2}"))
            layer.build((None, self.units))
            self.more.append(layer)
        self.out = keras.layers.Dense(out, dtype="float32", name="out")
        self.out.build((None, self.units))

    def build(self, input_shape=None):
        self.built = True

    def call(self, z, context=None):
        kernel = self.hidden.kernel
        h = tf.tensordot(z, kernel[self.context_dim:], 1) + self.hidden.bias
        if self.context_dim:
            h = h + tf.matmul(context, kernel[:self.context_dim])  # [B, width], broadcast over z's leading axes
        h = GatedDense.gate(h, self.units) if self.gated else tf.nn.relu(h)
        for layer in self.more:
            h = layer(h)
        return self.out(h)


def _check_net(hidden_units, hidden_layers):
    if int(hidden_units) < 1 or int(hidden_layers) < 1:
        raise ValueError(f"hidden_units and hidden_layers must be >= 1, got {hidden_units}, {hidden_layers}.")


@keras.saving.register_keras_serializable(package="kvae")
class HierarchicalPosterior(Posterior, keras.layers.Layer):
    """q(z2|x) q(z1|x, z2) (the module docstring has the math). The encoder
    head gives [mu2, log sigma2^2, h(x)] (2 top_dim + context_dim numbers);
    this layer's MLP (`hidden_layers` layers of `hidden_units`: ReLU, or
    gated as in the reference code if `gated`) maps [h(x), z2] to q(z1|x, z2)'s
    mean and log-variance. `mode_stddev` is z2 = mu2 and
    z1 = mu1(x, mu2), with the conditional standard deviations (through the
    flow, if any: the standard deviations stay the base's).

    Args:
        top_dim: int or None (latent_dim // 2).
        context_dim: int >= 1, size of h(x).
        hidden_units, hidden_layers: int >= 1.
        gated: bool, `kvae.networks.GatedDense` layers instead of ReLU.
        flow_steps: int >= 0, IAF steps over [z2, z1] after the two Gaussians (0: none).
        flow_hidden_units: int >= 1, per step's MADE.

    Example:
        >>> import kvae
        >>> kvae.registry.get("posterior", "hierarchical")
        HierarchicalPosterior(top_dim=None, context_dim=300, hidden_units=300, hidden_layers=1, gated=False)
    """

    name = "hierarchical"
    closed_form = False

    def __init__(self, top_dim=None, context_dim=300, hidden_units=300, hidden_layers=1, gated=False, flow_steps=0,
                 flow_hidden_units=320, **kwargs):
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("name", "hierarchical")
        keras.layers.Layer.__init__(self, **kwargs)
        if int(context_dim) < 1:
            raise ValueError(f"context_dim must be >= 1, got {context_dim}.")
        _check_net(hidden_units, hidden_layers)
        if int(flow_steps) < 0 or int(flow_hidden_units) < 1:
            raise ValueError(f"flow_steps must be >= 0 and flow_hidden_units >= 1, got {flow_steps}, "
                             f"{flow_hidden_units}.")
        self.flow_steps, self.flow_hidden_units = int(flow_steps), int(flow_hidden_units)
        self.top_dim_arg = top_dim
        self.context_dim, self.hidden_units = int(context_dim), int(hidden_units)
        self.hidden_layers, self.gated = int(hidden_layers), bool(gated)
        self.latent_dim = self.top_dim = None

    def __repr__(self):
        return Posterior.__repr__(self)

    def get_config(self):
        config = {"top_dim": self.top_dim_arg, "context_dim": self.context_dim, "hidden_units": self.hidden_units,
                  "hidden_layers": self.hidden_layers, "gated": self.gated}
        if self.flow_steps:  # without a flow the config (and repr) stay as before flow_steps existed
            config.update(flow_steps=self.flow_steps, flow_hidden_units=self.flow_hidden_units)
        return config

    def build(self, input_shape=None):
        self.built = True

    def num_params(self, latent_dim):
        """2 top_dim + context_dim; the first call also makes the z1 network."""
        if self.latent_dim is None:
            self.latent_dim, self.top_dim = int(latent_dim), _top_dim(latent_dim, self.top_dim_arg)
            self.bottom = _MLP(self.hidden_units, 2 * (self.latent_dim - self.top_dim), self.top_dim,
                               self.context_dim, self.hidden_layers, self.gated, name="q_z1")
            if self.flow_steps:
                self.flow = made_steps(self.latent_dim, self.flow_steps, self.flow_hidden_units, self.context_dim)
        elif self.latent_dim != int(latent_dim):
            raise ValueError(f"This HierarchicalPosterior was built for latent_dim={self.latent_dim}, "
                             f"not {latent_dim}.")
        return 2 * self.top_dim + self.context_dim

    def top_mean_log_var(self, params):
        """q(z2|x)'s (mean, clamped log-variance), each [B, top_dim]."""
        return split_mean_log_var(params, self.top_dim)

    def _bottom(self, params, z2):
        """q(z1|x, z2)'s (mean, log-variance) for z2 [..., B, top_dim]."""
        return split_mean_log_var(self.bottom(z2, self._context(params)))

    def _context(self, params):
        """h(x) [B, context_dim]."""
        return tf.cast(params, tf.float32)[..., 2 * self.top_dim:]

    def sample_and_log_prob(self, params, eps, seed=None):
        eps = tf.cast(eps, tf.float32)
        mean2, log_var2 = self.top_mean_log_var(params)
        z2 = mean2 + tf.exp(0.5 * log_var2) * eps[..., :self.top_dim]
        mean1, log_var1 = self._bottom(params, z2)
        z1 = mean1 + tf.exp(0.5 * log_var1) * eps[..., self.top_dim:]
        z = tf.concat([z2, z1], axis=-1)
        log_q = log_density(z2, mean2, log_var2) + log_density(z1, mean1, log_var1)
        if not self.flow_steps:
            return z, log_q
        z, log_det = iaf_forward(self.flow, z, self._context(params))
        return z, log_q - log_det

    def sample(self, params, eps, seed=None):
        return self.sample_and_log_prob(params, eps, seed)[0]

    def log_prob(self, params, z):
        z, log_det = tf.cast(z, tf.float32), 0.0
        if self.flow_steps:  # back through the flow (d passes per step), then its log-determinant there
            z = iaf_inverse(self.flow, z, self._context(params))
            log_det = iaf_forward(self.flow, z, self._context(params))[1]
        z2, z1 = z[..., :self.top_dim], z[..., self.top_dim:]
        mean2, log_var2 = self.top_mean_log_var(params)
        return log_density(z2, mean2, log_var2) + log_density(z1, *self._bottom(params, z2)) - log_det

    def distribution(self, params):
        return Density(self, params)

    def mode_stddev(self, params):
        mean2, log_var2 = self.top_mean_log_var(params)
        mean1, log_var1 = self._bottom(params, mean2)
        mode = tf.concat([mean2, mean1], -1)
        if self.flow_steps:
            mode = iaf_forward(self.flow, mode, self._context(params))[0]
        return mode, tf.exp(0.5 * tf.concat([log_var2, log_var1], -1))


@keras.saving.register_keras_serializable(package="kvae")
class HierarchicalVampPrior(Prior):
    """p(z2) p(z1|z2): a VampPrior over the top layer (its components are the
    posterior's q(z2|u_k) at K learned pseudo-inputs u_k in [0, 1]) and a
    Gaussian p(z1|z2) whose mean and log-variance an MLP (`hidden_layers`
    layers of `hidden_units`, ReLU or gated) computes from z2. Needs the 'hierarchical' posterior
    with the same top_dim. KL is a Monte Carlo estimate.

    Args:
        latent_dim: int >= 2; input_shape: one example's shape.
        num_pseudo_inputs: int >= 1, K.
        top_dim: int or None (latent_dim // 2).
        hidden_units, hidden_layers: int >= 1.
        gated: bool, `kvae.networks.GatedDense` layers instead of ReLU.
    """

    uses_encoder = True

    def __init__(self, latent_dim, input_shape, num_pseudo_inputs=500, top_dim=None, hidden_units=300,
                 hidden_layers=1, gated=False, **kwargs):
        super().__init__(latent_dim, **kwargs)
        if int(num_pseudo_inputs) < 1:
            raise ValueError(f"num_pseudo_inputs must be >= 1, got {num_pseudo_inputs}.")
        _check_net(hidden_units, hidden_layers)
        self.data_shape = tuple(int(s) for s in input_shape)
        self.num_pseudo_inputs, self.hidden_units = int(num_pseudo_inputs), int(hidden_units)
        self.hidden_layers, self.gated = int(hidden_layers), bool(gated)
        self.top_dim_arg = top_dim
        self.top_dim = _top_dim(latent_dim, top_dim)
        self.pseudo_logits = self.add_weight(
            shape=(self.num_pseudo_inputs,) + self.data_shape,
            initializer=keras.initializers.RandomNormal(stddev=0.5, seed=0), name="pseudo_logits")
        self.conditional = _MLP(self.hidden_units, 2 * (self.latent_dim - self.top_dim), self.top_dim,
                                hidden_layers=self.hidden_layers, gated=self.gated, name="p_z1")

    @property
    def num_components(self):
        return self.num_pseudo_inputs

    def check(self, model):
        super().check(model)
        if model.conditional:
            raise ValueError("The hierarchical VampPrior is not supported for a conditional model.")
        if model.posterior.top_dim != self.top_dim:
            raise ValueError(f"The hierarchical_vamp prior needs the 'hierarchical' posterior with top_dim="
                             f"{self.top_dim}; got {model.posterior!r}.")

    def distribution(self, model=None):
        if model is None:
            raise ValueError("HierarchicalVampPrior.distribution needs the VAE whose encoder it uses.")
        pseudo = tf.sigmoid(tf.cast(self.pseudo_logits, tf.float32))
        top = DiagonalMixture(*model.posterior.top_mean_log_var(model.encode_params(pseudo)))
        return _TwoLayerPrior(top, lambda z2: split_mean_log_var(self.conditional(z2)), self.top_dim)

    def get_config(self):
        return {**super().get_config(), "input_shape": list(self.data_shape),
                "num_pseudo_inputs": self.num_pseudo_inputs, "top_dim": self.top_dim_arg,
                "hidden_units": self.hidden_units, "hidden_layers": self.hidden_layers, "gated": self.gated}


class _TwoLayerPrior:
    """p(z2) p(z1|z2) with `log_prob(z)` and `sample(n, seed)`."""

    def __init__(self, top, conditional, top_dim):
        self.top, self.conditional, self.top_dim = top, conditional, top_dim

    def log_prob(self, z):
        z = tf.cast(z, tf.float32)
        z2, z1 = z[..., :self.top_dim], z[..., self.top_dim:]
        return self.top.log_prob(z2) + log_density(z1, *self.conditional(z2))

    def sample(self, n, seed):
        seed = tf.cast(seed, tf.int32)
        z2 = self.top.sample(n, seed=seed)
        mean1, log_var1 = self.conditional(z2)
        eps = tf.random.stateless_normal(tf.shape(mean1), seed + tf.constant([0, 1], tf.int32))
        return tf.concat([z2, mean1 + tf.exp(0.5 * log_var1) * eps], axis=-1)


registry.register("posterior", "hierarchical")(lambda **_: HierarchicalPosterior())
registry.register("prior", "hierarchical_vamp")(
    lambda latent_dim, input_shape, **_: HierarchicalVampPrior(latent_dim, input_shape))
