"""Fault injection against the `kvae` command: bad input, kills, interrupts,
concurrent runs, a full disk. Each test asserts the exit code, a one-line
message without a traceback, and what is on disk afterwards (byte-identical
where nothing may change)."""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

import kvae
from kvae import cli, data, files, rundir

KVAE = str(Path(sys.executable).parent / "kvae")
SMALL = ["--dataset", "digits", "--latent-dim", "4", "--quiet"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def run_cli(*argv):
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        return e.code


def snapshot(directory):
    """{relative path: (sha256, mode)} of every file below `directory`."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def hidden_temps(directory):
    return [p for p in Path(directory).rglob(".*") if ".tmp-" in p.name or ".partial-" in p.name]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished one-epoch digits run (made once; tests copy it)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", run) == 0
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------ data loss
@pytest.mark.parametrize("bad", [["--dataset", "digitz"], ["--dataset", "{nan}"], ["--lr", "-1"],
                                 ["--likelihood", "poisson"]])
def test_force_with_bad_input_leaves_the_existing_run_untouched(run, tmp_path, capsys, bad):
    nan = _npz(tmp_path / "nan.npz", x=np.full((20, 4, 4), np.nan, "float32"))
    before = snapshot(run)
    argv = [a.replace("{nan}", str(nan)) for a in bad]
    assert run_cli("train", *SMALL, *argv, "--out", run, "--force") == cli.EXIT_BAD_INPUT
    one_line_error(capsys)
    assert snapshot(run) == before


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "state.json").unlink(), "state.json is missing"),
    (lambda run: (run / "state.json").write_text('{"epochs_do'), "state.json is unreadable or truncated"),
    (lambda run: (run / "state.json").write_text('[1, 2]'), "state.json does not hold a valid state"),
    (lambda run: (run / "state.json").write_text('{"epochs_done": "one"}'), "does not hold a valid state"),
    (lambda run: (run / "config.json").write_text('{"train": {"latent_dim": "two"}}'),
     "config.json: 'latent_dim' must be int, got 'two'"),
    (lambda run: (run / "config.json").write_text('{"train": {"learning_rat": 0.1}}'),
     "config.json: unknown setting(s) 'learning_rat'"),
    (lambda run: (run / "config.json").write_text('{"train": {"beta": -2}}'), "config.json: --beta must be >= 0"),
    (lambda run: (run / "config.json").write_text('{"tra'), "config.json is unreadable or truncated"),
])
def test_resume_refuses_a_damaged_run_and_changes_nothing(run, capsys, damage, message):
    damage(run)
    before = snapshot(run)
    assert run_cli("train", "--resume", run, "--epochs", 3) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, message)
    assert snapshot(run) == before


def test_a_truncated_checkpoint_is_named_as_such(run, capsys, tmp_path):
    data_ = (run / "best.keras").read_bytes()
    (run / "best.keras").write_bytes(data_[: len(data_) // 2])
    assert run_cli("sample", run, "--out", tmp_path / "s.png") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "best.keras is unreadable or truncated")
    assert not (tmp_path / "s.png").exists()


def test_a_whole_checkpoint_whose_model_cannot_be_rebuilt_is_not_called_truncated(run, capsys, tmp_path):
    """A .keras file that is intact but holds a config this kvae refuses says so, not "truncated"."""
    whole = run / "best.keras"
    with zipfile.ZipFile(whole) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config.update(class_name="NoSuchModel", registered_name="kvae>NoSuchModel")
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(whole, "w") as archive:
        for name, data_ in members.items():
            archive.writestr(name, data_)
    assert run_cli("sample", run, "--out", tmp_path / "s.png") == cli.EXIT_BAD_INPUT
    line = one_line_error(capsys, "best.keras is a whole .keras file, but its model could not be rebuilt")
    assert "truncated" not in line
    assert not (tmp_path / "s.png").exists()


# ------------------------------------------------------------ data corruption
def test_uint8_zero_one_images_are_not_divided_by_255(tmp_path):
    x = (np.random.default_rng(0).uniform(size=(30, 6, 6)) > 0.5).astype("uint8")
    ds = data.load(str(_npz(tmp_path / "bin.npz", x_train=x, x_test=x[:5])))
    assert ds.train[0].max() == 1.0 and set(np.unique(ds.test[0])) == {0.0, 1.0}
    assert any("kept as 0/1" in n for n in ds.notes)
    grey = (x * 200).astype("uint8")
    ds = data.load(str(_npz(tmp_path / "grey.npz", x_train=grey, x_test=grey[:5])))
    assert ds.train[0].max() == pytest.approx(200 / 255) and any("divided by 255" in n for n in ds.notes)


@pytest.mark.parametrize("form", ["matlab", "text"])
def test_binarized_mnist_in_both_amat_forms_stays_zero_one(tmp_path, form):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    splits = {s: (rng.uniform(size=(n, 784)) > 0.8).astype("uint8") for s, n in [("train", 40), ("valid", 10)]}
    for split, x in splits.items():
        path = folder / f"binarized_mnist_{split}.amat"
        if form == "matlab":
            savemat(path, {"X": x})
            with open(path, "rb") as f:
                assert f.read(6) == b"MATLAB"
        else:
            np.savetxt(path, x, fmt="%d")
    ds = data.load("binarized_mnist", data_dir=tmp_path)
    assert ds.input_shape == (28, 28, 1)
    # no test file: every train image trains; the valid split selects and is reported
    np.testing.assert_array_equal(ds.train[0].reshape(40, 784), splits["train"])
    for held in (ds.validation, ds.test):
        np.testing.assert_array_equal(held[0].reshape(10, 784), splits["valid"])
    assert any("selects the model and is reported" in n for n in ds.notes)


BAD_DATA = [
    ("0..255 floats", dict(x_train=np.full((40, 4, 4), 200.0, "float32")), "range over [200, 200]"),
    ("[-1, 1] floats", dict(x_train=np.linspace(-1, 1, 640, dtype="float32").reshape(40, 4, 4)), "range over [-1, 1]"),
    ("NaN in train", dict(x_train=np.where(np.arange(640).reshape(40, 4, 4) == 600, np.nan, 0.5)), "NaN or Inf"),
    ("Inf in train", dict(x_train=np.where(np.arange(640).reshape(40, 4, 4) == 600, np.inf, 0.5)), "NaN or Inf"),
    ("NaN in test only", dict(x_train=np.full((40, 4, 4), 0.5), x_test=np.full((8, 4, 4), np.nan)),
     "test split: 128 NaN or Inf"),
    ("short labels", dict(x=np.full((40, 4, 4), 0.5), y=np.arange(30) % 3), "40 examples but 30 labels"),
    ("float labels", dict(x=np.full((40, 4, 4), 0.5), y=np.arange(40) / 2), "labels must be integers; label 1 is"),
    ("negative late label", dict(x=np.full((40, 4, 4), 0.5), y=np.r_[np.zeros(39, int), -1]),
     "labels must be >= 0; label 39 is -1"),
    ("uint16 pixels", dict(x_train=np.full((40, 4, 4), 4000, "uint16")), "integer pixels must lie in 0..255"),
]


@pytest.mark.parametrize("binarize", ["dynamic", "none"])
@pytest.mark.parametrize("name, arrays, message", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_is_refused_before_anything_is_written(tmp_path, capsys, name, arrays, message, binarize):
    if "x_train" in arrays and "x_test" not in arrays:
        arrays = dict(arrays, x_test=np.full((8, 4, 4), 0.5).astype(arrays["x_train"].dtype))
    path = _npz(tmp_path / "bad.npz", **arrays)
    extra = ["--conditional"] if "y" in arrays else []
    assert run_cli("train", "--dataset", path, "--binarize", binarize, *extra, "--quiet",
                   "--out", tmp_path / "r") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, message, "bad.npz")
    assert not (tmp_path / "r").exists()


def test_out_of_range_values_are_refused_for_gaussian_data_only_when_binarised(tmp_path, capsys):
    path = _npz(tmp_path / "wide.npz", x_train=np.full((40, 4, 4), 3.0, "float32"),
                x_test=np.full((8, 4, 4), 3.0, "float32"))
    assert run_cli("train", "--dataset", path, "--likelihood", "gaussian", "--binarize", "threshold",
                   "--out", tmp_path / "r") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "--binarize threshold needs values in [0, 1]")


# --------------------------------------------------------------- concurrency
@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_one_leaves_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen([KVAE, "train", *SMALL, "--epochs", "500", "--out", str(run)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 240
        while not (run / "last.keras").exists():
            assert first.poll() is None, first.stderr.read()[-2000:]
            assert time.time() < deadline, "no epoch finished in time"
            time.sleep(0.2)
        config = (run / "config.json").read_bytes()
        for argv in (["--out", run, "--force", "--latent-dim", "3"], ["--resume", run]):
            second = subprocess.run([KVAE, "train", *SMALL[:2], *map(str, argv), "--quiet"],
                                    capture_output=True, text=True, env=ENV)
            assert second.returncode == cli.EXIT_BAD_INPUT, second.stderr
            assert "is in use by another kvae process" in second.stderr and "Traceback" not in second.stderr
            assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert (run / "config.json").read_bytes() == config  # the second wrote nothing
        assert first.poll() is None  # and the first goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    done = rundir.read_state(run)["epochs_done"]
    (run / ".last.tmp-999999999-abc123.keras").write_bytes(b"half")  # what a kill mid-save leaves
    assert run_cli("train", "--resume", run, "--epochs", done + 1, "--quiet") == 0
    assert rundir.read_state(run)["epochs_done"] == done + 1
    assert hidden_temps(run) == []


def test_sigint_during_a_checkpoint_leaves_no_partial_file(run, capsys, monkeypatch):
    before = snapshot(run)
    real_save = keras.Model.save

    def interrupted_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"half a zip")  # the save had started
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", interrupted_save)
    assert run_cli("train", "--resume", run, "--epochs", 2) == cli.EXIT_INTERRUPTED
    assert "Resume with: kvae train --resume" in capsys.readouterr().err
    monkeypatch.setattr(keras.Model, "save", real_save)
    assert hidden_temps(run) == []
    for name in ("last.keras", "best.keras", "state.json"):
        assert snapshot(run)[name] == before[name], name  # the previous epoch's files, intact
    assert run_cli("train", "--resume", run, "--epochs", 2) == 0


def test_disk_full_during_a_checkpoint_is_one_line_and_leaves_no_partial_file(run, capsys, monkeypatch):
    before = snapshot(run)

    def full_disk(self, path, *args, **kwargs):
        Path(path).write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(keras.Model, "save", full_disk)
    assert run_cli("train", "--resume", run, "--epochs", 2) == cli.EXIT_FAILED
    one_line_error(capsys, "No space left on device")
    assert hidden_temps(run) == []
    for name in ("last.keras", "best.keras", "state.json"):
        assert snapshot(run)[name] == before[name], name


def _can_mount():
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not shutil.which("unshare") or not _can_mount(), reason="cannot mount a tmpfs here")
def test_the_suite_stops_before_its_first_test_on_a_nearly_full_disk(tmp_path):
    """TMPDIR on a 64 MB tmpfs: a line naming the directory, exit 4, the selected test never runs and
    nothing is written there. A bad KVAE_TEST_MIN_FREE_MB is named in one line too."""
    disk = tmp_path / "disk"
    disk.mkdir()
    pytest_cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                  "-k", "test_the_lock_refuses_a_second_holder_and_is_released"]
    script = f"""
        mount -t tmpfs -o size=64m tmpfs {disk}
        TMPDIR={disk} {' '.join(pytest_cmd)} > {tmp_path}/out 2>&1; echo $? > {tmp_path}/code
        ls -A {disk} > {tmp_path}/files
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, check=True, timeout=300)
    out = (tmp_path / "out").read_text()
    assert (tmp_path / "code").read_text().strip() == "4", out
    lines = [line for line in out.splitlines() if "MB free" in line]  # pytest prints an exit's reason twice
    assert lines and all(f"write to {disk}, which has" in line and "need 1500 MB" in line for line in lines), out
    assert "passed" not in out and (tmp_path / "files").read_text() == "", out
    bad = subprocess.run(pytest_cmd, env=dict(ENV, KVAE_TEST_MIN_FREE_MB="lots"), capture_output=True, text=True)
    assert bad.returncode == 4 and "KVAE_TEST_MIN_FREE_MB='lots' is not a whole number" in bad.stdout + bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("unshare") or not _can_mount(), reason="cannot mount a tmpfs here")
