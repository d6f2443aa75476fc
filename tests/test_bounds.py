"""IWAE training, free bits, KL warm-up, active units and `kvae evaluate --k`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import callbacks, cli, evaluate, objectives

SEED = tf.constant([3, 0], tf.int64)


def small(**kwargs):
    return kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, encoder=kvae.networks.mlp([32]),
                    decoder=kvae.networks.mlp([32]), **kwargs)


def test_free_bits_hold_each_dimension_at_its_floor(digits):
    x = tf.constant(digits[0][:64])
    model = small(free_bits=0.5)
    reconstruction, kl, loss, _ = model.compute_terms(x, seed=SEED)
    kl_dims = model.posterior.kl_per_dim_to_standard_normal(model.encode_params(x)).numpy().mean(0)
    assert np.all(kl_dims < 0.5)  # an untrained encoder: every dimension is below the floor
    # ... so the KL term of the objective is exactly floor x latent_dim
    np.testing.assert_allclose((loss - reconstruction).numpy(), 0.5 * 4, rtol=1e-6)
    # and pushing KL further down earns nothing: the KL term has no gradient
    with tf.GradientTape() as tape:
        _, _, loss, _ = model.compute_terms(x, seed=SEED)
        reconstruction_only = model.compute_terms(x, seed=SEED)[0]
        kl_part = tf.reduce_mean(loss - reconstruction_only)
    grads = tape.gradient(kl_part, model.posterior_head.trainable_weights)
    assert all(g is None or np.allclose(g.numpy(), 0) for g in grads)
    # a dimension above the floor counts with its own value
    per_dim = np.array([[0.1, 2.0, 0.3, 0.9]], "float32")
    np.testing.assert_allclose(objectives.free_bits_kl(per_dim, 0.5).numpy(), [0.5 + 2.0 + 0.5 + 0.9])


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
            seen.append(float(self.model.kl_weight.numpy()))

    warmup = callbacks.KLWarmup(4, schedule=schedule, ratio=0.5)
    history = model.fit(digits[0][:128], epochs=6, batch_size=64, verbose=0, callbacks=[warmup, Record()])
    np.testing.assert_allclose(seen, 2.0 * np.array(expected))
    np.testing.assert_allclose(history.history["kl_weight"], 2.0 * np.array(expected))


def test_the_kl_weight_is_what_the_step_uses(digits):
    x = tf.constant(digits[0][:32])
    model = small()
    reconstruction, kl, loss, _ = model.compute_terms(x, seed=SEED)
    model.kl_weight.assign(0.0)
    _, _, loss0, _ = model.compute_terms(x, seed=SEED)
    np.testing.assert_allclose(loss.numpy(), (reconstruction + kl).numpy(), rtol=1e-6)
    np.testing.assert_allclose(loss0.numpy(), reconstruction.numpy(), rtol=1e-6)


def test_iwae_objective_is_tighter_and_trains(digits, tmp_path):
    x = tf.constant(digits[0][:256])
    model = small(num_samples=5, objective="iwae")
    eps = tf.random.stateless_normal([5, 256, 4], seed=[1, 2])
    log_px_z, log_pz, log_qz, _, _ = model.log_importance_weights(x, None, eps)
    log_w = (log_px_z + log_pz - log_qz).numpy().astype("float64")
    bound = objectives.iwae_bound(log_px_z, log_pz, log_qz).numpy()
    # L_5 = log mean exp(log w) >= mean log w (Jensen), example by example, on the same draws
    assert np.all(bound >= log_w.mean(0) - 1e-4)
    assert np.mean(bound - log_w.mean(0)) > 0.1
    # the training loss is -L_5 on the step's own draws
    _, _, loss, _ = model.compute_terms(x, seed=SEED)
    eps_step = tf.transpose(model.replica_noise(SEED, 256, [5, 4])[0], [1, 0, 2])
    np.testing.assert_allclose(loss.numpy(), -objectives.iwae_bound(
        *model.log_importance_weights(x, None, eps_step)[:3]).numpy(), rtol=1e-5)
    model.compile(optimizer="adam")
    history = model.fit(digits[0], epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    model.save(tmp_path / "iwae.keras")
    again = keras.models.load_model(tmp_path / "iwae.keras")
    assert again.objective == "iwae" and again.num_samples == 5


def test_active_units_on_a_constructed_posterior():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1.0, 500), rng.normal(0, 0.05, 500),  # var ~1, ~0.0025
                      np.full(500, 3.0), rng.normal(0, 0.2, 500)], axis=1)  # var 0, ~0.04
    count, variances = evaluate.active_units(means)
    assert count == 2
    np.testing.assert_allclose(variances, [1.0, 0.0025, 0.0, 0.04], rtol=0.15, atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(objective="vimco"), "Unknown objective 'vimco'"),
    (dict(free_bits=-1.0), "free_bits must be >= 0"),
    (dict(free_bits=0.5, objective="iwae", num_samples=2), "free_bits applies to the 'elbo'"),
    (dict(free_bits=0.5, prior="mixture"), "free_bits needs the 'diagonal' posterior"),
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
    assert config["model"]["objective"] == "iwae" and config["model"]["num_samples"] == 3
    capsys.readouterr()
    assert cli.main(["train", "--dataset", "digits", "--out", str(tmp_path / "x"), "--objective", "iwae",
                     "--kl-warmup", "2"]) == cli.EXIT_BAD_INPUT
    assert "the iwae bound has none" in capsys.readouterr().err


def test_capacity_objective_and_annealing(digits):
    x = tf.constant(digits[0][:64])
    model = small(capacity_gamma=10.0)
    reconstruction, kl, loss, _ = model.compute_terms(x, seed=SEED)
    np.testing.assert_allclose((loss - reconstruction).numpy(), 10.0 * abs(kl.numpy().mean() - 0.0), rtol=1e-5)
    model.kl_capacity.assign(5.0)
    _, _, loss5, _ = model.compute_terms(x, seed=SEED)
    np.testing.assert_allclose((loss5 - reconstruction).numpy(), 10.0 * abs(kl.numpy().mean() - 5.0), rtol=1e-5)

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
    print("capacity final kl", final_kl)
    assert final_kl[6.0] > final_kl[0.0] + 3.0, final_kl
    with pytest.raises(ValueError, match="cannot be combined"):
        small(capacity_gamma=1.0, free_bits=0.5)
