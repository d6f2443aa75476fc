"""Batch scoring (kvae.scoring): the rows written equal the scores computed
in memory, whatever the chunking and format; a failure leaves no file."""

import numpy as np
import pytest

import kvae
import kvae.data as kdata
from kvae import anomaly, scoring
from kvae.data import DataError


@pytest.fixture(scope="module")
def model_and_data():
    import keras

    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, num_classes=None)
    x = np.random.default_rng(1).uniform(size=(300, 8, 8)).astype(np.float32)
    return model, x


@pytest.mark.parametrize("fmt", ["scores.parquet", "scores"])
def test_streamed_chunked_rows_equal_the_in_memory_scores(tmp_path, model_and_data, fmt):
    model, x = model_and_data
    np.save(tmp_path / "x.npy", x)
    subset = kdata.Subset(kdata.open_source(tmp_path / "x.npy"), np.arange(300))
    info = scoring.score(model, subset, tmp_path / fmt, scores=["elbo"], batch_size=64, chunk_rows=100, verbose=0)
    assert info["rows"] == 300 and info["shards"] == 3  # 64-row batches gathered into >= 100-row chunks
    rows = scoring.read(tmp_path / fmt)
    np.testing.assert_array_equal(rows["index"], np.arange(300))
    expected = anomaly.NegativeELBO()(model, x[..., None])
    # the same float32 graph on batches of 64 vs 256: summation order only
    np.testing.assert_allclose(rows["elbo"], expected, rtol=1e-5)
    modes, _ = kvae.evaluate.posterior_modes(model, x[..., None])
    assert rows["mean"].shape == (300, 3)
    np.testing.assert_allclose(rows["mean"], modes, rtol=1e-5, atol=1e-6)


def test_labels_come_along_and_a_failure_leaves_nothing(tmp_path, model_and_data, monkeypatch):
    model, x = model_and_data
    y = np.arange(300) % 10
    scoring.score(model, x[..., None], tmp_path / "a.parquet", labels=y, batch_size=100, verbose=0)
    np.testing.assert_array_equal(scoring.read(tmp_path / "a.parquet")["label"], y)
    with pytest.raises(DataError, match="exists"):
        scoring.score(model, x[..., None], tmp_path / "a.parquet", verbose=0)
    calls = {"n": 0}
    real = anomaly.NegativeELBO.__call__

    def failing(self, *args, **kwargs):  # a fault after the first chunk was written
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(anomaly.NegativeELBO, "__call__", failing)
    for out in ("b.parquet", "c"):
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            scoring.score(model, x[..., None], tmp_path / out, batch_size=50, chunk_rows=50, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_scores_that_need_a_reference_are_refused(tmp_path, model_and_data):
    model, x = model_and_data
    with pytest.raises(DataError, match="typicality score needs a reference"):
        scoring.score(model, x[..., None], tmp_path / "t.parquet", scores=["typicality"], verbose=0)