def test_a_really_full_disk_and_a_read_only_one(finished_run, tmp_path):
    """A 12 MB tmpfs holding the run plus a filler that leaves ~1 MB: the next
    checkpoint (4 MB) cannot be written. Then the same tmpfs remounted read-only."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f"""
        set -u
        mount -t tmpfs -o size=12m tmpfs {disk}
        cp -r {finished_run} {disk}/run
        head -c $(( $(df -B1 --output=avail {disk} | tail -1) - 1000000 )) /dev/zero > {disk}/filler
        free_before=$(df -B1 --output=avail {disk} | tail -1)
        {KVAE} train --resume {disk}/run --epochs 2 --quiet 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.code
        free_after=$(df -B1 --output=avail {disk} | tail -1)
        echo "$free_before $free_after" > {tmp_path}/free
        ls -A {disk}/run > {tmp_path}/files
        mount -o remount,ro {disk}
        {KVAE} train {' '.join(SMALL)} --epochs 1 --out {disk}/new 2> {tmp_path}/ro.err; echo $? > {tmp_path}/ro.code
    """
    subprocess.run(["unshare", "-rm", "sh", "-c", script], env=ENV, check=True, timeout=600)
    full_err = (tmp_path / "full.err").read_text().strip()
    assert (tmp_path / "full.code").read_text().strip() == str(cli.EXIT_FAILED), full_err
    assert "No space left on device" in full_err and len(full_err.splitlines()) == 1, full_err
    free_before, free_after = map(int, (tmp_path / "free").read_text().split())
    assert abs(free_after - free_before) < 200_000  # the partial checkpoint was removed
    assert not [f for f in (tmp_path / "files").read_text().split() if ".tmp-" in f]
    ro_err = (tmp_path / "ro.err").read_text().strip()
    assert (tmp_path / "ro.code").read_text().strip() == str(cli.EXIT_BAD_INPUT), ro_err
    assert "cannot be written (read-only" in ro_err and "disk/new" in ro_err and len(ro_err.splitlines()) == 1, ro_err


# ------------------------------------------------------------------- resume
def test_resume_refuses_flags_that_would_change_the_run(run, capsys):
    before = snapshot(run)
    assert run_cli("train", "--resume", run, "--lr", 0.5, "--latent-dim", 3, "--epochs", 2) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "--lr 0.5 (the run has 0.001)", "--latent-dim 3 (the run has 4)")
    assert snapshot(run) == before
    # the same values as the run's are accepted (the original command with --resume added)
    assert run_cli("train", "--resume", run, "--latent-dim", 4, "--dataset", "digits", "--epochs", 1) == 0


def test_a_resumed_run_whose_time_limit_is_spent_trains_no_more_epochs(run, capsys):
    import json

    state = rundir.read_state(run)
    done = state["epochs_done"]
    (run / "state.json").write_text(json.dumps({**state, "train_seconds": 120.0}))  # 2 minutes trained
    assert run_cli("train", "--resume", run, "--epochs", done + 2, "--time-limit", 2, "--quiet") == 0
    assert rundir.read_state(run)["epochs_done"] == done  # not one more epoch
    assert (run / "summary.json").is_file()  # but evaluated
    assert run_cli("train", "--resume", run, "--epochs", done + 2, "--time-limit", 5, "--quiet") == 0
    assert rundir.read_state(run)["epochs_done"] == done + 2  # budget left: it trains


def test_resume_keeps_only_whole_metric_rows(run):
    with open(run / "metrics.csv", "a") as f:
        f.write("1,-40.2,")  # half a row from a killed epoch
    assert run_cli("train", "--resume", run, "--epochs", 2) == 0
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]


# ------------------------------------------------------- one-line errors
@pytest.mark.parametrize("argv, message", [
    (["train", *SMALL, "--out", "{file}"], "is a file, not a directory"),
    (["train", *SMALL, "--out", "/proc/kvae-run"], "cannot create the run directory --out /proc/kvae-run"),
    (["train", *SMALL, "--beta", "inf", "--out", "{tmp}/r"], "--beta must be a finite number"),
    (["train", *SMALL, "--lr", "nan", "--out", "{tmp}/r"], "--lr must be a finite number"),
    (["train", "--resume", "{tmp}/nowhere"], "not a kvae run directory"),
    (["train", "--resume", "{run}", "--force"], "--force does not apply to --resume"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, tmp_path, capsys, run):
    (tmp_path / "file").write_text("not a directory")
    argv = [a.replace("{file}", str(tmp_path / "file")).replace("{tmp}", str(tmp_path)).replace("{run}", str(run))
            for a in argv]
    assert run_cli(*argv) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, message)
    assert not (tmp_path / "r").exists()


def test_download_without_a_network_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    assert run_cli("train", "--dataset", "mnist", "--download", "--out", tmp_path / "r") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "the download failed (URLError")
    assert not (tmp_path / "r").exists()


def test_run_decoder_on_a_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "decoder.tflite"
    bad.write_bytes(b"this is not a flatbuffer")
    done = subprocess.run([sys.executable, "export/run_decoder.py", str(bad), "--out", str(tmp_path / "g.png")],
                          capture_output=True, text=True, env=ENV, cwd=Path(__file__).parent.parent)
    assert done.returncode == cli.EXIT_BAD_INPUT and "Traceback" not in done.stderr  # as kvae's commands
    assert "is not a kvae decoder this runtime can load" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "g.png").exists()


# ----------------------------------------------------------------- leftovers
def test_a_failed_new_run_leaves_no_directory(tmp_path, capsys, monkeypatch):
    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kvae.VAE, "fit", boom)
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", tmp_path / "a" / "b") == cli.EXIT_INTERRUPTED
    assert "Resume with" not in capsys.readouterr().err  # there is nothing to resume
    assert not (tmp_path / "a").exists()


def test_sweep_removes_only_what_dead_processes_left(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".last.tmp-{dead.pid}-abcdef.keras"
    stale_dir = tmp_path / f".deploy.partial-{dead.pid}-abcdef"
    mine = files.temp_path(tmp_path / "state.json")
    for p in (stale, mine):
        p.write_text("x")
    stale_dir.mkdir()
    (tmp_path / ".hidden-but-not-ours").write_text("keep")
    assert sorted(files.sweep(tmp_path)) == sorted([stale, stale_dir])
    assert mine.exists() and (tmp_path / ".hidden-but-not-ours").exists()


def test_files_follow_the_umask(run, tmp_path):
    old = os.umask(0o027)
    try:
        files.write_json(tmp_path / "a.json", {})
        with files.atomic_path(tmp_path / "d", directory=True) as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    for name in ("config.json", "state.json", "last.keras", "best.keras", "summary.json", "curves.png"):
        assert (run / name).stat().st_mode & 0o777 == 0o666 & ~0o022, name  # made under the default umask


def test_the_lock_refuses_a_second_holder_and_is_released(tmp_path):
    lock = files.RunLock(tmp_path)
    with pytest.raises(files.LockedError, match="is in use"):
        files.RunLock(tmp_path)
    lock.release()
    files.RunLock(tmp_path).release()


# ----------------------------------------------------------- the command line
def test_help_and_version_do_not_import_tensorflow():
    """Started as the `kvae` console script (kvae_command), `kvae --help` imports no TensorFlow."""
    code = ("import sys, contextlib, io\n"
            "import kvae_command\n"
            "for argv in (['--version'], ['--help'], ['train', '--help'], ['export', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        kvae_command.main(argv)\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert done.stdout.strip() == "False False", done.stderr


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    argv = [KVAE, "train", "--dataset", "nope", "--out", str(tmp_path / "r")]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KVAE_VERBOSE")}
    quiet = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert quiet.returncode == cli.EXIT_BAD_INPUT
    assert quiet.stderr.strip().splitlines() == ["kvae train: error: Unknown dataset 'nope': use one of "
                                                 "fashion_mnist, mnist, binarized_mnist, digits, a .npz file, "
                                                 "or a folder of images."]


def test_progress_bar_does_not_overshoot_with_steps_per_execution(digits):
    class Record(keras.callbacks.Callback):
        batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    bar = kvae.progress.ProgbarLogger()
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    model.compile(optimizer="adam", steps_per_execution=4)
    model.fit(digits[0][:160], batch_size=16, epochs=1, verbose=1, callbacks=[Record(), bar])
    assert Record.batches[-1] == 11  # Keras reports 12 steps of an epoch of 10 ...
    assert bar.seen == bar.target == 10  # ... and the bar shows 10/10


def test_long_evaluations_show_progress(run, capsys, tmp_path):
    assert run_cli("evaluate", run, "--k", 20) == 0
    assert "359/359" in capsys.readouterr().out  # the bar counts test examples
    assert run_cli("anomalies", run, "--k", 5, "--out", tmp_path / "a.png") == 0
    assert "359/359" in capsys.readouterr().out


def test_force_replaces_only_what_kvae_wrote(finished_run, tmp_path, capsys):
    """`--force` deletes nothing that kvae did not write: a folder that is not a run or an export,
    or a run or export holding a file of the user's, is refused in one line naming a file it would
    delete, and stays byte-identical; a run (or export) of kvae's own is still replaced."""
    folder = tmp_path / "u"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", folder, "--force") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "thesis.txt", "--force")
    assert (folder / "thesis.txt").read_text() == "precious" and sorted(os.listdir(folder)) == ["thesis.txt"]

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", run, "--force") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "notes.txt")
    assert snapshot(run) == before

    export = tmp_path / "export"
    export.mkdir()
    (export / "keep.txt").write_text("mine")
    assert run_cli("export", run, "--format", "onnx", "--out", export, "--force") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "keep.txt", "--force")
    assert sorted(os.listdir(export)) == ["keep.txt"]

    (run / "notes.txt").unlink()
    assert run_cli("train", *SMALL, "--epochs", 1, "--out", run, "--force") == 0
    shutil.rmtree(export)
    assert run_cli("export", run, "--format", "onnx", "--out", export) == 0
    assert run_cli("export", run, "--format", "onnx", "--out", export, "--force") == 0
    capsys.readouterr()


