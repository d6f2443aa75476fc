import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import callbacks, optimizers
from kvae.optimizers import AdamaxW, AdamW, NormalizedAdam


def _steps(optimizer, grads):
    """The variable after applying each gradient in turn, from [1, 2, 3]."""
    var = keras.Variable(np.array([1.0, 2.0, 3.0], "float32"))
    for g in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(np.asarray(g, "float32")), var)])
    return np.asarray(var)


def test_normalized_adam_steps_do_not_follow_the_gradients_size():
    small = [[0.3, -0.1, 0.2], [0.01, 0.02, -0.03], [1.0, 1.0, 0.5]]
    large = [small[0], list(1000.0 * np.array(small[1])), small[2]]  # one gradient 1000x larger
    unit = [list(np.array(g) / np.linalg.norm(g)) for g in small]
    # the same path whatever each gradient's norm: Adam on the unit gradients
    np.testing.assert_allclose(_steps(NormalizedAdam(learning_rate=0.1), large),
                               _steps(NormalizedAdam(learning_rate=0.1), small), rtol=1e-5)
    np.testing.assert_allclose(_steps(NormalizedAdam(learning_rate=0.1), small),
                               _steps(keras.optimizers.Adam(learning_rate=0.1, epsilon=1e-7), unit), rtol=1e-4)
    # plain Adam follows the large gradient: the two paths part by more than the tolerance above
    plain = [_steps(keras.optimizers.Adam(learning_rate=0.1), g) for g in (small, large)]
    assert np.abs(plain[0] - plain[1]).max() > 1e-2


def test_normalized_adam_is_saved_with_the_model_and_checks_its_argument(tmp_path, digits):
    with pytest.raises(ValueError, match="epsilon_norm must be > 0"):
        NormalizedAdam(epsilon_norm=0.0)
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]), seed=1)
    model.compile(optimizer=NormalizedAdam(learning_rate=5e-4, epsilon_norm=1e-6))
    model.fit(digits[0][:64], epochs=1, batch_size=32, verbose=0)
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras").optimizer
    assert type(again) is NormalizedAdam and again.epsilon_norm == 1e-6
    assert float(again.learning_rate) == pytest.approx(5e-4)
    assert int(again.iterations) == 2


def _small_vae():
    return kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]), seed=1)


@pytest.mark.parametrize("kind", [AdamW, AdamaxW])
def test_adamw_decays_the_decoder_kernels_only(kind):
    model = _small_vae()
    opt = kind(learning_rate=0.1, weight_decay=0.5)
    before = [np.asarray(v) for v in model.trainable_variables]
    # zero gradients: Adam's (and Adamax's) own step is 0, so only the decay moves a weight
    opt.apply_gradients([(keras.ops.zeros_like(v), v) for v in model.trainable_variables])
    decayed = []
    for v, old in zip(model.trainable_variables, before):
        if v.path.startswith("decoder_body/") and v.name == "kernel":
            np.testing.assert_allclose(np.asarray(v), old * (1 - 0.1 * 0.5), rtol=1e-6)
            decayed.append(v.path)
        else:
            np.testing.assert_array_equal(np.asarray(v), old)
    assert len(decayed) == 2  # the hidden layer's and the output layer's


@pytest.mark.parametrize("kind", [AdamW, AdamaxW])
def test_adamw_is_saved_with_the_model_and_checks_its_arguments(tmp_path, digits, kind):
    for bad, match in [(dict(weight_decay=-1.0), "weight_decay must be"), (dict(decay_paths="decoder"), "decay_paths"),
                       (dict(decay_paths=()), "decay_paths"), (dict(decay_paths=[""]), "decay_paths")]:
        with pytest.raises(ValueError, match=match):
            kind(**bad)
    model = _small_vae()
    model.compile(optimizer=kind(learning_rate=5e-4, weight_decay=0.25, decay_paths=["encoder_body/"]))
    model.fit(digits[0][:64], epochs=1, batch_size=32, verbose=0)
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    opt = again.optimizer
    assert type(opt) is kind and opt.decay_paths == ("encoder_body/",) and float(opt.weight_decay) == 0.25
    assert int(opt.iterations) == 2
    # the reloaded optimizer decays the same weights: the encoder's kernels, not the decoder's
    chosen = sorted(v.path for v in again.trainable_variables if opt._use_weight_decay(v))
    assert chosen and all(p.startswith("encoder_body/") and p.endswith("/kernel") for p in chosen)


@pytest.mark.parametrize("kind", [AdamW, AdamaxW])
def test_a_scheduled_decay_moves_with_the_progress_inside_a_compiled_step(kind):
    """With weight_decay_end the decay is read each step, not fixed when the step is traced: the step that
    fit compiles decays by learning_rate x (start + (end - start) x progress)."""
    model = _small_vae()
    opt = kind(learning_rate=0.1, weight_decay=0.2, weight_decay_end=0.6)
    kernels = [v for v in model.trainable_variables if v.path.startswith("decoder_body/") and v.name == "kernel"]
    step = tf.function(lambda: opt.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_variables]))
    for progress, decay in [(0.0, 0.2), (0.5, 0.4), (1.0, 0.6), (1.5, 0.6), (0.25, 0.3)]:
        opt.set_progress(progress)
        before = [np.asarray(v) for v in kernels]
        step()  # traced once, on the first pass
        for v, old in zip(kernels, before):
            np.testing.assert_allclose(np.asarray(v), old * (1 - 0.1 * decay), rtol=1e-6)
    constant = kind(learning_rate=0.1, weight_decay=0.2)
    constant.set_progress(1.0)  # a constant decay ignores the progress
    assert constant.weight_decay == 0.2 and "weight_decay_end" not in constant.get_config()
    assert len(kind(weight_decay=0.2, weight_decay_end=0.6).variables) == len(kind(weight_decay=0.2).variables) + 1
    for bad in (-0.1, "0.3", True):
        with pytest.raises(ValueError, match="weight_decay_end must be a float >= 0"):
            kind(weight_decay=0.2, weight_decay_end=bad)


