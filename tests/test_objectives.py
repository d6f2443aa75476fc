"""Objectives (ELBO, free bits, capacity, IWAE) as objects, KL warm-up,
active units and `kvae evaluate --k`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import callbacks, cli, evaluate, objectives

from helpers import assert_keras_roundtrip

SEED = tf.constant([3, 0], tf.int64)


def small(**kwargs):
    return kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, encoder=kvae.networks.mlp([32]),
                    decoder=kvae.networks.mlp([32]), **kwargs)


def _numpy_terms(model, x):
    """mean, log-variance and the per-dimension KL to N(0, I), recomputed in
    numpy from the posterior head's raw output (not through kvae's posterior)."""
    params = model.encode_params(x).numpy().astype("float64")
    d = model.latent_dim
    mean, log_var = params[:, :d], np.clip(params[:, d:], -12, 8)
    return mean, log_var, 0.5 * (mean**2 + np.exp(log_var) - 1 - log_var)


def test_free_bits_floor_each_dimension_and_cut_its_gradient(digits):
    x = tf.constant(digits[0][:64])
    model = small(free_bits=0.5)
    assert isinstance(model.objective, objectives.FreeBitsELBO)
    _, _, kl_dims = _numpy_terms(model, x)
    assert np.all(kl_dims.mean(0) < 0.5)  # an untrained encoder: every dimension is below the floor
    terms = model.terms(x, seed=SEED)
    np.testing.assert_allclose((model.objective.loss(terms) - terms.reconstruction).numpy(),
                               np.maximum(kl_dims.mean(0), 0.5).sum(), rtol=1e-5)

    def kl_part_grads(objective):
        with tf.GradientTape() as tape:
            t = model.terms(x, seed=SEED)
            kl_part = tf.reduce_mean(objective.loss(t) - t.reconstruction)
        return tape.gradient(kl_part, model.posterior_head.trainable_weights)

    # below the floor: the KL term is connected to the encoder, and its gradient is exactly zero
    grads = kl_part_grads(model.objective)
    assert all(g is not None for g in grads)
    assert all(np.all(g.numpy() == 0) for g in grads)
    # a floor below every dimension's KL: the same term now pulls on the encoder
    low = objectives.FreeBitsELBO(free_bits=1e-4)
    assert np.all(kl_dims.mean(0) > 1e-4)
    assert max(float(np.abs(g.numpy()).max()) for g in kl_part_grads(low)) > 1e-4


def test_free_bits_count_a_dimension_above_the_floor_with_its_own_value():
    """A constructed posterior: per-dimension KLs 0.1, 2.0, 0.3, 0.9 (through
    mu only, sigma = 1) against a floor of 0.5 -> 0.5 + 2.0 + 0.5 + 0.9."""
    kl = np.array([0.1, 2.0, 0.3, 0.9])
    params = tf.constant(np.concatenate([np.sqrt(2 * kl), np.zeros(4)])[None].astype("float32"))
    terms = objectives.Terms(log_px_z=tf.zeros([1, 1]), log_pz=tf.zeros([1, 1]), log_qz=tf.zeros([1, 1]),
                             kl=tf.constant([kl.sum()], tf.float32), q_params=params,
                             posterior=kvae.distributions.DiagonalGaussian(), prior=kvae.priors.StandardNormal(4))
    np.testing.assert_allclose(objectives.FreeBitsELBO(0.5).loss(terms).numpy(), [3.9], rtol=1e-5)


@pytest.mark.parametrize("schedule, expected", [
    ("linear", [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]),
    ("cyclical", [0.0, 0.5, 1.0, 1.0, 0.0, 0.5]),
])
def test_kl_warmup_sets_the_weight_per_epoch(digits, schedule, expected):
    model = small(beta=2.0)
    model.compile(optimizer="adam")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(self.model.objective.kl_weight.numpy()))

    warmup = callbacks.KLWarmup(4, schedule=schedule, ratio=0.5)
    history = model.fit(digits[0][:128], epochs=6, batch_size=64, verbose=0, callbacks=[warmup, Record()])
    np.testing.assert_allclose(seen, 2.0 * np.array(expected))
    np.testing.assert_allclose(history.history["kl_weight"], 2.0 * np.array(expected))


def test_the_kl_weight_is_what_the_step_uses(digits):
    x = digits[0][:32]
    model = small()
    model.compile(optimizer="adam")
    full = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    model.objective.kl_weight.assign(0.0)
    none = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    mean, log_var, kl_dims = _numpy_terms(model, x)
    assert full["kl"] > 0.01
    np.testing.assert_allclose(full["kl"], kl_dims.sum(1).mean(), rtol=1e-4)  # analytic, as numpy computes it
    np.testing.assert_allclose(full["loss"], full["reconstruction"] + full["kl"], rtol=1e-5)
    np.testing.assert_allclose(none["loss"], none["reconstruction"], rtol=1e-5)


def test_kl_warmup_and_capacity_refuse_an_objective_without_their_variable(digits):
    model = small(objective="dreg", num_samples=2)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="KLWarmup needs an ELBO or IWAE objective"):
        model.fit(digits[0][:32], epochs=1, verbose=0, callbacks=[callbacks.KLWarmup(2)])
    with pytest.raises(ValueError, match="CapacityAnnealing needs a model built with capacity_gamma > 0"):
        model.fit(digits[0][:32], epochs=1, verbose=0, callbacks=[callbacks.CapacityAnnealing(5.0, 2)])


def test_iwae_is_a_log_mean_exp_of_the_weights_tighter_than_the_elbo(digits):
    x = tf.constant(digits[0][:256])
    model = small(num_samples=5, objective="iwae")
    terms = model.terms(x, k=5, seed=SEED)
    log_w = (terms.log_px_z + terms.log_pz - terms.log_qz).numpy().astype("float64")
    shift = log_w.max(0)
    expected = shift + np.log(np.mean(np.exp(log_w - shift), axis=0))  # float64 numpy, not tfp
    np.testing.assert_allclose(-model.objective.loss(terms).numpy(), expected, rtol=1e-5)
    # L_5 >= mean log w (Jensen), example by example, on the same draws, and clearly so on average
    assert np.all(expected >= log_w.mean(0) - 1e-6)
    assert np.mean(expected - log_w.mean(0)) > 0.1
    # a shift of 1000 nats does not overflow
    shifted = objectives.Terms(terms.log_px_z + 1000.0, terms.log_pz, terms.log_qz, terms.kl)
    np.testing.assert_allclose(-objectives.IWAE(5).loss(shifted).numpy(), expected + 1000.0, rtol=1e-5)


def test_a_warm_up_weights_the_iwae_log_weights_and_leaves_the_bound_at_one(digits):
    x = tf.constant(digits[0][:128])
    model = small(num_samples=4, objective="iwae")
    terms = model.terms(x, k=4, seed=SEED)
    log_px_z, log_ratio = (t.numpy().astype("float64") for t in (terms.log_px_z, terms.log_pz - terms.log_qz))

    def log_mean_exp(a):
        return a.max(0) + np.log(np.mean(np.exp(a - a.max(0)), axis=0))

    bound = log_mean_exp(log_px_z + log_ratio)
    np.testing.assert_allclose(-model.objective.loss(terms).numpy(), bound, rtol=1e-5)  # weight 1: L_k
    model.objective.kl_weight.assign(0.25)
    warm = -model.objective.loss(terms).numpy()
    np.testing.assert_allclose(warm, log_mean_exp(log_px_z + 0.25 * log_ratio), rtol=1e-5)
    assert np.max(np.abs(warm - bound)) > 0.01  # the weight reaches the loss: not L_k any more
    # k = 1: the warm-up's weighted ELBO, reconstruction + w * (log q - log p)
    one = objectives.Terms(terms.log_px_z[:1], terms.log_pz[:1], terms.log_qz[:1], terms.kl)
    iwae = objectives.IWAE(1)
    iwae.build()
    iwae.kl_weight.assign(0.25)
    np.testing.assert_allclose(iwae.loss(one).numpy(), -log_px_z[0] - 0.25 * log_ratio[0], rtol=1e-5)


def test_kl_warmup_ramps_an_iwae_models_weight_and_the_run_selects_on_the_elbo(digits, tmp_path, capsys):
    from kvae import plots

    run = tmp_path / "iwae_warm"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "3", "--quiet", "--out", str(run),
                     "--objective", "iwae", "--num-samples", "2", "--kl-warmup", "2"]) == 0
    metrics = plots.read_metrics(run / "metrics.csv")
    assert metrics["kl_weight"] == [0.5, 1.0, 1.0]
    # a warm-up weights val_loss, so "best" is the best validation ELBO, as for the elbo objective
    assert json.loads((run / "state.json").read_text())["best_monitor"] == "val_elbo"
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--objective", "dreg",
                     "--kl-warmup", "2"]) == cli.EXIT_BAD_INPUT
    assert "dreg's gradient has no KL weight" in capsys.readouterr().err


def test_iwae_trains_and_round_trips(digits, tmp_path):
    model = small(num_samples=5, objective="iwae")
    model.compile(optimizer="adam")
    history = model.fit(digits[0], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] - 1.0
    model.save(tmp_path / "iwae.keras")
    again = keras.models.load_model(tmp_path / "iwae.keras")
    assert type(again.objective) is objectives.IWAE and again.objective.num_samples == 5


@pytest.mark.parametrize("objective", [objectives.ELBO(beta=2.0, num_samples=2), objectives.FreeBitsELBO(0.3),
                                       objectives.CapacityELBO(gamma=20.0), objectives.IWAE(num_samples=3)])
def test_objective_objects_round_trip_through_keras_files(objective, digits, tmp_path):
    model = small(objective=objective)
    assert model.objective is objective
    again = assert_keras_roundtrip(model, tmp_path, digits[0][:8])
    assert type(again.objective) is type(objective)
    assert again.objective.get_config() == objective.get_config()


def test_configs_of_kvae_0_1_still_load():
    """kvae 0.1 saved the objective as a name next to beta, num_samples,
    free_bits and capacity_gamma; such a config builds the same objective."""
    config = small().get_config()
    old = {k: v for k, v in config.items() if k != "objective"}
    for extra, cls in [(dict(objective="elbo", beta=2.0, num_samples=1, free_bits=0.0, capacity_gamma=0.0),
                        objectives.ELBO),
                       (dict(objective="elbo", beta=1.0, num_samples=1, free_bits=0.5, capacity_gamma=0.0),
                        objectives.FreeBitsELBO),
                       (dict(objective="iwae", beta=1.0, num_samples=5, free_bits=0.0, capacity_gamma=0.0),
                        objectives.IWAE)]:
        model = kvae.VAE.from_config({**old, **extra})
        assert type(model.objective) is cls and model.objective.num_samples == extra["num_samples"]


def test_active_units_on_a_constructed_posterior():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1.0, 500), rng.normal(0, 0.05, 500),  # var ~1, ~0.0025
                      np.full(500, 3.0), rng.normal(0, 0.2, 500)], axis=1)  # var 0, ~0.04
    count, variances = evaluate.active_units(means)
    assert count == 2
    np.testing.assert_allclose(variances, [1.0, 0.0025, 0.0, 0.04], rtol=0.15, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(objective="vimco"), "Unknown objective 'vimco'. Choose one of: dreg, elbo, iwae"),
    (dict(free_bits=-1.0), "free_bits must be a finite number >= 0"),
    (dict(beta=float("nan")), "beta must be a finite number >= 0"),
    (dict(free_bits=0.5, objective="iwae", num_samples=2), "apply to the 'elbo' objective, not to 'iwae'"),
    (dict(free_bits=0.5, prior="mixture"), "free_bits needs a per-dimension KL"),
    (dict(objective=objectives.IWAE(3), num_samples=3), "Give num_samples to the objective object"),
    (dict(objective=42), "Cannot make a objective from 42"),
])
def test_bad_objective_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        small(**kwargs)


def test_bad_warmup_arguments():
    with pytest.raises(ValueError, match="epochs >= 1"):
        callbacks.KLWarmup(0)
    with pytest.raises(ValueError, match="Unknown KL warm-up schedule"):
        callbacks.KLWarmup(3, schedule="sigmoid")


def test_cli_evaluate_with_importance_samples(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "3", "--quiet",
                     "--out", str(run)]) == 0
    assert cli.main(["evaluate", str(run), "--k", "50"]) == 0
    result = json.loads((run / "evaluation.json").read_text())
    assert result["test_k"] == 50
    assert result["test_log_likelihood"] >= result["test_elbo"] - 0.05  # L_50 >= L_1 (seeded MC)
    assert len(result["test_kl_per_dim"]) == 3
    np.testing.assert_allclose(sum(result["test_kl_per_dim"]), result["test_kl"], rtol=1e-4)
    printed = capsys.readouterr().out
    assert "test_log_likelihood" in printed and "test_active_units" in printed


def test_free_bits_keep_units_active_where_the_plain_elbo_collapses(tmp_path):
    """On dynamically binarised digits the plain ELBO collapses most units
    within 2 epochs; a 0.5-nat floor per dimension keeps most of them."""
    active = {}
    for name, extra in [("plain", []), ("free_bits", ["--free-bits", "0.5"])]:
        run = tmp_path / name
        assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--quiet", "--out", str(run), *extra]) == 0
        active[name] = json.loads((run / "summary.json").read_text())["test_active_units"]
    assert active["free_bits"] >= active["plain"] + 4, active


def test_cli_kl_warmup_and_iwae(tmp_path, capsys):
    from kvae import plots

    run = tmp_path / "warm"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "3", "--quiet", "--out", str(run),
                     "--kl-warmup", "2"]) == 0
    assert plots.read_metrics(run / "metrics.csv")["kl_weight"] == [0.5, 1.0, 1.0]
    run = tmp_path / "iwae"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--out", str(run),
                     "--objective", "iwae", "--num-samples", "3"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["objective"]["class_name"] == "IWAE"
    assert config["model"]["objective"]["config"] == {"num_samples": 3}


def test_capacity_objective_and_annealing(digits):
    x = tf.constant(digits[0][:64])
    model = small(capacity_gamma=10.0)
    assert isinstance(model.objective, objectives.CapacityELBO)
    _, _, kl_dims = _numpy_terms(model, x)
    kl = kl_dims.sum(1).mean()  # numpy: the batch mean of the analytic KL
    for capacity in (0.0, 5.0):
        model.objective.capacity.assign(capacity)
        terms = model.terms(x, seed=SEED)
        np.testing.assert_allclose((model.objective.loss(terms) - terms.reconstruction).numpy(),
                                   10.0 * abs(kl - capacity), rtol=1e-5)

    final_kl = {}
    for max_capacity in (0.0, 6.0):
        keras.utils.set_random_seed(0)
        model = small(capacity_gamma=10.0)
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = model.fit(digits[0], epochs=4, batch_size=64, verbose=0,
                            callbacks=[callbacks.CapacityAnnealing(max_capacity, epochs=3)])
        final_kl[max_capacity] = history.history["kl"][-1]
    np.testing.assert_allclose(history.history["kl_capacity"], [0.0, 2.0, 4.0, 6.0])
    # the KL follows the capacity it is given: near 6 nats, against near 0 with C = 0
    assert final_kl[6.0] > final_kl[0.0] + 3.0, final_kl
    with pytest.raises(ValueError, match="cannot be combined"):
        small(capacity_gamma=1.0, free_bits=0.5)
