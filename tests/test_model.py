"""The VAE as a user meets it: fit, save/load, encode/decode/sample, its loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special

import kvae
from kvae import replicas
from helpers import assert_keras_roundtrip

CONFIGS = {
    "mlp": dict(),
    "conv": dict(encoder="conv", decoder="conv"),
    "full_covariance": dict(posterior="full_covariance"),
    "mixture_prior": dict(prior="mixture"),
    "vamp_prior": dict(prior="vamp"),
    "gaussian_learned": dict(likelihood="gaussian_learned"),
    "continuous_bernoulli": dict(likelihood="continuous_bernoulli"),
    "conditional": dict(num_classes=10),
    "tanh_mlp": dict(encoder=kvae.networks.mlp([64], "tanh"), decoder=kvae.networks.mlp([64], "tanh")),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_fit_then_keras_roundtrip(name, digits, tmp_path):
    x, y = digits
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, **CONFIGS[name])
    model.compile(optimizer="adam")
    history = model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "elbo", "reconstruction", "kl"}
    assert np.isfinite(history.history["loss"]).all()
    labels = y[:8] if model.conditional else None
    assert_keras_roundtrip(model, tmp_path, x[:8], labels)


def test_fit_on_real_digits_lowers_the_validation_loss(digits):
    x, y = digits
    train, val = x[:1500], x[1500:]
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=8, encoder=kvae.networks.mlp([128]),
                     decoder=kvae.networks.mlp([128]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = model.evaluate(val, verbose=0, return_dict=True)
    history = model.fit(train, batch_size=64, epochs=15, validation_data=val, verbose=0)
    after = model.evaluate(val, verbose=0, return_dict=True)
    # An untrained Bernoulli decoder scores ~64 * log 2 = 44 nats; a trained one
    # must do clearly better, and its ELBO is consistent with its terms.
    assert after["loss"] < before["loss"] - 10, (before, after)
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    np.testing.assert_allclose(after["elbo"], -(after["reconstruction"] + after["kl"]), rtol=1e-4)
    assert after["kl"] > 1.0  # the latent code is used


def test_public_outputs_are_float32_tensors_of_the_right_shape(digits):
    x, y = digits
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=5)
    mean, stddev = model.encode(x[:4])
    assert mean.shape == stddev.shape == (4, 5) and mean.dtype == tf.float32
    assert np.all(stddev.numpy() > 0)
    images = model.sample(6, seed=0)
    assert images.shape == (6, 8, 8, 1) and images.dtype == tf.float32
    assert np.all((images.numpy() >= 0) & (images.numpy() <= 1))
    np.testing.assert_array_equal(images.numpy(), model.sample(6, seed=0).numpy())
    assert not np.allclose(images.numpy(), model.sample(6, seed=1).numpy())
    assert model.reconstruct(x[:4]).shape == (4, 8, 8, 1)
    assert model.decode(np.zeros((2, 5), "float32")).shape == (2, 8, 8, 1)
    # predict and call return tensors too (no distribution objects leak out)
    np.testing.assert_allclose(model.predict(x[:4], verbose=0), model.reconstruct(x[:4]).numpy(), atol=1e-6)


def test_step_loss_equals_an_independent_elbo_computation(digits):
    """The train/test objective, recomputed by hand in numpy from the same noise."""
    x, _ = digits
    x = x[:16]
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, beta=2.5, encoder=kvae.networks.mlp([32]),
                     decoder=kvae.networks.mlp([32]))
    model.compile(optimizer="adam")
    logs = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)

    params = model.encode_params(x).numpy()
    mean, log_var = params[:, :4], np.clip(params[:, 4:], -12, 8)
    eps = replicas.noise(tf.constant([model.seed, -1], tf.int64), 16, [1, 4])[:, 0]
    z = mean + np.exp(0.5 * log_var) * eps.numpy()
    logits = model.decode_params(z).numpy().astype("float64")
    log_px = np.sum(x * logits - np.logaddexp(0, logits), axis=(1, 2, 3))
    kl = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=1)
    # float32 network vs float64 reference over 64 pixels: 1e-4 relative.
    np.testing.assert_allclose(logs["reconstruction"], -log_px.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["kl"], kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["loss"], (-log_px + 2.5 * kl).mean(), rtol=1e-4)
    np.testing.assert_allclose(logs["elbo"], (log_px - kl).mean(), rtol=1e-4)
    # and E[x|z] is the sigmoid of those logits (scipy's, in float64)
    np.testing.assert_allclose(model.decode(z).numpy(), special.expit(logits), atol=1e-6)


def test_any_keras_layers_can_be_the_encoder_and_decoder(digits, tmp_path):
    x, _ = digits
    encoder = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(16, activation="elu")])
    decoder = keras.Sequential([keras.layers.Dense(64), keras.layers.Reshape((8, 8, 1))])
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, encoder=encoder, decoder=decoder)
    model.compile(optimizer="adam")
    model.fit(x[:128], epochs=1, verbose=0)
    assert_keras_roundtrip(model, tmp_path, x[:4])


def test_a_decoder_of_the_wrong_output_shape_is_refused():
    decoder = keras.Sequential([keras.layers.Dense(10)])
    with pytest.raises(ValueError, match=r"decoder outputs shape \(10,\).*needs \(8, 8, 1\)"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, decoder=decoder)


def test_conv_network_handles_odd_image_sizes():
    model = kvae.VAE(input_shape=(13, 9, 3), latent_dim=2, encoder="conv", decoder="conv",
                     likelihood="gaussian")
    assert model.sample(2, seed=0).shape == (2, 13, 9, 3)


def test_gaussian_learned_decoder_outputs_two_parameters_per_value():
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, likelihood="gaussian_learned")
    assert model.decode_params(np.zeros((1, 2), "float32")).shape == (1, 8, 8, 2)
    assert model.decode(np.zeros((1, 2), "float32")).shape == (1, 8, 8, 1)


def test_beta_weights_the_kl_in_the_loss_only(digits):
    x, _ = digits
    logs = {}
    for beta in [0.0, 4.0]:
        keras.utils.set_random_seed(0)
        model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, beta=beta)
        model.compile(optimizer="adam")
        logs[beta] = model.evaluate(x[:64], verbose=0, return_dict=True)
    assert logs[0.0]["elbo"] == pytest.approx(logs[4.0]["elbo"], rel=1e-6)
    assert logs[0.0]["loss"] == pytest.approx(logs[0.0]["reconstruction"], rel=1e-6)
    assert logs[4.0]["loss"] == pytest.approx(
        logs[4.0]["reconstruction"] + 4.0 * logs[4.0]["kl"], rel=1e-5
    )


def test_every_public_module_is_reachable_after_import_kvae():
    """In a fresh process (here other tests have imported the submodules already)."""
    import subprocess
    import sys

    code = ("import kvae\n"
            "for name in kvae.__all__: getattr(kvae, name)\n"
            "kvae.callbacks.KLWarmup, kvae.evaluate.log_likelihood, kvae.exporters.export, kvae.plots.grid_figure\n"
            "kvae.priors.SphericalUniform, kvae.distributions.PowerSpherical\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_compile_turns_xla_on_by_default_on_one_device():
    """What users get, in a fresh process (this suite's own process compiles
    without XLA, see conftest.py): XLA on one device, off under a strategy
    (Keras resolves "auto" to False there)."""
    import os
    import subprocess
    import sys

    code = """
