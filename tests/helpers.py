"""Shared test helpers: one per contract."""

import json

import keras
import numpy as np


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
