import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

import kvae.model  # noqa: E402

# In this process only: models compile without XLA (a third less time each).
# Users' default (XLA on one device) is checked in a fresh process in
# tests/test_model.py, and every command, notebook and README block that the
# suite runs in a subprocess compiles with it.
kvae.model.JIT_DEFAULT = False

#: Megabytes the suite needs free where it writes: a whole run's directory held 0.90 GB (CI on
#: 2e601e3; 0.77 GB when a CI run filled the disk 25 tests short of the end), and pytest keeps the
#: last three runs' directories.
MIN_FREE_MB = 1500


def pytest_sessionstart(session):
    """A nearly full disk stops the suite before its first test with one line that says where and
    how much, instead of dozens of "could not create numbered dir" errors halfway through."""
    where = Path(session.config.option.basetemp or tempfile.gettempdir()).absolute()
    while not where.exists():
        where = where.parent
    try:
        need = int(os.environ.get("KVAE_TEST_MIN_FREE_MB", MIN_FREE_MB))
    except ValueError:
        pytest.exit(f"KVAE_TEST_MIN_FREE_MB={os.environ['KVAE_TEST_MIN_FREE_MB']!r} is not a whole number of megabytes",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    free = shutil.disk_usage(where).free // 2**20
    if free < need:
        pytest.exit(f"kvae's tests write to {where}, which has {free} MB free; they need {need} MB: free some "
                    "space there or point TMPDIR (or --basetemp) elsewhere (KVAE_TEST_MIN_FREE_MB sets the need)",
                    returncode=pytest.ExitCode.USAGE_ERROR)


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
