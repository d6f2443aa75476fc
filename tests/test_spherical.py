"""Hyperspherical latents (S-VAE): the power spherical posterior and the
uniform prior on the sphere, against closed forms, scipy and seeded Monte Carlo."""

import json

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, special

import kvae
from kvae import cli, distributions, evaluate, latent, objectives, priors

from helpers import assert_keras_roundtrip

POST = distributions.PowerSpherical()


def _draw(params, n, seed=(3, 4)):
    eps = tf.random.stateless_normal([n, params.shape[0], params.shape[1] - 1], seed=[seed[1], seed[0]])
    return POST.sample(params, eps, tf.constant(seed))


def _expected_mean(params):
    """E[z] = mu * E[t], t = 2 Beta(a, b) - 1, a = (d-1)/2 + kappa, b = (d-1)/2:
    E[t] = (a - b) / (a + b) = kappa / (d - 1 + kappa). Written from the paper,
    not from TFP."""
    m, c = params[:, :-1].astype("float64"), params[:, -1].astype("float64")
    mu = m / np.linalg.norm(m, axis=-1, keepdims=True)
    kappa = np.logaddexp(0.0, c) + 1.0
    d = m.shape[-1]
    return mu * (kappa / (d - 1 + kappa))[:, None]


def test_samples_lie_on_the_sphere_with_the_closed_form_mean():
    params = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")  # d = 3
    z = _draw(params, 50_000).numpy()
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    # Each coordinate is in [-1, 1], so the standard error of its mean is
    # <= 1/sqrt(5e4) = 0.0045; 0.02 is > 4 standard errors.
    np.testing.assert_allclose(z.mean(0), _expected_mean(params), atol=0.02)
    mode, stddev = POST.mode_stddev(params)
    np.testing.assert_allclose(np.linalg.norm(mode.numpy(), axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(stddev.numpy(), z.std(0), atol=0.02)


def test_the_density_integrates_to_one_on_the_circle():
    params = np.array([[0.6, -0.8, 1.5]], "float32")  # d = 2: the unit circle
    q = POST.distribution(params)
    angles = np.linspace(0, 2 * np.pi, 2001)
    z = np.stack([np.cos(angles), np.sin(angles)], -1).astype("float32")[:, None, :]
    density = np.exp(q.log_prob(z).numpy()[:, 0].astype("float64"))
    # Trapezoid rule on a smooth periodic function with 2000 panels: error far
    # below 1e-6; the rest of the tolerance is float32 in the log density.
    assert abs(integrate.trapezoid(density, angles) - 1.0) < 1e-4


@pytest.mark.parametrize("d", [2, 3, 10])
def test_uniform_prior_density_is_one_over_the_sphere_area(d):
    prior = priors.SphericalUniform(d).distribution()
    z = tf.math.l2_normalize(tf.random.stateless_normal([5, d], seed=[1, 1]), axis=-1)
    log_area = np.log(2.0) + (d / 2) * np.log(np.pi) - special.gammaln(d / 2)  # area of S^{d-1}
    np.testing.assert_allclose(prior.log_prob(z).numpy(), -log_area, rtol=1e-5)


def test_analytic_kl_to_the_uniform_prior_agrees_with_monte_carlo():
    params = np.random.default_rng(1).normal(scale=1.5, size=(3, 6)).astype("float32")  # d = 5
    q, p = POST.distribution(params), priors.SphericalUniform(5).distribution()
    analytic = objectives.kl_divergence(q, p).numpy()
    z = _draw(params, 100_000)
    log_ratio = (q.log_prob(z) - p.log_prob(z)).numpy()
    mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(len(log_ratio))
    assert np.all(np.abs(mc - analytic) < 4 * se + 1e-4), (mc, analytic, se)  # 4 standard errors


def test_samples_are_reparameterised():
    """The gradient of a Monte Carlo E_q[a.z] with respect to the raw
    parameters equals the gradient of its closed form (common random numbers)."""
    rng = np.random.default_rng(2)
    params = tf.Variable(rng.normal(size=(1, 4)).astype("float32"))
    a = tf.constant(rng.normal(size=(3,)).astype("float32"))
    with tf.GradientTape() as tape:
        mc = tf.reduce_mean(tf.reduce_sum(_draw(params, 200_000) * a, -1))
    grad_mc = tape.gradient(mc, params).numpy()

    with tf.GradientTape() as tape:
        m, c = params[:, :-1], params[:, -1]
        kappa = tf.nn.softplus(c) + 1.0
        exact = tf.reduce_sum(tf.math.l2_normalize(m, -1) * a * (kappa / (2.0 + kappa))[:, None])
    grad_exact = tape.gradient(exact, params).numpy()
    assert np.abs(grad_exact).max() > 0.05  # the check has something to compare
    # 2e5 samples: the pathwise gradient's standard error is ~1e-3 here.
    np.testing.assert_allclose(grad_mc, grad_exact, atol=0.01)


def test_a_spherical_vae_trains_and_saves(digits, tmp_path):
    x, _ = digits
    model = kvae.VAE((8, 8, 1), 4, posterior="power_spherical", prior="spherical_uniform", seed=1)
    model.compile(optimizer="adam")
    before = model.evaluate(x[1500:], verbose=0, return_dict=True)["elbo"]
    model.fit(x[:1500], epochs=8, batch_size=64, verbose=0)
    after = model.evaluate(x[1500:], verbose=0, return_dict=True)["elbo"]
    assert after > before + 10, (before, after)
    mode = model.encode(x[1500:1510])[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(mode, axis=-1), 1.0, atol=1e-5)
    # The importance-sampled estimate is at least the ELBO (seeded MC, 0.1 nats of slack).
    ll = evaluate.log_likelihood(model, x[1500:1700], k=200)
    summary = evaluate.summary(model, x[1500:1700], k=0)
    assert ll.mean() >= -summary["negative_elbo"] - 0.1
    assert_keras_roundtrip(model, tmp_path, x[:8])
    # interpolation stays on the sphere: the middle point decodes like its projection
    images = latent.interpolate(model, x[1500], x[1501], steps=3, method="linear")
    mid = (mode[0] + model.encode(x[1501:1502])[0].numpy()[0]) / 2
    np.testing.assert_allclose(images[1], model.decode((mid / np.linalg.norm(mid))[None]).numpy()[0], atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(posterior="power_spherical"), "spherical_uniform"),
    (dict(prior="spherical_uniform"), "power_spherical"),
    (dict(posterior="power_spherical", prior="spherical_uniform", latent_dim=1), "latent_dim >= 2"),
])
def test_mismatched_or_degenerate_spheres_are_refused(kwargs, match):
    kwargs = {"latent_dim": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        kvae.VAE((8, 8, 1), **kwargs)


def test_cli_trains_and_evaluates_a_spherical_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "2", "--quiet",
                     "--posterior", "power_spherical", "--prior", "spherical_uniform", "--out", str(run)]) == 0
    assert cli.main(["evaluate", str(run), "--k", "20"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert np.isfinite(result["test_log_likelihood"])
    capsys.readouterr()
    assert cli.main(["latent-map", str(run), "--out", str(tmp_path / "map.png")]) == cli.EXIT_BAD_INPUT
    assert "sphere" in capsys.readouterr().err


def test_edge_runner_draws_latents_on_the_sphere_for_a_spherical_export(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "export" / "run_decoder.py"
    spec = importlib.util.spec_from_file_location("run_decoder", path)
    run_decoder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_decoder)
    (tmp_path / "tflite").mkdir()
    (tmp_path / "metadata.json").write_text(json.dumps({"prior": "SphericalUniform"}))
    prior = run_decoder.prior_name(tmp_path / "tflite" / "decoder_float32.tflite")
    assert prior == "SphericalUniform"
    z = run_decoder.draw_latents(50, 3, seed=0, prior=prior)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-6)
    assert np.linalg.norm(run_decoder.draw_latents(50, 3, seed=0, prior="StandardNormal"), axis=1).std() > 0.1
