"""mixed_float16 and mixed_bfloat16: finite losses, float32 math and outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_mixed_precision_trains_with_float32_distribution_math(policy, network, digits):
    x, _ = digits
    keras.config.set_dtype_policy(policy)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, encoder=network, decoder=network)
    model.compile(optimizer="adam")
    if policy == "mixed_float16":  # Keras wraps it, and train_step must scale the loss
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # the policy really applies to the bodies, and not to the heads
    assert model.encoder.layers[-1].compute_dtype == policy.split("_")[1]
    assert model.posterior_head.compute_dtype == "float32"
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x[:512], batch_size=64, epochs=2, verbose=0, validation_data=x[512:640])
    for key, values in history.history.items():
        assert np.all(np.isfinite(values)), key
    assert history.history["loss"][-1] < history.history["loss"][0]
    moved = [not np.array_equal(a, w.numpy()) for a, w in zip(before, model.trainable_weights)]
    assert all(moved)
    assert all(w.dtype == "float32" for w in model.trainable_weights)
    for out in [model.encode(x[:3])[0], model.encode(x[:3])[1], model.decode(np.zeros((2, 4))),
                model.sample(2, seed=0), model.reconstruct(x[:3]), model.encode_params(x[:3])]:
        assert out.dtype == tf.float32
        assert np.all(np.isfinite(out.numpy()))


def test_float16_activations_with_extreme_log_variance_stay_finite():
    """The float16 encoder body emits activations near float16's maximum; the
    float32 head turns them into log-variances whose exp overflows float16 and
    float32 alike. The clamp (in float32) keeps every output and the loss finite."""
    keras.config.set_dtype_policy("mixed_float16")
    model = kvae.VAE(input_shape=(4,), latent_dim=2, likelihood="gaussian",
                     encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile(optimizer="adam")
    body = model.encoder.layers[-1]  # the float16 Dense(8, relu)
    kernel, bias = body.get_weights()
    body.set_weights([np.zeros_like(kernel), np.full_like(bias, 6e4)])
    h = model.encoder(np.ones((8, 4), "float32"))
    assert h.dtype == tf.float16 and float(tf.reduce_min(h)) > 5.9e4  # float16's max is 65504
    assert not np.isfinite(np.exp(np.float16(h[0, 0].numpy()) / np.float16(2)))  # exp overflows in float16
    kernel = np.zeros((8, 4), "float32")
    kernel[:, 2:] = 1.0 / 8  # log sigma^2 = mean activation = 6e4
    model.posterior_head.set_weights([kernel, np.zeros(4, "float32")])
    _, stddev = model.encode(np.ones((8, 4), "float32"))
    np.testing.assert_allclose(stddev.numpy(), np.exp(0.5 * kvae.distributions.LOG_VAR_MAX), rtol=1e-6)
    logs = model.evaluate(np.ones((8, 4), "float32"), verbose=0, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
