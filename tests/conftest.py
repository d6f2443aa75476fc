import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


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