@pytest.mark.parametrize("kind", [AdamW, AdamaxW])
def test_a_scheduled_decay_is_saved_and_follows_the_time_limits_progress(tmp_path, digits, kind):
    model = _small_vae()
    model.compile(optimizer=kind(learning_rate=1e-3, weight_decay=0.1, weight_decay_end=0.5))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(model.optimizer.weight_decay.numpy())))
    model.fit(digits[0][:64], epochs=4, batch_size=32, verbose=0,
              callbacks=[callbacks.TimeLimit(0, cosine=True, epochs=4), record])
    np.testing.assert_allclose(seen, [0.1, 0.2, 0.3, 0.4], rtol=1e-6)  # epochs 0-3 of 4
    model.save(tmp_path / "m.keras")
    opt = kvae.load_model(tmp_path / "m.keras").optimizer
    assert type(opt) is kind and (opt.get_config()["weight_decay"], opt.weight_decay_end) == (0.1, 0.5)
    assert float(opt.weight_decay.numpy()) == pytest.approx(0.4)  # where the run left it
    opt.set_progress(1.0)
    assert float(opt.weight_decay.numpy()) == pytest.approx(0.5)


def _regression(momentum=0.9, seed=0):
    """A linear model on a fixed linear task, SGD with moving averages of its weights (Keras's use_ema)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05, use_ema=bool(momentum), ema_momentum=momentum or 0.99), "mse")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 3)).astype("float32")
    return model, x, x @ np.array([[1.0], [-2.0], [0.5]], "float32")


def test_averaged_weights_swaps_the_averages_in_and_the_trained_weights_back():
    model, x, y = _regression()
    with optimizers.averaged_weights(model) as swapped:  # no step yet: no averages
        assert swapped is False
    for _ in range(5):
        model.train_on_batch(x, y)
    trained = [np.array(v) for v in model.trainable_variables]
    averages = [np.array(a) for a in model.optimizer._model_variables_moving_average]
    with optimizers.averaged_weights(model) as swapped:
        inside = [np.array(v) for v in model.trainable_variables]
    assert swapped is True
    for v, t, a, i in zip(model.trainable_variables, trained, averages, inside):
        np.testing.assert_array_equal(i, a)
        np.testing.assert_array_equal(np.array(v), t)  # restored
        assert np.abs(a - t).max() > 1e-3  # five steps of SGD: the average lags the weights
    np.testing.assert_array_equal(np.array(model.optimizer._model_variables_moving_average[0]), averages[0])
    plain, x, y = _regression(momentum=0)
    plain.train_on_batch(x, y)
    with optimizers.averaged_weights(plain) as swapped:
        assert swapped is False


def test_a_run_validates_and_keeps_the_averages_and_trains_on_its_own_weights(tmp_path):
    histories = {}
    for validate in (True, False):
        model, x, y = _regression()
        cbs = [optimizers.ValidateAverages()] if validate else []
        histories[validate] = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, validation_data=(x, y),
                                        callbacks=cbs, verbose=0).history
        # fit ends by copying the averages into the weights (Keras): what the last validation saw
        after = model.evaluate(x, y, verbose=0)
        if validate:
            assert histories[True]["val_loss"][-1] == pytest.approx(after, rel=1e-5)
        else:
            assert abs(histories[False]["val_loss"][-1] - after) > 1e-3 * after
    # swapping around each validation does not change what is trained
    np.testing.assert_allclose(histories[True]["loss"], histories[False]["loss"], rtol=1e-6)

    model, x, y = _regression()
    for _ in range(5):
        model.train_on_batch(x, y)
    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 0}))
    check = callbacks.RunCheckpoint(tmp_path, "val_loss", "min")
    check.set_model(model)
    check.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.5})
    trained = [np.array(v) for v in model.trainable_variables]
    averages = [np.array(a) for a in model.optimizer._model_variables_moving_average]
    best = keras.saving.load_model(tmp_path / "best.keras")
    last = keras.saving.load_model(tmp_path / "last.keras")
    for b, l, t, a, v in zip(best.trainable_variables, last.trainable_variables, trained, averages,
                             model.trainable_variables):
        np.testing.assert_array_equal(np.array(b), a)  # the best model is the averages
        np.testing.assert_array_equal(np.array(l), t)  # the resumable one the trained weights ...
        np.testing.assert_array_equal(np.array(v), t)  # ... which the model still holds
    # ... with the averages in its optimizer, so that a resumed run goes on averaging
    for saved, a in zip(last.optimizer._model_variables_moving_average, averages):
        np.testing.assert_array_equal(np.array(saved), a)