def test_resume_epochs_plus_n_trains_n_more_and_a_smaller_total_or_a_no_op_changes_nothing(finished_run, tmp_path,
                                                                                             capsys):
    """`--epochs +N` on resume is N more epochs; a total below the epochs done is refused (the run is
    never rewritten to a smaller count); a resume with nothing left to do writes nothing at all."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    assert run_cli("train", "--resume", run, "--epochs", "+1", "--quiet") == 0
    assert rundir.read_state(run)["epochs_done"] == 2 and rundir.load_config(run).epochs == 2
    capsys.readouterr()
    before = snapshot(run)
    assert run_cli("train", "--resume", run, "--epochs", 1, "--quiet") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "--epochs 1", "2 epochs")
    assert snapshot(run) == before
    assert run_cli("train", "--resume", run, "--epochs", 2, "--quiet") == 0
    assert "already finished its 2 epochs" in capsys.readouterr().out
    assert snapshot(run) == before  # no new TensorBoard event file, no rewritten summary


def test_the_device_scorer_refuses_an_empty_input_in_one_line_with_exit_2(tmp_path, capsys):
    """export/score.py reads the images before either runtime runs: 0 images is one line and exit 2
    (it was an onnxruntime traceback, and an empty table with exit 0 under TFLite)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("score", Path(__file__).parent.parent / "export" / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8, 1), "float32"))
    with pytest.raises(SystemExit) as stop:
        score.load_images(tmp_path / "empty.npy", (8, 8, 1))
    assert stop.value.code == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"score: {tmp_path / 'empty.npy'} holds no images (shape (0, 8, 8, 1))"


