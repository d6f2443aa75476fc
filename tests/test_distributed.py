"""tf.distribute: each check runs in fresh processes, because logical devices
and TF_CONFIG must be set before TensorFlow initialises."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPTS = Path(__file__).parent / "scripts"


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **extra)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


CASES = ["elbo_adam", "elbo", "beta", "free_bits", "capacity", "iwae", "power_spherical"]


@pytest.mark.slow
def test_two_replicas_take_the_single_device_step_for_every_objective():
    """Every objective (ELBO, beta, free bits, capacity, IWAE) and the power
    spherical posterior: 4 steps on 2 replicas end where 4 steps on one device
    do. With per-replica batch statistics (kvae <= 0.1) free bits differed by
    9e-3, capacity by 8e-2 and the power spherical by 1.4e-2 here."""
    out = subprocess.run([sys.executable, SCRIPTS / "mirrored_step.py"], capture_output=True,
                         text=True, env=_env(), timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for case in CASES:
        r = result[case]
        assert r["replicas"] == 2 and r["steps"] == 4, case
        # The same global batch gives the same update: only the order of
        # float32 summation differs (two partial sums vs one), <= 6e-8 here,
        # while the update itself is ~4e-3 (Adam) to ~1e-1 (SGD).
        assert r["max_abs_diff"] < 1e-6, (case, r)
        assert r["max_update"] > 1e-3, (case, r)
    assert result["noise_replicas_differ"]
    assert result["noise_matches_single_device"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_multiworker_run_ends_with_equal_weights(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, SCRIPTS / "multiworker.py", tmp_path / f"w{index}.npz", str(index)],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    for p in procs:
        try:
            _, err = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, err[-3000:]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    weights = [k for k in w0.files if k.startswith("arr_")]
    assert weights
    for k in weights:
        np.testing.assert_array_equal(w0[k], w1[k])
    assert int(w0["steps"]) == int(w1["steps"]) == 16  # 2 epochs x 256/32 global batches
    assert float(w0["moved"]) > 1e-3  # training did change the weights
    np.testing.assert_array_equal(w0["loss"], w1["loss"])


def _cli_cluster(tmp_path, *args):
    """Both workers of a two-worker `kvae train --strategy multiworker` on
    localhost, each with its own TMPDIR; returns [chief, worker 1] Popens."""
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    procs = []
    for index in range(2):
        tmp = tmp_path / f"tmp{index}"
        tmp.mkdir(exist_ok=True)
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [Path(sys.executable).parent / "kvae", "train", *map(str, args), "--quiet"],
            env=_env(TF_CONFIG=tf_config, TMPDIR=str(tmp)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    return procs


def _finish(procs, timeout=600):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return outs


@pytest.mark.slow
def test_cli_multiworker_one_writer_and_a_killed_worker_resumes_to_the_same_weights(tmp_path):
    """`kvae train --strategy multiworker` on two local workers reading one
    streamed .npy: the chief alone writes the run directory (the other
    worker's temporary directory is gone at the end), both end with the same
    weights; killing worker 1 mid-run stops the chief with a one-line error,
    and restarting both with --resume ends with the uninterrupted run's
    weights, bit for bit."""
    from sklearn.datasets import load_digits

    import kvae
    from kvae import rundir, runs

    data = tmp_path / "digits.npy"
    np.save(data, (load_digits().images[:640, ..., None] * 255 / 16).astype("uint8"))
    flags = ["--dataset", data, "--network", "mlp", "--latent-dim", 3, "--batch-size", 64, "--epochs", 3,
             "--strategy", "multiworker"]

    whole = tmp_path / "whole"
    chief, worker = _finish(_cli_cluster(tmp_path, *flags, "--out", whole))
    assert "trained 3 epochs" in chief, chief[-3000:]
    digest = runs.weights_digest(kvae.load_model(whole, "last"))
    assert f"final weights sha256 {digest}" in worker, worker[-3000:]
    single = {"best.keras", "last.keras", "config.json", "state.json", "summary.json", "metrics.csv",
              "curves.png", "images", "tensorboard"}
    assert {p.name for p in whole.iterdir()} == single
    assert len((whole / "metrics.csv").read_text().splitlines()) == 1 + 3  # one writer: one row per epoch
    assert not list((tmp_path / "tmp1").iterdir())  # the worker's temporary directory is removed

    killed = tmp_path / "killed"
    procs = _cli_cluster(tmp_path, *flags, "--out", killed)
    deadline = time.monotonic() + 300
    def done():
        return rundir.read_state(killed)["epochs_done"] if (killed / "state.json").exists() else 0

    while done() < 1:
        assert time.monotonic() < deadline and procs[0].poll() is None, procs[0].communicate()[0][-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    chief_out = _finish(procs[:1], timeout=300)[0]
    assert procs[0].returncode != 0
    error = chief_out.strip().splitlines()[-1]
    assert "a worker of this multi-worker run stopped" in error and f"--resume {killed}" in error, error
    assert done() >= 1

    chief, worker = _finish(_cli_cluster(tmp_path, "--resume", killed))
    assert "trained 3 epochs" in chief, chief[-3000:]
    assert runs.weights_digest(kvae.load_model(killed, "last")) == digest
    assert f"final weights sha256 {digest}" in worker, worker[-3000:]
    assert len((killed / "metrics.csv").read_text().splitlines()) == 1 + 3
