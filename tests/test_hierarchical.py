"""Two stochastic layers (hierarchical posterior + hierarchical VampPrior):
checked against log p(x) computed by quadrature on a model small enough to
integrate (2 pixels, z1 and z2 one number each), also with IAF steps after
the two Gaussians (flow_steps), plus save/load and training."""

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.hierarchical import HierarchicalPosterior, HierarchicalVampPrior

from helpers import assert_keras_roundtrip


@pytest.fixture(scope="module", params=[(1, False, 0.3, 0), (2, True, 0.6, 0), (1, False, 0.3, 2)],
                ids=["relu1", "gated2", "relu1_flow2"])
def tiny(request):
    """p(x | z1, z2) over 2 binary pixels with z2, z1 in R; random but fixed weights. Both z1 networks as
    the defaults (one ReLU layer) and as the hvae_vamp recipe's (two gated layers), and the defaults
    followed by two IAF steps over [z2, z1]."""
    layers, gated, scale, flow = request.param  # gates halve activations: larger weights keep the ELBO's gap visible
    model = kvae.VAE((2,), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]),
                     posterior=HierarchicalPosterior(context_dim=3, hidden_units=8, hidden_layers=layers, gated=gated,
                                                     flow_steps=flow, flow_hidden_units=8),
                     prior=HierarchicalVampPrior(2, (2,), num_pseudo_inputs=3, hidden_units=8, hidden_layers=layers,
                                                 gated=gated))
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, scale, v.shape).astype("float32"))
    for step in getattr(model.posterior, "flow", []):  # gates near 0.88: random gates near 0.5 would shrink q
        step[3].bias.assign(np.full([2], 2.0, "float32"))  # so far that k = 20000 is not enough to reach log p(x)
    return model


def _grid(half_width=9.0, n=721):
    g = np.linspace(-half_width, half_width, n)
    return g, np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2).astype("float32"), (g[1] - g[0]) ** 2


def test_prior_and_posterior_are_densities(tiny):
    _, grid, cell = _grid()
    prior = tiny.prior.distribution(tiny)
    assert abs(np.exp(prior.log_prob(grid).numpy().astype("float64")).sum() * cell - 1) < 2e-3
    params = tiny.encode_params(tf.constant([[1.0, 0.0]]))
    q = tiny.posterior.log_prob(params, tf.constant(grid[:, None, :])).numpy()[:, 0]
    assert abs(np.exp(q.astype("float64")).sum() * cell - 1) < 2e-3


def test_bounds_stay_below_log_px_by_quadrature_and_importance_sampling_reaches_it(tiny):
    _, grid, cell = _grid()
    prior = tiny.prior.distribution(tiny).log_prob(grid).numpy().astype("float64")
    params = tiny.decode_params(tf.constant(grid))  # Bernoulli logits [G, 2]
    for x in ([0.0, 0.0], [1.0, 0.0], [1.0, 1.0]):
        log_px_z = tiny.likelihood.distribution(params, 1).log_prob(tf.constant([x])).numpy().astype("float64")
        log_px = np.log(np.sum(np.exp(log_px_z + prior)) * cell)  # log of the integral over (z2, z1)
        xb = tf.constant([x] * 4000)
        elbo = tf.reduce_mean(tiny.terms(xb, k=1, seed=tf.constant([0, 1])).log_weights).numpy()
        # 4000 ELBO draws: the Monte Carlo error is ~0.02 here; the ELBO sits below log p(x) by its gap (> that)
        assert elbo < log_px, (x, elbo, log_px)
        ll = kvae.evaluate.log_likelihood(tiny, np.array([x], "float32"), k=20000, seed=3)[0]
        # L_k -> log p(x) from below as k grows; at k = 20000 the remaining gap is well under 0.02 nats.
        # With the random flow, q is a poorer proposal (heavy-tailed weights: the largest of 200,000 was 780
        # times their mean), and seeds 3, 4, 5 gave log p(x) + 0.037, - 0.033, - 0.021 for x = (0, 0):
        # a wider band, which a log-determinant wrong by 0.1 nat would still leave
        below, above = (0.06, 0.05) if tiny.posterior.flow_steps else (0.02, 0.005)
        assert log_px - below < ll < log_px + above, (x, ll, log_px)
        assert log_px - elbo > 0.03


def test_q_z1_network_is_one_dense_layer_on_the_concatenation_of_context_and_z2(tiny):
    """The first layer's matmul is split (context once per example, z2 per sample): same numbers as the
    plain Dense on [h(x), z2] broadcast to every sample."""
    net = tiny.posterior.bottom
    rng = np.random.default_rng(0)
    context = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    z2 = tf.constant(rng.normal(size=(7, 5, 1)), tf.float32)  # 7 samples for each of 5 examples
    joint = tf.concat([tf.broadcast_to(context, (7, 5, 3)), z2], -1)
    h = net.hidden(joint)
    h = h[..., :8] * tf.sigmoid(h[..., 8:]) if net.gated else tf.nn.relu(h)
    for layer in net.more:
        h = layer(h)
    np.testing.assert_allclose(net(z2, context).numpy(), net.out(h).numpy(), rtol=1e-5, atol=1e-6)


