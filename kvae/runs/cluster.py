"""Multi-worker runs: the strategy, which process writes the run directory, a
non-chief worker's run, and the weights digest that shows the workers ended in step."""

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from kvae import files
from kvae.config import RunError
from kvae.rundir import STATE_FILE, read_state
from kvae.runs.building import new_model, setup_runtime, write_config
from kvae.runs.data import prepare_data
from kvae.runs.fitting import fit_run
from kvae.saving import load_model

__all__ = ["strategy_for", "is_chief", "worker_run", "weights_digest"]


def strategy_for(cfg):
    """The run's tf.distribute strategy (None for 'none'), created before
    TensorFlow initialises (a multi-worker strategy configures collectives),
    and whether this process is the one that writes the run directory.

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        (tf.distribute.Strategy or None, bool).
    """
    import tensorflow as tf

    chief = is_chief(cfg)
    if cfg.strategy == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif cfg.strategy == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        return None, True
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise RunError(f"--batch-size {cfg.batch_size} must be a multiple of the {strategy.num_replicas_in_sync} "
                       "replicas: every replica takes an equal part of each batch.")
    return strategy, chief


def is_chief(cfg):
    """Whether this process writes the run directory: always, except in a
    multi-worker run, where only the chief does (TF_CONFIG's task 'chief', or
    worker 0 of a cluster without one).

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        bool.

    Raises:
        RunError for a missing or malformed TF_CONFIG.
    """
    if cfg.strategy != "multiworker":
        return True
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise RunError("--strategy multiworker needs TF_CONFIG (the cluster and this process's task) in the "
                       "environment: see the README's \"Several machines\".")
    try:
        config = json.loads(raw)
        cluster, kind, index = config["cluster"], config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"TF_CONFIG is not JSON with a cluster and a task {{type, index}} ({e!r}): {raw[:200]}") from None
    return kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)


def worker_run(cfg, run_dir, strategy, resuming, verbose, log):
    """A multi-worker run's non-chief process: trains in step with the chief
    into a temporary directory (removed at the end) and never writes `run_dir`;
    on resume it reads the chief's last checkpoint and state from `run_dir`.

    Args:
        cfg: TrainConfig; run_dir: Path (the chief's); strategy: the MultiWorkerMirroredStrategy;
        resuming: bool; verbose: 0 or 1; log: print-like.

    Returns:
        dict, the summary, with worker=True and the final weights' digest.
    """
    import tempfile

    for old in Path(tempfile.gettempdir()).glob("kvae-worker-*-*"):  # left by a killed worker of ours
        with contextlib.suppress(ValueError, OSError):
            pid = int(old.name.split("-")[2])
            if old.stat().st_uid == os.getuid() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"kvae-worker-{os.getpid()}-"))
    log(f"a non-chief worker: the chief writes {run_dir}; this worker's checkpoints go to {work} (removed at the end)")
    try:
        setup_runtime(cfg)
        ds = prepare_data(cfg)
        state = read_state(run_dir) if resuming else {"epochs_done": 0}
        with strategy.scope():
            model = load_model(run_dir, "last") if state["epochs_done"] else new_model(cfg, ds)
        write_config(work, cfg, model, ds)
        for name in ("last.keras", "best.keras") if state["epochs_done"] else ():
            shutil.copyfile(run_dir / name, work / name)
        files.write_json(work / STATE_FILE, state)
        summary = fit_run(cfg, work, ds, model, state, verbose, log, shown_dir=run_dir)
        summary.update(worker=True, weights_sha256=weights_digest(load_model(work, "last")))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def weights_digest(model):
    """SHA-256 of a model's weights (values, shapes and dtypes, in order): the
    same on every worker of a multi-worker run that ended in step.

    Args:
        model: a Keras model.

    Returns:
        str, 64 hex digits.
    """
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        digest.update(f"{w.dtype.str}{w.shape}".encode())
        digest.update(w.tobytes())
    return digest.hexdigest()
