"""Shared test helpers: one per contract."""

import json
import time

import keras
import numpy as np

from kvae import callbacks


def assert_keras_roundtrip(model, tmp_path, x, labels=None):
    """`.keras` save then load gives a model of the same class and config whose
    encode / decode / reconstruct outputs equal the original's exactly, while a
    freshly initialised model of the same config does not (so the check can fail)."""
    path = tmp_path / "model.keras"
    model.save(path)
    again = keras.models.load_model(path)
    assert type(again) is type(model)
    assert json.dumps(again.get_config()) == json.dumps(model.get_config())
    z = np.random.default_rng(0).normal(size=(len(x), model.latent_dim)).astype("float32")
    for name, args in [("reconstruct", (x, labels)), ("decode", (z, labels))]:
        np.testing.assert_array_equal(
            getattr(again, name)(*args).numpy(), getattr(model, name)(*args).numpy(), err_msg=name
        )
    for a, b in zip(again.encode(x, labels), model.encode(x, labels)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh = type(model).from_config(model.get_config())
    assert not np.allclose(fresh.decode(z, labels).numpy(), model.decode(z, labels).numpy())
    return again


def wait_for_epochs(run, n, proc, timeout=240):
    """Wait until the training process `proc` writing `run` has finished `n`
    epochs (its state.json says so); fail if it ends first or `timeout` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        state = run / callbacks.STATE_FILE
        if state.exists() and json.loads(state.read_text())["epochs_done"] >= n:
            return
        time.sleep(0.2)
    raise AssertionError("training did not reach the epoch in time")
