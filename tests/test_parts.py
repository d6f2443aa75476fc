"""The parts' contracts: one registry for every kind, compatibility checked by
the parts themselves, replica plumbing outside a strategy, and seeds that
keep all their bits."""

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import distributions, evaluate, objectives, priors, registry, replicas


@pytest.mark.parametrize("kind, names", [
    ("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned"]),
    ("posterior", ["diagonal", "full_covariance", "power_spherical"]),
    ("prior", ["mixture", "spherical_uniform", "standard_normal", "vamp", "vamp_base"]),
    ("network", ["conv", "mlp"]),
    ("objective", ["elbo", "iwae"]),
])
def test_one_registry_knows_every_kind(kind, names):
    assert set(names) <= set(registry.names(kind))
    with pytest.raises(ValueError, match=f"Unknown {kind} 'nope'. Choose one of: "):
        registry.get(kind, "nope", latent_dim=2, input_shape=(4,), role="encoder")


def test_the_registry_returns_instances_as_they_are_and_rebuilds_configs():
    import keras

    prior = priors.VampPrior(3, (4,), num_pseudo_inputs=7)
    assert registry.get("prior", prior) is prior
    again = registry.get("prior", keras.saving.serialize_keras_object(prior))
    assert isinstance(again, priors.VampPrior) and again.num_pseudo_inputs == 7
    objective = registry.get("objective", keras.saving.serialize_keras_object(objectives.IWAE(7)))
    assert isinstance(objective, objectives.IWAE) and objective.num_samples == 7
    with pytest.raises(ValueError, match="Cannot make a posterior"):
        registry.get("posterior", priors.StandardNormal(2))  # a part of another kind
    with pytest.raises(ValueError, match="Unknown kind"):
        registry.register("sampler", "x")


def test_a_registered_name_reaches_the_vae():
    """A part registered from outside kvae is found by name, like kvae's own."""
    registry.register("prior", "wide_normal")(lambda latent_dim, **_: WideNormal(latent_dim))
    model = kvae.VAE(input_shape=(4,), latent_dim=2, prior="wide_normal", likelihood="gaussian")
    assert isinstance(model.prior, WideNormal)
    assert float(model.prior.distribution().stddev()[0]) == pytest.approx(3.0)


class WideNormal(priors.Prior):
    def distribution(self, model=None):
        import tensorflow_probability as tfp

        return tfp.distributions.MultivariateNormalDiag(tf.zeros([self.latent_dim]), 3.0 * tf.ones([self.latent_dim]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(posterior="power_spherical"), "needs both posterior='power_spherical' and prior='spherical_uniform'"),
    (dict(prior="spherical_uniform"), "needs both posterior='power_spherical' and prior='spherical_uniform'"),
    (dict(prior="vamp", num_classes=3), "VampPrior is not supported for a conditional model"),
    (dict(free_bits=0.5, posterior="full_covariance"), "free_bits needs a per-dimension KL"),
    (dict(free_bits=0.5, prior="vamp"), "free_bits needs a per-dimension KL"),
])
def test_each_part_refuses_what_it_cannot_work_with(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, **kwargs)


def test_per_dimension_kl_is_offered_only_where_it_exists():
    diag, full = distributions.DiagonalGaussian(), distributions.FullCovarianceGaussian()
    assert diag.has_kl_per_dim(priors.StandardNormal(2))
    assert not diag.has_kl_per_dim(priors.MixtureOfGaussians(2))
    assert not full.has_kl_per_dim(priors.StandardNormal(2))
    with pytest.raises(ValueError, match="no per-dimension KL"):
        diag.kl_per_dim(tf.zeros([1, 4]), priors.MixtureOfGaussians(2))
    # the summary reports per-dimension KLs for the pair that has them, and only then
    x = (np.random.default_rng(0).uniform(size=(16, 8, 8, 1)) > 0.5).astype("float32")
    with_dims = evaluate.summary(kvae.VAE(input_shape=(8, 8, 1), latent_dim=3), x, k=0)
    without = evaluate.summary(kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, prior="mixture"), x, k=0)
    assert len(with_dims["kl_per_dim"]) == 3 and "kl_per_dim" not in without
    np.testing.assert_allclose(sum(with_dims["kl_per_dim"]), with_dims["kl"], rtol=1e-5)


