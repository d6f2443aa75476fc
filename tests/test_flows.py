"""The IAF posterior: autoregressive MADE masks, a density that matches the
change of variables computed from the flow's Jacobian, an exact inverse, and
the model's save/load and training with it."""

import math

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.flows import IAFPosterior, made_masks

from helpers import assert_keras_roundtrip

D = 4


@pytest.fixture(scope="module")
def model():
    m = kvae.VAE((8, 8, 1), D, encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32]),
                 posterior=IAFPosterior(num_steps=2, hidden_units=24, context_dim=6, gate_bias=0.0))
    # random (not near-identity) flow weights, so the checks below see a real transform
    rng = np.random.default_rng(0)
    for v in m.posterior.trainable_variables:
        v.assign(rng.normal(0, 0.5, v.shape).astype("float32"))
    return m


def _params(model, digits, n=5):
    return model.encode_params(tf.constant(digits[0][:n]))


def test_made_masks_make_each_output_depend_on_earlier_inputs_only():
    to_hidden, to_out = made_masks(5, 12)
    connected = (to_hidden @ to_out) > 0  # [in, out]: input i reaches output j
    np.testing.assert_array_equal(connected, np.triu(np.ones((5, 5), bool), k=1))  # i < j, every such pair


def test_density_is_the_change_of_variables_of_the_flow(model, digits):
    params = _params(model, digits)
    eps = tf.random.stateless_normal([3, 5, D], [1, 2])
    z, log_q = model.posterior.sample_and_log_prob(params, eps)
    # Independently of the flow's own log-determinant: z = f(eps), so
    # log q(z) = log N(eps; 0, I) - log |det dz/deps|, the Jacobian taken by autodiff.
    flat_eps = tf.reshape(eps, [-1, D])
    rep = tf.tile(params, [3, 1])
    with tf.GradientTape() as tape:
        tape.watch(flat_eps)
        flat_z = model.posterior.sample(rep, flat_eps)
    jac = tape.batch_jacobian(flat_z, flat_eps)  # [N, D, D]
    _, log_det = np.linalg.slogdet(jac.numpy().astype("float64"))
    log_n = -0.5 * np.sum(flat_eps.numpy() ** 2, -1) - 0.5 * D * math.log(2 * math.pi)
    # float32 autodiff Jacobians vs the analytic form: 1e-4 relative on values of order 10
    np.testing.assert_allclose(log_q.numpy().reshape(-1), log_n - log_det, rtol=1e-4, atol=1e-4)
    assert np.abs(log_det).max() > 0.5  # a transform with a real volume change, not the identity


def test_flow_is_invertible_and_log_prob_agrees_at_any_point(model, digits):
    params = _params(model, digits)
    eps = tf.random.stateless_normal([2, 5, D], [3, 4])
    z, log_q = model.posterior.sample_and_log_prob(params, eps)
    mean, log_var, context = model.posterior._split(params)
    z0 = mean + tf.exp(0.5 * log_var) * eps
    np.testing.assert_allclose(model.posterior._inverse(z, context).numpy(), z0.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.posterior.log_prob(params, z).numpy(), log_q.numpy(), rtol=1e-4, atol=1e-4)
    # a density: in 2-D, a grid sum of exp(log q) over [-8, 8]^2 is 1 (the mass outside is negligible)
    flow2 = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]),
                     posterior=IAFPosterior(num_steps=2, hidden_units=8, context_dim=2))
    p2 = flow2.encode_params(tf.constant(digits[0][:1]))
    g = np.linspace(-8, 8, 401, dtype="float32")
    grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 1, 2)
    density = np.exp(flow2.posterior.log_prob(p2, tf.constant(grid)).numpy())
    assert abs(density.sum() * (g[1] - g[0]) ** 2 - 1.0) < 1e-2


def test_iaf_model_trains_saves_and_refuses_the_vampprior(model, digits, tmp_path):
    model.compile()
    history = model.fit(digits[0][:256], validation_data=(digits[0][256:320],), epochs=2, batch_size=64, verbose=0)
    assert np.isfinite(history.history["val_elbo"]).all()
    assert_keras_roundtrip(model, tmp_path, digits[0][:8])
    ll = kvae.evaluate.log_likelihood(model, digits[0][:16], k=50)
    assert np.isfinite(ll).all()
    with pytest.raises(ValueError, match="closed-form posterior"):
        kvae.VAE((8, 8, 1), D, posterior="iaf", prior="vamp")
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        kvae.VAE((8, 8, 1), 1, posterior="iaf")
