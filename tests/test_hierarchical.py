"""Two stochastic layers (hierarchical posterior + hierarchical VampPrior):
checked against log p(x) computed by quadrature on a model small enough to
integrate (2 pixels, z1 and z2 one number each), plus save/load and training."""

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.hierarchical import HierarchicalPosterior, HierarchicalVampPrior

from helpers import assert_keras_roundtrip


@pytest.fixture(scope="module")
def tiny():
    """p(x | z1, z2) over 2 binary pixels with z2, z1 in R; random but fixed weights."""
    model = kvae.VAE((2,), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]),
                     posterior=HierarchicalPosterior(context_dim=3, hidden_units=8),
                     prior=HierarchicalVampPrior(2, (2,), num_pseudo_inputs=3, hidden_units=8))
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
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
        # L_k -> log p(x) from below as k grows; at k = 20000 the remaining gap is well under 0.02 nats
        assert log_px - 0.02 < ll < log_px + 0.005, (x, ll, log_px)
        assert log_px - elbo > 0.03


def test_two_layer_model_trains_saves_and_samples(digits, tmp_path):
    model = kvae.VAE((8, 8, 1), 6, encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32]),
                     posterior=HierarchicalPosterior(context_dim=16, hidden_units=16),
                     prior=HierarchicalVampPrior(6, (8, 8, 1), num_pseudo_inputs=10, hidden_units=16))
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
