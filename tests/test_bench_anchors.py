"""bench/anchors.py (the recipes for the published binarised-MNIST anchors) runs
end to end on a tiny stand-in for Larochelle's .amat files: no network."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fake_binarized_mnist(folder, rng):
    folder.mkdir(parents=True)
    for split, n in [("train", 200), ("valid", 100), ("test", 100)]:
        # digit-like structure is not needed: binary pixels with a fixed per-pixel rate
        rates = rng.uniform(0.05, 0.6, size=784)
        np.savetxt(folder / f"binarized_mnist_{split}.amat", (rng.uniform(size=(n, 784)) < rates).astype(int),
                   fmt="%d")


@pytest.mark.slow
def test_recipes_train_and_report_on_binarized_mnist_files(tmp_path):
    _fake_binarized_mnist(tmp_path / "data" / "binarized_mnist", np.random.default_rng(0))
    out = subprocess.run([sys.executable, ROOT / "bench" / "anchors.py", "--data-dir", tmp_path / "data",
                          "--epochs", "2", "--k", "20", "--out-dir", tmp_path / "out"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["model"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert set(rows) == {"vae", "iwae50", "vamp"}
    for row in rows.values():
        assert row["epochs_run"] == 2 and np.isfinite(row["test_log_likelihood"])
        # 784 independent pixels at rates in [0.05, 0.6]: any sane model is within the
        # entropy bounds of 784 * [0.2, 0.7] nats, far from 0 and from 784 log 2.
        assert -784 * np.log(2) < row["test_log_likelihood"] < -784 * 0.2
    assert rows["vae"]["kl_weight_final"] == pytest.approx(2 / 100)  # linear warm-up over 100 epochs
    assert rows["iwae50"]["kl_weight_final"] is None  # the IWAE bound has no KL weight to warm up
    assert "published 85.6" in out.stdout


def test_missing_data_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, ROOT / "bench" / "anchors.py", "--data-dir", tmp_path],
                         capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                                          "TFDS_DATA_DIR": str(tmp_path)})
    assert out.returncode == 2
    assert "binarized_mnist" in out.stderr