import tensorflow as tf, kvae
single = kvae.VAE((8, 8, 1), 2)
single.compile()
with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
    mirrored = kvae.VAE((8, 8, 1), 2)
    mirrored.compile()
print(single.jit_compile, mirrored.jit_compile)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["True", "False"]


def test_compile_runs_several_steps_per_execution_by_default(digits, tmp_path):
    """Fewer Python round trips by default (bench/RESULTS.md), never more than
    an epoch has, re-decided after loading; an explicit value stays."""
    import kvae.model

    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile()
    assert model.steps_per_execution == kvae.model.STEPS_PER_EXECUTION_DEFAULT == 32
    history = model.fit(digits[0][:320], epochs=2, batch_size=64, verbose=0)  # 5 steps an epoch
    assert model.steps_per_execution == 5 and len(history.history["loss"]) == 2
    model.fit(digits[0][:1600], epochs=1, batch_size=32, verbose=0)  # 50 steps
    assert model.steps_per_execution == 32
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    again.fit(digits[0][:96], epochs=1, batch_size=32, verbose=0)
    assert again.steps_per_execution == 3
    fixed = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    fixed.compile(steps_per_execution=7)
    fixed.fit(digits[0][:64], epochs=1, batch_size=32, verbose=0)
    assert fixed.steps_per_execution == 7


def test_xla_fit_runs_an_executions_batches_in_one_program_with_the_same_result(digits, monkeypatch):
    """With XLA, an execution's full-size batches train in one compiled loop
    (kvae.fused); the weights, the step count and the
    logged losses are those of one program per step, the epoch's short last
    batch included."""
    import kvae.fused

    x = digits[0][:330]  # 10 batches of 32 and one of 10
    traced = []
    fused_steps = kvae.fused.train_steps

    def spy(model, stacked):
        traced.append(int(tf.nest.flatten(stacked)[0].shape[0]))  # runs when a program is traced
        return fused_steps(model, stacked)

    monkeypatch.setattr(kvae.fused, "train_steps", spy)

    def trained(max_bytes):
        monkeypatch.setattr(kvae.fused, "MAX_BYTES", max_bytes)
        keras.utils.set_random_seed(0)
        model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([16]), decoder=kvae.networks.mlp([16]), seed=3)
        model.compile(jit_compile=True, steps_per_execution=4)
        history = model.fit(x, epochs=2, batch_size=32, shuffle=False, verbose=0)
        return model, history.history["loss"]

    plain, plain_loss = trained(0)
    assert traced == []  # turned off: Keras's one program per step
    fused, fused_loss = trained(32 * 64 * 4 * 3)  # three batches of 32 8x8 floats per program at most
    # executions of 4 batches -> programs of 3 + 1; the last execution: 2 full batches and the short one
    assert sorted(set(traced)) == [2, 3]
    assert int(fused.optimizer.iterations) == int(plain.optimizer.iterations) == 22
    np.testing.assert_allclose(fused_loss, plain_loss, rtol=1e-5)
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