def test_outside_a_strategy_the_replica_helpers_are_plain():
    t = tf.constant([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    np.testing.assert_allclose(replicas.batch_mean(t).numpy(), [3.0, 5.0])
    gathered, start = replicas.gather(t)
    assert gathered is t and start == 0
    assert int(replicas.global_batch_size(tf.constant(3))) == 3
    seed = tf.constant([1, 2], tf.int64)
    np.testing.assert_array_equal(replicas.noise(seed, 3, [2]).numpy(),
                                  tf.random.stateless_normal([3, 2], seed=seed, alg="philox").numpy())
    assert replicas.context() == (None, 1, 0)


def test_sampling_seeds_keep_all_their_bits():
    """Seeds that differ only above bit 31 draw different power spherical
    samples (kvae <= 0.1 cast them to int32, so [0, 5] and [0, 2**32 + 5]
    drew the same t), and hashing many (batch, chunk) seeds does not collide."""
    post = distributions.PowerSpherical()
    params = tf.constant(np.random.default_rng(0).normal(size=(4, 4)).astype("float32"))
    eps = tf.random.stateless_normal([3, 4, 3], seed=[0, 0])
    a = post.sample(params, eps, tf.constant([0, 5], tf.int64))
    b = post.sample(params, eps, tf.constant([0, 2**32 + 5], tf.int64))
    assert not np.allclose(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a.numpy(), post.sample(params, eps, tf.constant([0, 5], tf.int64)).numpy())
    # the seeds evaluate.log_likelihood makes for 1,000,000 examples (batches of 256) x 10 chunks
    starts = np.arange(0, 1_000_000, 256, dtype=np.int64)
    seeds = np.stack([np.zeros(len(starts) * 10, np.int64),
                      (starts[:, None] * 1_000_003 + np.arange(10)).reshape(-1)], axis=1)
    hash_all = tf.function(lambda s: tf.map_fn(replicas.int32_seed, s, fn_output_signature=tf.int32,
                                               parallel_iterations=64))
    hashed = hash_all(tf.constant(seeds)).numpy()
    assert len({tuple(s) for s in hashed}) == len(seeds)


def test_encode_returns_the_documented_mode_for_every_posterior():
    """encode() gives the mode: the mean for Gaussians, the mean direction (on
    the sphere, not the mean E[z], which lies inside the ball) for the power
    spherical; active units use that same point."""
    x = (np.random.default_rng(1).uniform(size=(8, 8, 8, 1)) > 0.5).astype("float32")
    for posterior, prior in [("diagonal", "standard_normal"), ("full_covariance", "standard_normal"),
                             ("power_spherical", "spherical_uniform")]:
        model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, posterior=posterior, prior=prior)
        q = model.posterior.distribution(model.encode_params(x))
        mode, _ = model.encode(x)
        expected = q.mean_direction if posterior == "power_spherical" else q.mean()
        np.testing.assert_allclose(mode.numpy(), expected.numpy(), atol=1e-6)
        np.testing.assert_array_equal(evaluate.posterior_modes(model, x)[0], mode.numpy())
        if posterior == "power_spherical":
            np.testing.assert_allclose(np.linalg.norm(mode.numpy(), axis=1), 1.0, atol=1e-5)
            assert np.all(np.linalg.norm(q.mean().numpy(), axis=1) < 1.0)

def test_clipped_pseudo_inputs_start_near_black_train_and_survive_saving(tmp_path):
    with pytest.raises(ValueError, match="pseudo_inputs must be 'sigmoid' or 'clip'"):
        priors.VampPrior(3, (4,), pseudo_inputs="tanh")
    prior = priors.VampPrior(2, (8, 8, 1), num_pseudo_inputs=30, pseudo_inputs="clip")
    u = prior.pseudo_inputs().numpy()
    # Tomczak and Welling's start: N(0.05, 0.01^2) values, so every pixel within 6 sigma of 0.05
    assert abs(u.mean() - 0.05) < 0.002 and abs(u.std() - 0.01) < 0.002 and u.min() > -0.01
    assert abs(float(priors.VampPrior(2, (8, 8, 1), 30).pseudo_inputs().numpy().mean()) - 0.5) < 0.05
    # clipped: a value pushed out of [0, 1] is held at the bound and gets no gradient
    prior.pseudo_logits.assign(tf.fill(prior.pseudo_logits.shape, 1.5))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(prior.pseudo_inputs())
    assert float(total) == 30 * 64 and float(tf.reduce_max(tf.abs(tape.gradient(total, prior.pseudo_logits)))) == 0
    prior.pseudo_logits.assign(tf.fill(prior.pseudo_logits.shape, 0.3))

    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([16]), decoder=kvae.networks.mlp([16]),
                     prior=prior, seed=0)
    model.compile(optimizer="adam", jit_compile=False)
    x = np.random.default_rng(0).integers(0, 2, (64, 8, 8, 1)).astype("float32")
    model.fit(x, epochs=1, batch_size=32, verbose=0)
    moved = model.prior.pseudo_inputs().numpy()
    assert np.abs(moved - 0.3).max() > 1e-4  # the pseudo-inputs learn
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    assert again.prior.get_config()["pseudo_inputs"] == "clip"
    np.testing.assert_array_equal(again.prior.pseudo_inputs().numpy(), moved)