def test_an_export_keeps_its_scratch_files_in_its_own_work_folder(finished_run, tmp_path, monkeypatch):
    """The SavedModel check's z.npy / out.npz and the TFLite conversion's SavedModel live inside the
    export's hidden work folder (which the next export sweeps after a kill -9), never in the system's
    temp folder, where nothing would remove them."""
    import tempfile

    from kvae.exporters import savedmodel

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    seen = []
    real_run = savedmodel.subprocess.run

    def ours():  # (TensorFlow's AutoGraph writes its own generated sources there, and keeps them)
        return sorted(n for n in os.listdir(system_temp) if not n.startswith("__autograph_generated_file"))

    def run(*args, **kwargs):  # what is on disk while the server-side check runs
        seen.append((ours(), [str(a) for a in args[0]]))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(savedmodel.subprocess, "run", run)
    out = tmp_path / "out"
    assert run_cli("export", finished_run, "--format", "savedmodel,tflite", "--tflite-variants", "float32",
                   "--out", out) == 0
    assert seen and all(listing == [] for listing, _ in seen)
    assert all(f".{out.name}.partial-" in argv[-1] for _, argv in seen)  # out.npz in the work folder
    assert ours() == []


@pytest.mark.parametrize("make", ["too_long", "loop", "read_only"])
def test_an_unwritable_out_is_refused_in_one_line_naming_it_with_exit_2(finished_run, tmp_path, capsys, monkeypatch,
                                                                        make):
    """A name longer than the file system takes, a symbolic-link loop, or a folder that cannot be
    written: `train`, `export` and `sample` refuse it with exit 2, naming the --out given (not a
    hidden temporary name), before any work, and leave nothing behind."""
    if make == "too_long":
        out = tmp_path / ("x" * 300)
    elif make == "loop":
        out = tmp_path / "loop"
        out.symlink_to(out)
        Path(f"{out}.png").symlink_to(f"{out}.png")
    else:
        out = tmp_path / "ro" / "out"
        out.parent.mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != out.parent and real_access(p, mode, **kw))
    before = sorted(os.listdir(tmp_path)) + (sorted(os.listdir(out.parent)) if make == "read_only" else [])
    for argv in (["train", *SMALL, "--epochs", 1, "--out", out], ["export", finished_run, "--format", "onnx", "--out", out],
                 ["sample", finished_run, "--out", f"{out}.png"]):
        assert run_cli(*argv) == cli.EXIT_BAD_INPUT, argv
        err = one_line_error(capsys)
        assert ".partial-" not in err and ".tmp-" not in err, err
        assert str(out)[:40] in err and ("too long" in err or "leads nowhere" in err or "cannot be written" in err), err
    after = sorted(os.listdir(tmp_path)) + (sorted(os.listdir(out.parent)) if make == "read_only" else [])
    assert after == before


