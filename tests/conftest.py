import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import kvae.model  # noqa: E402

# In this process only: models compile without XLA (a third less time each).
# Users' default (XLA on one device) is checked in a fresh process in
# tests/test_model.py, and every command, notebook and README block that the
# suite runs in a subprocess compiles with it.
kvae.model.JIT_DEFAULT = False


@pytest.fixture(autouse=True)
def _seed_and_policy():
    """Every test starts seeded, in float32, with a fresh Keras name scope."""
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 8x8 digits (shipped inside the package, no network),
    binarised at 0.5, as (x [N, 8, 8, 1] float32, labels [N] int32)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images[..., None] / 16.0 > 0.5).astype("float32")
    return x, data.target.astype("int32")