def _mixture_log_prob(z, mean, log_var):
    """log 1/K sum_k N(z; mean_k, exp(log_var_k)), in float64 numpy: [N, d], [K, d] -> [N]."""
    z, mean, log_var = (np.asarray(a, np.float64) for a in (z, mean, log_var))
    diff = z[:, None, :] - mean[None]
    comp = -0.5 * np.sum(diff ** 2 * np.exp(-log_var[None]) + log_var[None] + np.log(2 * np.pi), axis=-1)
    top = comp.max(axis=1, keepdims=True)
    return (top + np.log(np.mean(np.exp(comp - top), axis=1, keepdims=True)))[:, 0]


def test_a_vampprior_over_a_flow_posterior_mixes_its_base_gaussians(tmp_path):
    from kvae.flows import IAFPosterior

    with pytest.raises(ValueError, match="components must be 'posterior' or 'base'"):
        priors.VampPrior(3, (4,), components="flow")
    x = np.random.default_rng(0).integers(0, 2, (64, 8, 8, 1)).astype("float32")
    z = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")

    def build(posterior, **vamp):
        return kvae.VAE((8, 8, 1), 4, encoder=kvae.networks.mlp([16]), decoder=kvae.networks.mlp([16]),
                        posterior=posterior, prior=priors.VampPrior(4, (8, 8, 1), 6, **vamp), seed=0)

    # the plain Gaussian posterior is its own base: the two choices are one prior
    gauss = build("diagonal")
    same = priors.VampPrior(4, (8, 8, 1), 6, components="base")
    np.testing.assert_allclose(same.distribution(gauss).log_prob(z).numpy(),
                               gauss.prior.distribution(gauss).log_prob(z).numpy(), rtol=1e-6)

    flow = lambda: IAFPosterior(num_steps=2, hidden_units=12, context_dim=6)  # noqa: E731
    with pytest.raises(ValueError, match=r"not one .* VampPrior\(components='base'\) mixes its base Gaussians "
                                         r"instead \(prior='vamp_base', --prior vamp_base\)"):
        build(flow())
    with pytest.raises(ValueError, match="'full_covariance' posterior has none"):
        build("full_covariance", components="base")

    model = build(flow(), components="base")
    params = model.encode_params(model.prior.pseudo_inputs()).numpy()
    mean, log_var = params[:, :4], np.clip(params[:, 4:8], distributions.LOG_VAR_MIN, distributions.LOG_VAR_MAX)
    expected = _mixture_log_prob(z, mean, log_var)
    np.testing.assert_allclose(model.prior.distribution(model).log_prob(z).numpy(), expected, rtol=1e-5)

    model.compile(optimizer="adam", jit_compile=False)
    before = model.prior.pseudo_inputs().numpy()
    history = model.fit(x, epochs=1, batch_size=32, verbose=0).history
    assert np.isfinite(history["loss"][-1])
    assert np.abs(model.prior.pseudo_inputs().numpy() - before).max() > 1e-5  # the pseudo-inputs learn
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    assert again.prior.get_config()["components"] == "base"
    np.testing.assert_allclose(again.prior.distribution(again).log_prob(z).numpy(),
                               model.prior.distribution(model).log_prob(z).numpy(), rtol=1e-6)


def test_the_vamp_base_name_is_the_vampprior_of_a_flow_posteriors_base_from_python_and_the_cli(tmp_path, capsys):
    import json

    from kvae import cli

    model = kvae.VAE((8, 8, 1), 4, posterior="iaf", prior="vamp_base", seed=0)
    assert isinstance(model.prior, priors.VampPrior) and model.prior.components == "base"
    with pytest.raises(ValueError, match="--prior vamp_base"):
        kvae.VAE((8, 8, 1), 4, posterior="iaf", prior="vamp", seed=0)

    # the CLI: the error names the flag to use, writes nothing; the named prior trains and evaluates
    bad = tmp_path / "bad"
    args = ["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--quiet", "--posterior", "iaf"]
    assert cli.main(args + ["--prior", "vamp", "--out", str(bad)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--prior vamp_base" in err[0] and not bad.exists()
    run = tmp_path / "run"
    assert cli.main(args + ["--prior", "vamp_base", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["prior"] == "vamp_base"
    assert kvae.load_model(run / "best.keras").prior.components == "base"
    assert cli.main(["evaluate", str(run), "--k", "20"]) == 0
    assert np.isfinite(json.loads((run / "evaluation.json").read_text())["test_log_likelihood"])
