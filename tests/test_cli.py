"""The `kvae` command as a user runs it, on a small real dataset (digits)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import kvae
from kvae import callbacks, cli, plots

from helpers import wait_for_epochs

KVAE = str(Path(sys.executable).parent / "kvae")
SMALL = ["--dataset", "digits", "--latent-dim", "4", "--quiet"]


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def _png_ok(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 50 and im.size[1] > 50
        assert np.asarray(im.convert("L")).std() > 1  # not a blank picture


def test_train_then_evaluate_sample_reconstruct_info(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", *SMALL, "--epochs", 2, "--out", run) == 0
    out = capsys.readouterr().out
    assert "test ELBO (nats)" in out and str(run / "curves.png") in out

    for name in ["config.json", "state.json", "last.keras", "best.keras", "metrics.csv", "curves.png",
                 "summary.json"]:
        assert (run / name).exists(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    for epoch in (1, 2):
        _png_ok(run / "images" / f"samples_epoch_{epoch:03d}.png")
        _png_ok(run / "images" / f"reconstructions_epoch_{epoch:03d}.png")
    _png_ok(run / "curves.png")
    metrics = plots.read_metrics(run / "metrics.csv")
    assert metrics["epoch"] == [0.0, 1.0] and {"elbo", "val_elbo", "kl", "reconstruction"} <= set(metrics)

    # config.json rebuilds the model, and the checkpoints load
    config = json.loads((run / "config.json").read_text())
    rebuilt = kvae.VAE.from_config(config["model"])
    last = keras.models.load_model(run / "last.keras")
    assert rebuilt.get_config() == last.get_config()
    assert int(last.optimizer.iterations.numpy()) > 0  # optimizer state came back
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_elbo"] < 0 and summary["test_examples"] > 300

    assert run_cli("evaluate", run) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["test_elbo"] == pytest.approx(summary["test_elbo"], rel=1e-5)
    assert run_cli("sample", run, "--n", 9, "--seed", 3, "--out", tmp_path / "s.png") == 0
    _png_ok(tmp_path / "s.png")
    assert run_cli("reconstruct", run, "--out", tmp_path / "r.png") == 0
    _png_ok(tmp_path / "r.png")
    capsys.readouterr()
    assert run_cli("info", run) == 0
    info = capsys.readouterr().out
    assert "2 of 2 done" in info and "digits" in info
    state = json.loads((run / "state.json").read_text())
    assert "best val_loss" in info and f"{state['best']:.3f} (epoch {state['best_epoch']})" in info


def test_conditional_run_samples_a_chosen_class(tmp_path, monkeypatch):
    run = tmp_path / "cond"
    assert run_cli("train", *SMALL, "--epochs", 1, "--conditional", "--out", run) == 0
    shown = []
    real_save = plots.save_grid
    monkeypatch.setattr(plots, "save_grid", lambda images, *a, **k: (shown.append(images), real_save(images, *a, **k)))
    assert run_cli("sample", run, "--label", 3, "--n", 4, "--out", tmp_path / "three.png") == 0
    _png_ok(tmp_path / "three.png")
    # the grid holds class-3 samples: what the model draws for label 3 with that seed, not for label 4
    model = kvae.load_model(run / "best.keras")
    np.testing.assert_array_equal(shown[0], model.sample(4, seed=0, labels=3).numpy())
    assert not np.allclose(shown[0], model.sample(4, seed=0, labels=4).numpy(), atol=1e-3)


@pytest.mark.slow
def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    # The killed command compiles with XLA (users' default); so do the resume and the
    # straight run here, in this process (see conftest.py): XLA and plain kernels differ in the last bits.
    monkeypatch.setattr(kvae.model, "JIT_DEFAULT", True)
    run = tmp_path / "killed"
    proc = subprocess.Popen([KVAE, "train", *SMALL, "--epochs", "200", "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    try:
        wait_for_epochs(run, 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait()
    done = callbacks.read_state(run)["epochs_done"]
    assert done >= 2
    keras.models.load_model(run / "last.keras")  # the checkpoint is whole

    target = done + 1
    assert run_cli("train", "--resume", run, "--epochs", target, "--quiet") == 0
    assert callbacks.read_state(run)["epochs_done"] == target
    metrics = plots.read_metrics(run / "metrics.csv")
    assert metrics["epoch"] == [float(e) for e in range(target)]  # no gap, no duplicate

    straight = tmp_path / "straight"
    assert run_cli("train", *SMALL, "--epochs", target, "--out", straight) == 0
    resumed_model = keras.models.load_model(run / "last.keras")
    straight_model = keras.models.load_model(straight / "last.keras")
    for a, b in zip(resumed_model.get_weights(), straight_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(metrics["val_loss"], plots.read_metrics(straight / "metrics.csv")["val_loss"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    run = tmp_path / "nan"
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", run) == 0
    good = keras.models.load_model(run / "last.keras").get_weights()

    real_terms = kvae.VAE.terms

    def nan_terms(self, *args, **kwargs):  # the real terms, poisoned
        terms = real_terms(self, *args, **kwargs)
        terms.log_px_z = terms.log_px_z * float("nan")
        return terms

    monkeypatch.setattr(kvae.VAE, "terms", nan_terms)
    capsys.readouterr()
    assert run_cli("train", "--resume", run, "--epochs", 3) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "NaN/Inf in epoch 2" in err and "last good checkpoint (epoch 1)" in err
    state = callbacks.read_state(run)
    assert state["epochs_done"] == 1 and state["stopped_on_nan_at_epoch"] == 2
    monkeypatch.undo()
    for a, b in zip(good, keras.models.load_model(run / "last.keras").get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "no_such_set", "--out", "{tmp}/r"], "Unknown dataset 'no_such_set'"),
        (["train", "--dataset", "{tmp}/empty", "--out", "{tmp}/r"], "No images"),
        (["train", "--dataset", "{tmp}/mixed", "--out", "{tmp}/r"], "differ in size"),
        (["train", "--dataset", "{tmp}/corrupt.npz", "--out", "{tmp}/r"], "as a .npz file"),
        (["train", "--dataset", "digits", "--out", "{tmp}/existing"], "already holds files; use --force"),
        (["train", "--dataset", "digits", "--epochs", "-1", "--out", "{tmp}/r"], "--epochs must be >= 1"),
        (["train", "--dataset", "digits", "--latent-dim", "0", "--out", "{tmp}/r"], "--latent-dim must be >= 1"),
        (["train", "--dataset", "digits", "--beta", "-0.5", "--out", "{tmp}/r"], "--beta must be >= 0"),
        (["train", "--dataset", "digits", "--likelihood", "poisson", "--out", "{tmp}/r"], "Unknown likelihood"),
        (["train", "--dataset", "digits", "--epochs", "ten", "--out", "{tmp}/r"], "expected an integer"),
        (["train", "--dataset", "digits"], "--out RUN_DIR is required"),
        (["evaluate", "{tmp}/empty"], "not a kvae run directory"),
        (["sample", "{tmp}/nowhere"], "nowhere is neither a kvae run directory nor a .keras file (it does not exist)"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "mixed" / "a.png")
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "mixed" / "b.png")
    (tmp_path / "corrupt.npz").write_bytes(b"definitely not numpy")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "config.json").write_text("{}")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # nothing half-created
    assert (tmp_path / "existing" / "config.json").read_text() == "{}"  # not overwritten


def test_force_replaces_an_existing_run(tmp_path):
    """(What --force refuses to delete is in tests/test_faults.py.)"""
    run = tmp_path / "r"
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", run) == 0
    assert run_cli("train", *SMALL, "--epochs", 2, "--out", run, "--force") == 0
    assert json.loads((run / "state.json").read_text())["epochs_done"] == 2 and (run / "best.keras").exists()


@pytest.mark.slow
def test_console_script_exit_code_without_traceback(tmp_path):
    out = subprocess.run([KVAE, "train", "--dataset", "nope", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 2
    assert "kvae train: error: Unknown dataset 'nope'" in out.stderr and "Traceback" not in out.stderr
    assert subprocess.run([KVAE, "--version"], capture_output=True, text=True).stdout.strip() == (
        f"kvae {kvae.__version__}")