@pytest.mark.parametrize("n, form", [(1, "npz"), (2, "npy")])
def test_a_dataset_too_small_to_split_says_how_many_and_what_each_split_needs(tmp_path, capsys, n, form):
    path = tmp_path / f"tiny.{form}"
    x = np.zeros((n, 8, 8, 1), "float32")
    np.save(path, x) if form == "npy" else np.savez(path, x=x)
    assert run_cli("train", "--dataset", path, "--epochs", 1, "--quiet", "--out", tmp_path / "r") == cli.EXIT_BAD_INPUT
    one_line_error(capsys, f"tiny.{form} has {n} example", "too few to split", "at least one each", "at least 3")
    assert not (tmp_path / "r").exists()


def test_import_kvae_is_enough_for_keras_to_load_a_kvae_file(tmp_path):
    """A Keras user loads models with Keras: after `import kvae`, `keras.saving.load_model` rebuilds
    a VAE with a flow posterior and a VampPrior in a fresh process (it raised "Could not locate
    class 'VAE'")."""
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]), posterior="iaf",
                     prior="vamp_base")
    model.compile()
    model.save(tmp_path / "m.keras")
    z = np.zeros((2, 2), "float32")
    np.save(tmp_path / "want.npy", model.decode(z).numpy())
    code = ("import sys, numpy as np\nimport kvae, keras\n"
            "m = keras.saving.load_model(sys.argv[1] + '/m.keras')\n"
            "np.testing.assert_allclose(m.decode(np.zeros((2, 2), 'float32')).numpy(), np.load(sys.argv[1] + '/want.npy'))\n"
            "print(type(m).__name__, type(m.posterior).__name__)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0 and done.stdout.split() == ["VAE", "IAFPosterior"], done.stderr[-2000:]


def test_a_run_on_a_relative_data_path_works_from_any_directory_and_says_the_flag_when_the_data_moved(
        tmp_path, capsys, monkeypatch):
    """The data path is recorded absolute (a relative one broke `evaluate` and `--resume` from another
    directory); data that has moved is one line naming the flag, and --resume --dataset records the
    new place; repeating the first command with --resume (the relative path) is the same run."""
    from sklearn.datasets import load_digits

    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "d.npy", (load_digits().images[:300, ..., None] * 255 / 16).astype("uint8"))
    monkeypatch.chdir(tmp_path)
    assert run_cli("train", "--dataset", "data/d.npy", "--epochs", 1, "--latent-dim", 2, "--quiet", "--out", "runs/r") == 0
    assert run_cli("train", "--resume", "runs/r", "--dataset", "data/d.npy", "--epochs", 1, "--quiet") == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = tmp_path / "runs" / "r"
    assert run_cli("evaluate", run, "--k", 0) == 0
    (tmp_path / "data").rename(tmp_path / "moved")
    capsys.readouterr()
    assert run_cli("evaluate", run, "--k", 0) == cli.EXIT_BAD_INPUT
    one_line_error(capsys, "d.npy, which is not there any more", f"--resume {run} --dataset NEW_PATH")
    assert run_cli("train", "--resume", run, "--dataset", tmp_path / "moved" / "d.npy", "--epochs", 2, "--quiet") == 0
    assert rundir.load_config(run).dataset == str(tmp_path / "moved" / "d.npy")
    assert run_cli("evaluate", run, "--k", 0) == 0