def test_the_flow_is_inverted_and_its_log_density_is_a_change_of_variables():
    """With flow_steps, log q(z_T|x) must be log q_0(z_0|x) - log|det dz_T/dz_0|: the Jacobian here is
    autodiff's of the whole draw eps -> z_T, independent of the flow's sum of log-gates; and log_prob
    of a drawn z_T (which inverts the flow) must give back the density the draw came with."""
    posterior = HierarchicalPosterior(context_dim=3, hidden_units=8, flow_steps=2, flow_hidden_units=8)
    d = 5  # top layer 2, bottom 3
    params = tf.constant(np.random.default_rng(0).normal(0, 0.5, (4, posterior.num_params(d))), tf.float32)
    rng = np.random.default_rng(1)
    for v in [w for step in posterior.flow for layer in step for w in layer.weights]:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    eps = tf.constant(rng.normal(size=(4, d)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(eps)
        z, log_q = posterior.sample_and_log_prob(params, eps)
    jacobian = tape.batch_jacobian(z, eps).numpy().astype("float64")  # [4, d, d]
    mean2, log_var2 = (t.numpy() for t in posterior.top_mean_log_var(params))
    base_z2 = mean2 + np.exp(0.5 * log_var2) * eps.numpy()[:, :2]
    _, log_var1 = (t.numpy() for t in posterior._bottom(params, tf.constant(base_z2, tf.float32)))
    # log q_0 of the base draw: a standard normal in eps, less the log-scales of eps -> z_0 (diagonal blocks)
    log_n = -0.5 * np.sum(eps.numpy() ** 2 + np.log(2 * np.pi), -1)
    log_q0 = log_n - 0.5 * log_var2.sum(-1) - 0.5 * log_var1.sum(-1)
    # the chain rule's determinant: |det dz_T/deps| = |det dz_T/dz_0| * prod sigma, hence the same sum
    expected = log_n - np.linalg.slogdet(jacobian)[1]
    np.testing.assert_allclose(log_q.numpy(), expected, rtol=0, atol=1e-4)
    assert np.abs(log_q.numpy() - log_q0).max() > 0.05  # the flow is not the identity here: the check has teeth
    np.testing.assert_allclose(posterior.log_prob(params, z).numpy(), log_q.numpy(), rtol=0, atol=1e-4)
    mode, _ = posterior.mode_stddev(params)
    assert not np.allclose(mode.numpy()[:, :2], mean2)  # the mode goes through the flow too


def test_bad_network_sizes_are_refused():
    with pytest.raises(ValueError, match="hidden_layers must be >= 1"):
        HierarchicalPosterior(hidden_layers=0)
    with pytest.raises(ValueError, match="flow_steps must be >= 0"):
        HierarchicalPosterior(flow_steps=-1)
    with pytest.raises(ValueError, match="hidden_units and hidden_layers"):
        HierarchicalVampPrior(4, (2,), hidden_units=0)


@pytest.mark.parametrize("flow", [0, 2])
def test_two_layer_model_trains_saves_and_samples(digits, tmp_path, flow):
    model = kvae.VAE((8, 8, 1), 6, encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32]),
                     posterior=HierarchicalPosterior(context_dim=16, hidden_units=16, hidden_layers=2, gated=True,
                                                     flow_steps=flow, flow_hidden_units=16),
                     prior=HierarchicalVampPrior(6, (8, 8, 1), num_pseudo_inputs=10, hidden_units=16,
                                                 hidden_layers=2, gated=True))
    model.compile()
    history = model.fit(digits[0][:256], validation_data=(digits[0][256:320],), epochs=2, batch_size=64, verbose=0)
    assert np.isfinite(history.history["val_elbo"]).all()
    assert_keras_roundtrip(model, tmp_path, digits[0][:8])
    samples = model.sample(5, seed=1).numpy()
    np.testing.assert_array_equal(samples, model.sample(5, seed=1).numpy())
    assert samples.shape == (5, 8, 8, 1) and ((samples >= 0) & (samples <= 1)).all()
    with pytest.raises(ValueError, match="needs the 'hierarchical' posterior"):
        kvae.VAE((8, 8, 1), 6, prior="hierarchical_vamp")
    with pytest.raises(ValueError, match="prior='hierarchical_vamp'"):
        kvae.VAE((8, 8, 1), 6, posterior="hierarchical", prior="vamp")
