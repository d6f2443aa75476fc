"""Every code block in the README is run here, as written (the python blocks in
one namespace, in order, as a reader pastes them; the bash blocks with this
environment's `python` and `kvae` first on PATH)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the README's code blocks, by section, in order; a block added to the README
#: fails `test_every_block_is_run` until a test below runs it.
BLOCKS = {
    "The commands": ["bash"],
    "Quickstart": ["python", "python"],
    "Mixed precision": ["python"],
    "Distributed training": ["python", "python", "bash"],
    "Anomaly detection": ["bash"],
    "Speed": ["python"],
    "Export to servers and devices": ["bash"],
    "Command line": ["bash"],
    "Data larger than memory": ["bash"],
}


def _blocks():
    """{section title: [(language, code), ...]} for every fenced block."""
    out = {}
    for part in re.split(r"^## ", README.read_text(), flags=re.M)[1:]:
        title, body = part.split("\n", 1)
        found = re.findall(r"^```(\w*)\n(.*?)^```", body, flags=re.S | re.M)
        if found:
            out[title.strip()] = found
    return out


def _bash(code, cwd, timeout):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, f"exit {out.returncode}\n{code}\n--- stderr ---\n{out.stderr[-3000:]}"
    return out


def test_every_block_is_run():
    assert {k: [lang for lang, _ in v] for k, v in _blocks().items()} == BLOCKS


def test_make_targets_of_the_commands_exist():
    """`make demo` and `make test` are run whole by CI and by hand (their times are in
    the README); here `make -n` checks that each target exists and does what it says."""
    (code,) = [c for _, c in _blocks()["The commands"]]
    targets = re.findall(r"^make (\w+)", code, flags=re.M)
    assert targets == ["demo", "test"]
    plan = {t: subprocess.run(["make", "-n", t], cwd=ROOT, capture_output=True, text=True) for t in targets}
    assert all(p.returncode == 0 for p in plan.values()), {t: p.stderr for t, p in plan.items()}
    assert "kvae train --dataset fashion_mnist" in plan["demo"].stdout
    assert "pytest" in plan["test"].stdout


def test_python_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    scope = {}
    quick = [c for _, c in blocks["Quickstart"]]
    assert len(quick[0].strip().splitlines()) == 5  # the five-line quickstart
    exec(quick[0], scope)
    history = scope["history"].history
    assert history["val_loss"][-1] < history["val_loss"][0]
    exec(quick[1], scope)
    assert scope["images"].shape == (16, 8, 8, 1)
    np.testing.assert_array_equal(scope["again"].reconstruct(scope["x"][:4]).numpy(), scope["x_hat"].numpy())
    assert (tmp_path / "vae.keras").exists()

    exec(blocks["Mixed precision"][0][1], scope)
    assert scope["model"].dtype_policy.name == "mixed_float16"
    assert np.isfinite(scope["history"].history["loss"]).all()
    assert scope["model"].decode(np.zeros((1, 8), "float32")).dtype.name == "float32"

    exec(blocks["Distributed training"][0][1], scope)
    # the model was built under the block's strategy (its variables are mirrored), not the default one
    assert isinstance(scope["strategy"], tf.distribute.MirroredStrategy)
    assert scope["model"].distribute_strategy is scope["strategy"]
    loss = scope["history"].history["loss"]
    assert len(loss) == 2 and loss[1] < loss[0]


def test_speed_block_runs_in_a_fresh_process():
    code = _blocks()["Speed"][0][1]
    out = subprocess.run([sys.executable, "-c", code + "\nprint(model.steps_per_execution)"],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "32"


@pytest.mark.slow
def test_multi_worker_example_runs_two_workers(tmp_path):
    (_, single), (_, worker), (_, launch) = _blocks()["Distributed training"]
    (tmp_path / "worker.py").write_text(worker)
    out = _bash(launch, tmp_path, timeout=600)
    logs = out.stdout + (tmp_path / "worker1.log").read_text()
    assert logs.count("Epoch 2/2") == 2, logs[-3000:]  # both workers trained both epochs


@pytest.mark.slow
def test_export_block_runs_on_a_trained_run(tmp_path):
    from kvae import cli

    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--quiet", "--out",
                     str(tmp_path / "runs" / "demo")]) == 0
    (tmp_path / "export").symlink_to(ROOT / "export")  # the block runs from the repository root
    (_, code), = _blocks()["Export to servers and devices"]
    _bash(code, tmp_path, timeout=900)
    report = json.loads((tmp_path / "deploy" / "report.json").read_text())
    assert {r["artifact"] for r in report["rows"]} >= {"savedmodel", "onnx", "tflite_int8"}
    meta = json.loads((tmp_path / "deploy" / "metadata.json").read_text())
    assert meta["training_summary"]["test_elbo"] < 0  # the run's summary travels with the artifacts
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_command_line_block_runs(tmp_path):
    (_, code), = _blocks()["Command line"]
    _bash(code, tmp_path, timeout=1200)
    state = json.loads((tmp_path / "runs" / "digits" / "state.json").read_text())
    assert state["epochs_done"] == 8  # trained 5, resumed to 8
    assert json.loads((tmp_path / "runs" / "digits" / "evaluation.json").read_text())["test_k"] == 1000
    for png in ["samples", "recon", "interp", "traverse", "map", "anomalies", "denoise", "inpaint"]:
        assert (tmp_path / f"{png}.png").stat().st_size > 1000, png


@pytest.mark.slow
def test_anomaly_block_runs(tmp_path):
    (tmp_path / "export").symlink_to(ROOT / "export")  # the block runs from the repository root
    (_, code), = _blocks()["Anomaly detection"]
    _bash(code, tmp_path, timeout=1200)
    assert json.loads((tmp_path / "ratio.json").read_text())["score"] == "likelihood_ratio"
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["score"] == "complexity" and len(new["scores"]) == 10 and new["threshold"]["fpr"] == 0.05
    thresholds = json.loads((tmp_path / "scorer" / "metadata.json").read_text())["scorer"]["thresholds"]
    assert thresholds["complexity"]["fpr"] == 0.05


@pytest.mark.slow
def test_streaming_block_runs(tmp_path):
    (_, code), = _blocks()["Data larger than memory"]
    out = _bash(code, tmp_path, timeout=900)
    assert "streamed from disk (NpySource)" in " ".join(
        json.loads((tmp_path / "runs" / "frames" / "config.json").read_text())["data"]["notes"])
    assert json.loads((tmp_path / "runs" / "frames-tfr" / "state.json").read_text())["epochs_done"] == 1
    assert "'mean': (1797, 16)" in out.stdout and "'nll': (1797,)" in out.stdout
