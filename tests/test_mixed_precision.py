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


def test_float16_body_with_extreme_log_variance_stays_finite():
    """A float16 body can emit log-variances whose exp overflows float16; the
    clamp in float32 keeps the loss finite."""
    keras.config.set_dtype_policy("mixed_float16")
    model = kvae.VAE(input_shape=(4,), latent_dim=2, likelihood="gaussian")
    model.compile(optimizer="adam")
    head = model.posterior_head
    kernel, bias = head.get_weights()
    bias[2:] = 500.0  # log sigma^2 = 500: exp overflows even float32
    head.set_weights([kernel, bias])
    logs = model.evaluate(np.ones((8, 4), "float32"), verbose=0, return_dict=True)
    assert all(np.isfinite(v) for v in logs.values()), logs
