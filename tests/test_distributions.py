"""Distribution math against closed forms, scipy, and seeded Monte Carlo."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, special, stats

from kvae import distributions, objectives, priors

RNG = np.random.default_rng(1234)


def test_diagonal_kl_to_standard_normal_matches_closed_form():
    mean = RNG.normal(size=(5, 4)).astype("float32")
    log_var = RNG.normal(size=(5, 4)).astype("float32")
    q = distributions.DiagonalGaussian().distribution(np.concatenate([mean, log_var], -1))
    p = priors.StandardNormal(4).distribution()
    expected = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=-1)
    # float32 arithmetic on O(10) numbers: 1e-5 relative is ~100 ulp of slack.
    np.testing.assert_allclose(objectives.kl_divergence(q, p).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("posterior", ["diagonal", "full_covariance"])
def test_analytic_kl_agrees_with_monte_carlo(posterior):
    post = distributions.get_posterior(posterior)
    d = 3
    params = RNG.normal(scale=0.7, size=(2, post.num_params(d))).astype("float32")
    q = post.distribution(params)
    p = priors.StandardNormal(d).distribution()
    analytic = objectives.kl_divergence(q, p).numpy()
    n = 200_000
    z = q.sample(n, seed=tf.constant([7, 7]))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).numpy()  # [n, 2]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(n)
    # Seeded MC: the estimate is within 4 standard errors of the truth (a
    # failure rate of ~6e-5 for a correct implementation, were it not seeded).
    assert np.all(np.abs(mc - analytic) < 4 * se + 1e-4), (mc, analytic, se)


def test_full_covariance_reparameterisation_has_the_distribution_covariance():
    post = distributions.FullCovarianceGaussian()
    d = 3
    params = RNG.normal(size=(1, post.num_params(d))).astype("float32")
    eps = tf.random.stateless_normal((100_000, 1, d), seed=[1, 2])
    z = post.reparameterize(params, eps).numpy()[:, 0]
    dist = post.distribution(params)
    # 1e5 samples: the empirical covariance has relative standard error ~
    # sqrt(2/n) ~ 0.5%; 0.05 absolute on entries of order 1 is > 5 sigma.
    np.testing.assert_allclose(np.cov(z.T), dist.covariance().numpy()[0], atol=0.05)
    np.testing.assert_allclose(z.mean(0), dist.mean().numpy()[0], atol=0.02)
    # mode_stddev agrees with the distribution's marginal stddev
    np.testing.assert_allclose(post.mode_stddev(params)[1].numpy(), dist.stddev().numpy(), rtol=1e-5)


def test_bernoulli_log_prob_matches_scipy():
    logits = RNG.normal(scale=3, size=(4, 6, 6, 1)).astype("float32")
    x = (RNG.uniform(size=logits.shape) < 0.5).astype("float32")
    got = distributions.Bernoulli().distribution(logits, 3).log_prob(x).numpy()
    expected = stats.bernoulli.logpmf(x, special.expit(logits.astype("float64"))).sum((1, 2, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-5)  # float32 sums of 36 terms


def test_bernoulli_fast_log_prob_is_the_exact_density():
    """`Bernoulli.log_prob` (what training and evaluation use, x l - softplus(l)) against the
    float64 closed form, with saturated logits (+-80) and k draws broadcast against one x."""
    logits = RNG.normal(scale=5, size=(3, 4, 28, 28, 1)).astype("float32")
    logits[0, 0, :2] = 80.0
    logits[1, 1, :2] = -80.0
    x = (RNG.uniform(size=(4, 28, 28, 1)) < 0.3).astype("float32")
    got = distributions.Bernoulli().log_prob(logits, x, 3).numpy()
    l64 = logits.astype("float64")
    expected = (x * l64 - np.logaddexp(0.0, l64)).sum((2, 3, 4))  # [3, 4]
    # float32 sums of 784 terms of size up to 80: a relative 1e-6, i.e. under 1e-3 nats here
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-3)
    tfp_form = distributions.Bernoulli().distribution(logits, 3).log_prob(x).numpy()
    np.testing.assert_allclose(got, tfp_form, rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("learn_scale", [False, True])
def test_gaussian_log_prob_matches_scipy(learn_scale):
    lik = distributions.Gaussian(sigma=0.3, learn_scale=learn_scale)
    shape = (3, 5, 5, 2)
    params = RNG.normal(scale=1.5, size=shape[:-1] + (shape[-1] * lik.params_per_value,)).astype("float32")
    x = RNG.uniform(size=shape).astype("float32")
    if learn_scale:
        loc, log_scale = np.split(params, 2, axis=-1)
        # the documented clamp applies (some of these draws exceed it)
        scale = np.exp(np.clip(log_scale, distributions.LOG_SCALE_MIN, distributions.LOG_SCALE_MAX))
    else:
        loc, scale = params, 0.3
    expected = stats.norm.logpdf(x, loc, scale).sum((1, 2, 3))
    got = lik.distribution(params, 3).log_prob(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    np.testing.assert_allclose(lik.mean(params).numpy(), loc, rtol=1e-6)


def test_continuous_bernoulli_is_a_normalised_density_with_the_right_mean():
    lik = distributions.ContinuousBernoulli()
    for logit in [-3.0, -0.2, 0.0, 1.5]:
        params = np.full((1, 1), logit, "float32")
        dist = lik.distribution(params, 1)

        def density(x):
            return float(np.exp(dist.log_prob(np.full((1, 1), x, "float32")).numpy()[0]))

        # quad's error estimate is ~1e-10; float32 densities limit us to ~1e-5.
        total, _ = integrate.quad(density, 0.0, 1.0)
        mean, _ = integrate.quad(lambda x: x * density(x), 0.0, 1.0)
        assert abs(total - 1.0) < 1e-4
        assert abs(mean - float(lik.mean(params).numpy()[0, 0])) < 1e-4
        # ... and the kernel is lambda^x (1 - lambda)^(1 - x)
        lam = special.expit(logit)
        ratio = density(0.8) / density(0.2)
        np.testing.assert_allclose(ratio, (lam / (1 - lam)) ** 0.6, rtol=1e-4)


def test_mixture_prior_log_prob_matches_scipy():
    prior = priors.MixtureOfGaussians(2, num_components=3)
    prior.means.assign(RNG.normal(size=(3, 2)).astype("float32"))
    prior.log_scales.assign(RNG.normal(scale=0.3, size=(3, 2)).astype("float32"))
    prior.logits.assign(np.array([0.1, -1.0, 0.5], "float32"))
    z = RNG.normal(size=(7, 2)).astype("float32")
    w = special.softmax([0.1, -1.0, 0.5])
    scales = np.exp(prior.log_scales.numpy())
    expected = np.log(
        sum(
            w[k] * stats.multivariate_normal.pdf(z, prior.means.numpy()[k], np.diag(scales[k] ** 2))
            for k in range(3)
        )
    )
    np.testing.assert_allclose(prior.distribution().log_prob(z).numpy(), expected, rtol=1e-5)


def test_non_analytic_kl_falls_back_to_monte_carlo_and_asks_for_z():
    q = distributions.DiagonalGaussian().distribution(np.zeros((2, 4), "float32"))
    p = priors.MixtureOfGaussians(2).distribution()
    with pytest.raises(ValueError, match="Monte Carlo"):
        objectives.kl_divergence(q, p)
    z = np.ones((3, 2, 2), "float32")  # k = 3 draws for each of 2 examples
    log_qz, log_pz = q.log_prob(z), p.log_prob(z)
    np.testing.assert_allclose(objectives.kl_divergence(q, p, log_qz, log_pz).numpy(),
                               (log_qz.numpy() - log_pz.numpy()).mean(0), rtol=1e-6)


def test_log_variance_and_log_scale_are_clamped():
    huge = np.array([[0.0, 0.0, 1e4, -1e4]], "float32")
    _, stddev = distributions.DiagonalGaussian().mode_stddev(huge)
    np.testing.assert_allclose(
        stddev.numpy(), np.exp(0.5 * np.array([[distributions.LOG_VAR_MAX, distributions.LOG_VAR_MIN]])),
        rtol=1e-6,
    )
    lik = distributions.Gaussian(learn_scale=True)
    logp = lik.distribution(np.array([[0.0, -1e4]], "float32"), 1).log_prob(np.ones((1, 1), "float32"))
    assert np.isfinite(logp.numpy()).all()


def test_diagonal_clamp_is_per_posterior_and_survives_saving(tmp_path):
    import kvae

    tight = distributions.DiagonalGaussian(log_var_min=-6.0, log_var_max=2.0)
    _, log_var = tight.mean_log_var(np.array([[0.0, 0.0, 0.0, -9.0, 5.0, -1.0]], "float32"))
    np.testing.assert_array_equal(log_var.numpy(), [[-6.0, 2.0, -1.0]])
    # samples follow the clamped scale: at log-var -9 the draws' spread is exp(-3), not exp(-4.5)
    z = tight.reparameterize(np.array([[0.0, -9.0]], "float32"), np.ones((1, 1, 1), "float32"))
    np.testing.assert_allclose(z.numpy().ravel(), [np.exp(-3.0)], rtol=1e-6)
    assert distributions.DiagonalGaussian().get_config() == {"log_var_min": -12.0, "log_var_max": 8.0}  # every argument
    with pytest.raises(ValueError, match="log_var_min must be below log_var_max"):
        distributions.DiagonalGaussian(log_var_min=2.0, log_var_max=-6.0)
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]), posterior=tight)
    model.compile()
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras").posterior
    assert (type(again), again.log_var_min, again.log_var_max) == (distributions.DiagonalGaussian, -6.0, 2.0)


@pytest.mark.parametrize("bad", ["poisson", {"class_name": "Nope", "config": {}}, 3])
def test_unknown_likelihood_is_a_clear_error(bad):
    with pytest.raises((ValueError, TypeError), match="likelihood|Nope|Could not"):
        distributions.get_likelihood(bad)


def test_continuous_bernoulli_mean_matches_the_float64_closed_form():
    """E[x] = 1 / (1 - exp(-eta)) - 1 / eta (-> 1/2 at eta = 0), evaluated in
    float64 (exact up to ~1e-15 away from 0, Taylor 1/2 + eta/12 within 1e-4).
    kvae writes it with exportable ops; float32 allows 2e-6 (the exact form's
    cancellation at |eta| >= 0.5 costs ~eps / eta^2 ~ 5e-7; rounding of values near 0.5 ~6e-8)."""
    eta = np.concatenate([np.linspace(-60, 60, 4001), np.linspace(-0.2, 0.2, 4001), [0.0]])
    small = np.abs(eta) < 1e-4
    safe = np.where(small, 1.0, eta)
    truth = np.where(small, 0.5 + eta / 12, 1 / (-np.expm1(-safe)) - 1 / safe)
    mean = distributions.ContinuousBernoulli().mean(eta.astype("float32")).numpy()
    np.testing.assert_allclose(mean, truth, atol=2e-6)
    assert np.all(np.diff(mean[:4001]) >= -1e-6)  # increasing in eta, no jump at the switch
