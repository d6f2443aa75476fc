"""Training runs: `train` a new run into a directory, `resume` one, and
`evaluate` its model. The directory's layout and its readers are in
kvae.rundir; the settings (TrainConfig) in kvae.config. Over 350 lines: the
trust rules below are kept with the code that keeps them (claim, lock,
validate, then write), and each public function documents its arguments.

Trust rules, each tested by fault injection (tests/test_faults.py):
  - nothing on disk changes until the config, the data (every split, whole)
    and the model have been validated; `--force` deletes the old run only then;
  - one process per run directory (an exclusive lock on the directory);
  - every file is written whole or not at all (kvae.files), and a failed or
    interrupted new run that finished no epoch leaves no directory behind;
  - `--resume` refuses a missing or corrupt state.json or config.json, and
    flags that would change the run, naming them.
"""

import contextlib
import csv
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from kvae import data as kdata
from kvae import files
from kvae.config import RunError, TrainConfig, RESUMABLE, flag
from kvae.rundir import CONFIG_FILE, STATE_FILE, load_config, read_state
from kvae.saving import load_model

__all__ = ["prepare_data", "prepare_inputs", "stream_inputs", "build_model", "train", "resume", "resume_config", "evaluate",
           "weights_digest"]
#: settings that may change when a run is resumed (everything else is the run)
# ------------------------------------------------------------------ data
def _needs_unit_interval(cfg):
    """What in the run needs pixels in [0, 1] (for messages), or None."""
    from kvae import distributions

    likelihood = distributions.get_likelihood(cfg.likelihood)
    return (f"the {likelihood.name} likelihood" if likelihood.unit_interval
            else f"--binarize {cfg.binarization}" if cfg.binarization != "none" else None)


def prepare_data(cfg):
    """The dataset of a run, checked whole (every split) and binarised as configured.

    Raises DataError before anything is trained: NaN/Inf anywhere, values
    outside [0, 1] for a Bernoulli-type likelihood or any binarisation, labels
    out of range for a conditional run.

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        kvae.data.Dataset, validation and test binarised once (fixed draws),
        train as configured (a 'dynamic' draw happens in the pipeline).
    """
    unit = _needs_unit_interval(cfg)
    mode = cfg.binarization
    # Validation and test get one fixed draw, so their ELBO is comparable across epochs.
    fixed = "static" if mode == "dynamic" else mode
    if cfg.streamed:  # train is read and checked batch by batch; the held-out splits are in memory
        ds = kdata.load(cfg.dataset, seed=cfg.seed, stream=True, unit=unit, threshold=mode == "threshold",
                        data_dir=cfg.data_dir)
        if cfg.conditional and ds.num_classes is None:
            raise RunError(f"--conditional needs labels, and {cfg.dataset} has none.")
    else:
        ds = kdata.load(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, seed=cfg.seed)
        for split in ("train", "validation", "test"):
            x, y = getattr(ds, split)
            kdata.check(x, y, unit_interval=unit, num_classes=ds.num_classes if cfg.conditional else None,
                        where=f"{ds.source}, {split} split")
        ds.train = (kdata.binarize(ds.train[0], mode, cfg.seed + 3), ds.train[1])
    ds.validation = (kdata.binarize(ds.validation[0], fixed, cfg.seed + 1), ds.validation[1])
    ds.test = (kdata.binarize(ds.test[0], fixed, cfg.seed + 2), ds.test[1])
    return ds


def prepare_inputs(cfg, source, input_shape):
    """Inputs from outside the run (`kvae.data.read_inputs`), checked and
    binarised as the run's test split is, to score with the run's model.

    Args:
        cfg: kvae.config.TrainConfig of the run; source: what `read_inputs` reads;
        input_shape: the model's input shape.

    Returns:
        (x float32 [N, *input_shape], labels or None, description).
    """
    x, y, where = kdata.read_inputs(source, data_dir=cfg.data_dir)
    unit = _needs_unit_interval(cfg)
    kdata.check(x, None, input_shape=tuple(input_shape), unit_interval=unit, where=where)
    mode = "static" if cfg.binarization == "dynamic" else cfg.binarization
    return kdata.binarize(x, mode, cfg.seed + 2), y, where


def stream_inputs(cfg, source, input_shape):
    """A streamed source (`kvae.data.open_source`: .npy, .npz, image folder,
    prepared folder) to score with a run's model, scaled and checked as the
    run's data is, batch by batch.

    Args:
        cfg: kvae.config.TrainConfig of the run; source: a path;
        input_shape: the model's input shape.

    Returns:
        (a Subset or TFRecordSource, labels: True if it has labels else None,
        binarize: whether to draw a fixed binarisation, description).
    """
    unit = _needs_unit_interval(cfg)
    src = kdata.open_source(source)
    shape = tuple(src.shape) + ((1,) if len(src.shape) == 2 else ())
    kdata.check_shape((0, *shape), tuple(input_shape), src.where)
    if isinstance(src, kdata.SequentialSource):
        if cfg.binarization == "threshold":
            raise RunError(f"{source}: the run binarises by threshold, which is not applied to prepared data.")
        has = src.has_labels
    else:
        src = kdata.Subset(src, np.arange(src.n), kdata.scale_of(src)[0], unit,
                             threshold=cfg.binarization == "threshold")
        src.read(np.arange(min(len(src), 256)))  # the first batch, checked before scoring
        has = src.source.labels is not None
    return src, (True if has else None), cfg.binarization in ("static", "dynamic"), str(source)


def _pipelines(cfg, ds, model, epoch):
    import tensorflow as tf

    labels = (lambda split: split[1] if model.conditional else None)

    def train(shard=None):
        return kdata.pipeline(ds.train[0], labels(ds.train), cfg.batch_size, shuffle=True, seed=cfg.seed,
                              dynamic_binarize=cfg.binarization == "dynamic", epoch=epoch, perturb=cfg.perturb,
                              shard=shard)
    val = kdata.pipeline(ds.validation[0], labels(ds.validation), cfg.batch_size, shuffle=False)
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # each worker reads only its rows of every global batch (whole batches only)
        return strategy.distribute_datasets_from_function(
            lambda ctx: train((ctx.input_pipeline_id, ctx.num_input_pipelines))), val
    return train(), val


# ----------------------------------------------------------------- model
def _strategy(cfg):
    """The run's tf.distribute strategy (None for 'none'), created before
    TensorFlow initialises (a multi-worker strategy configures collectives),
    and whether this process is the one that writes the run directory."""
    import tensorflow as tf

    chief = _is_chief(cfg)
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


def _is_chief(cfg):
    """Whether this process writes the run directory: always, except in a
    multi-worker run, where only the chief does (TF_CONFIG's task 'chief', or
    worker 0 of a cluster without one). RunError for a missing or malformed TF_CONFIG."""
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


def _worker_run(cfg, run_dir, strategy, resuming, verbose, log):
    """A multi-worker run's non-chief process: trains in step with the chief
    into a temporary directory (removed at the end) and never writes `run_dir`;
    on resume it reads the chief's last checkpoint and state from `run_dir`."""
    import tempfile

    for old in Path(tempfile.gettempdir()).glob("kvae-worker-*-*"):  # left by a killed worker of ours
        with contextlib.suppress(ValueError, OSError):
            pid = int(old.name.split("-")[2])
            if old.stat().st_uid == os.getuid() and not Path(f"/proc/{pid}").exists():
                shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f"kvae-worker-{os.getpid()}-"))
    log(f"a non-chief worker: the chief writes {run_dir}; this worker's checkpoints go to {work} (removed at the end)")
    try:
        _setup_runtime(cfg)
        ds = prepare_data(cfg)
        state = read_state(run_dir) if resuming else {"epochs_done": 0}
        with strategy.scope():
            model = load_model(run_dir, "last") if state["epochs_done"] else _new_model(cfg, ds)
        _write_config(work, cfg, model, ds)
        for name in ("last.keras", "best.keras") if state["epochs_done"] else ():
            shutil.copyfile(run_dir / name, work / name)
        files.write_json(work / STATE_FILE, state)
        summary = _fit(cfg, work, ds, model, state, verbose, log, shown_dir=run_dir)
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


def recipe_of(cfg):
    """The `kvae.recipes.Recipe` a config names, or None.

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        Recipe or None.

    Raises:
        RunError naming --recipe and the recipes if the name is not one.
    """
    if cfg.recipe is None:
        return None
    from kvae import recipes

    if cfg.recipe not in recipes.RECIPES:
        raise RunError(f"--recipe: unknown recipe {cfg.recipe!r}; choose one of {', '.join(recipes.names())}")
    return recipes.RECIPES[cfg.recipe]


def build_model(cfg, ds):
    """The model and optimizer a run trains.

    Args:
        cfg: kvae.config.TrainConfig; ds: kvae.data.Dataset (its shape and classes).

    Returns:
        (an uncompiled kvae.VAE, a keras.optimizers.Adam).
    """
    import keras

    import kvae

    if cfg.conditional and not ds.num_classes:
        raise RunError(f"--conditional needs labels, and {cfg.dataset} has none.")
    if cfg.recipe:
        return recipe_of(cfg).build_model(cfg, ds)
    return kvae.VAE(
        input_shape=ds.input_shape, latent_dim=cfg.latent_dim, encoder=cfg.network,
        decoder=cfg.network, likelihood=cfg.likelihood, posterior=cfg.posterior, prior=cfg.prior,
        beta=cfg.beta, num_classes=ds.num_classes if cfg.conditional else None, seed=cfg.seed,
        objective=cfg.objective, num_samples=cfg.num_samples, free_bits=cfg.free_bits,
        capacity_gamma=cfg.capacity_gamma,
    ), keras.optimizers.Adam(cfg.learning_rate)


# ------------------------------------------------------------------ runs
def _truncate_metrics(run_dir, epochs_done):
    """Keep only the rows of finished epochs (a crash may leave one more, or half a row)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept, seen = [rows[0]], set()
    for r in rows[1:]:
        if len(r) == len(rows[0]) and r[0].isdigit() and int(r[0]) < epochs_done and r[0] not in seen:
            kept.append(r)
            seen.add(r[0])
    out = io.StringIO()
    csv.writer(out).writerows(kept)
    files.write_text(path, out.getvalue())


def _setup_runtime(cfg):
    import keras
    import tensorflow as tf

    if cfg.strategy == "none":
        try:  # leaves both cores to the training step (bench/RESULTS.md)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF already initialised (e.g. called from Python, not the CLI)
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy("float32" if cfg.mixed_precision == "none" else cfg.mixed_precision)


def _lock(run_dir):
    try:
        return files.RunLock(run_dir, "another kvae process")
    except files.LockedError as e:
        raise RunError(str(e)) from None


def _claim_new(run_dir, force):
    """Create (or take) `run_dir` for a new run and lock it, deleting nothing.
    Returns (lock, directories this call created)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a directory.")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise RunError(f"{run_dir} already holds files; use --force to replace them, "
                       "--resume to continue that run, or another --out.")
    created = []
    try:
        for d in [*reversed(run_dir.parents), run_dir]:
            if not d.exists():
                d.mkdir()
                created.append(d)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable (read-only file system or no permission)")
    except OSError as e:
        _remove_created(created)
        raise RunError(f"cannot create the run directory --out {run_dir}: {e.strerror or e}.") from None
    try:
        return _lock(run_dir), created
    except RunError:
        _remove_created(created)
        raise


def _remove_created(created):
    for d in reversed(created):
        shutil.rmtree(d, ignore_errors=True)


def _empty(run_dir):
    for p in run_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _write_config(run_dir, cfg, model, ds):
    import kvae

    files.write_json(run_dir / CONFIG_FILE, {
        "kvae_version": kvae.__version__, "train": asdict(cfg), "model": model.get_config(),
        "data": {"name": ds.name, "source": ds.source, "input_shape": list(ds.input_shape),
                 "num_classes": ds.num_classes, "notes": ds.notes},
    })


def _new_model(cfg, ds):
    model, optimizer = build_model(cfg, ds)
    # more steps per execution than an epoch has would confuse the progress bar
    steps = math.ceil(len(ds.train[0]) / cfg.batch_size)
    if cfg.strategy == "multiworker":  # Keras 3.15 fails with more across workers (keras-team/keras#19246)
        steps = 1
    model.compile(optimizer=optimizer, steps_per_execution=min(cfg.steps_per_execution, steps))
    return model


def train(cfg, run_dir, force=False, verbose=1, log=print):
    """Train a new run into `run_dir`.

    Args:
        cfg: kvae.config.TrainConfig; run_dir: str or Path; force: bool,
        replace a run there; verbose: 0 or 1 (progress bar); log: print-like.

    Returns:
        dict, the summary written to summary.json (test metrics, seconds, epochs).

    Everything is validated (config, every data split, the model) before the
    disk changes; with `force` an existing run is deleted only then. If this
    call fails or is interrupted before its first epoch finishes, it removes
    what it wrote (a new directory entirely), so the command can simply be run
    again. Raises RunError or kdata errors for bad input.
    """
    cfg.validate()
    recipe_of(cfg)
    run_dir = Path(run_dir)
    strategy, chief = _strategy(cfg)
    if not chief:
        return _worker_run(cfg, run_dir, strategy, False, verbose, log)
    lock, created = _claim_new(run_dir, force)
    wrote = False
    try:
        _setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        with strategy.scope() if strategy else contextlib.nullcontext():
            model = _new_model(cfg, ds)
        # Validated: only now may the old run go.
        if force:
            _empty(run_dir)
        wrote = True
        _write_config(run_dir, cfg, model, ds)
        files.write_json(run_dir / STATE_FILE, {"epochs_done": 0})
        return _fit(cfg, run_dir, ds, model, {"epochs_done": 0}, verbose, log)
    except BaseException:
        if wrote and not _epochs_done(run_dir):
            if created:
                _remove_created(created)
            else:
                _empty(run_dir)
        elif created and not wrote:
            _remove_created(created)
        raise
    finally:
        lock.release()


def _epochs_done(run_dir):
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text()).get("epochs_done", 0)
    except (OSError, ValueError, AttributeError):
        return 0


def resume_config(run_dir, changes=None):
    """The run's saved config with `changes` ({field: value}) applied.

    Only `RESUMABLE` fields may change (epochs: the new total; data_dir and
    download: where the same data is found). Any other field given with a value
    that differs from the run's raises RunError naming every such flag; equal
    values are accepted, so a command can be repeated with --resume added.

    Args:
        run_dir: str or Path; changes: {TrainConfig field: value} or None.

    Returns:
        kvae.config.TrainConfig, validated.
    """
    cfg = load_config(run_dir)
    refused = []
    for key, value in (changes or {}).items():
        if key not in TrainConfig.__dataclass_fields__:
            raise RunError(f"unknown setting {key!r}")
        if key in RESUMABLE:
            setattr(cfg, key, value)
        elif getattr(cfg, key) != value:
            refused.append(f"{flag(key)} {value} (the run has {getattr(cfg, key)})")
    if refused:
        raise RunError(f"--resume continues {run_dir} as recorded in its {CONFIG_FILE}; these flags would "
                       f"change the run and cannot be given on resume: {'; '.join(refused)}. "
                       "Start a new run with --out to change them.")
    cfg.validate()
    recipe_of(cfg)
    return cfg


def resume(run_dir, changes=None, verbose=1, log=print):
    """Continue a run from its last finished epoch (see `resume_config` for
    `changes`). Data order and binarisation depend only on (seed, epoch), so
    the result equals an uninterrupted run's.

    Args:
        run_dir: str or Path; changes: as in `resume_config`; verbose, log: as in `train`.

    Returns:
        dict, the summary written to summary.json.
    """
    run_dir = Path(run_dir)
    cfg = resume_config(run_dir, changes)
    strategy, chief = _strategy(cfg)
    if not chief:
        return _worker_run(cfg, run_dir, strategy, True, verbose, log)
    lock = _lock(run_dir)
    try:
        state = read_state(run_dir)
        for p in files.sweep(run_dir, recursive=True):
            log(f"removed {p.name}, left by a killed process")
        _setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        with strategy.scope() if strategy else contextlib.nullcontext():
            # no finished epoch: the same seed rebuilds the same initial model
            model = load_model(run_dir, "last") if state["epochs_done"] else _new_model(cfg, ds)
        log(f"resuming {run_dir} after epoch {state['epochs_done']} of {cfg.epochs}")
        if state["epochs_done"] >= cfg.epochs:
            log(f"{run_dir} already finished its {cfg.epochs} epochs; pass --epochs N to train further.")
        _truncate_metrics(run_dir, state["epochs_done"])
        raw = json.loads((run_dir / CONFIG_FILE).read_text())
        if raw["train"] != asdict(cfg):
            raw["train"] = asdict(cfg)
            files.write_json(run_dir / CONFIG_FILE, raw)
        return _fit(cfg, run_dir, ds, model, state, verbose, log)
    finally:
        lock.release()


def _fit(cfg, run_dir, ds, model, state, verbose, log, shown_dir=None):
    import keras
    import tensorflow as tf

    from kvae import callbacks as kcallbacks
    from kvae.extras import require
    from kvae.optimizers import ValidateAverages

    require("tensorboard", "plots", "The run directory's TensorBoard logs")
    epoch = tf.Variable(state["epochs_done"], dtype=tf.int64, trainable=False)
    train_ds, val_ds = _pipelines(cfg, ds, model, epoch)
    fixed = ds.validation[0][:16]
    fixed_labels = ds.validation[1][:16] if ds.validation[1] is not None else None
    recipe = recipe_of(cfg)
    # "best" is the best validation bound: the ELBO itself while a warm-up or capacity weights the KL
    weighted = cfg.kl_warmup or cfg.capacity_gamma > 0
    monitor = recipe.monitor if recipe else (("val_elbo", "max") if weighted else ("val_loss", "min"))
    cbs = [
        kcallbacks.SetEpoch(epoch),
        ValidateAverages(),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True),
        kcallbacks.RunCheckpoint(run_dir, *monitor),
        kcallbacks.TrainingCurves(run_dir),
        kcallbacks.ImageGrids(run_dir, fixed, fixed_labels, seed=cfg.seed),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
    ]
    if cfg.capacity_gamma > 0:
        ramp = cfg.kl_warmup or max(1, cfg.epochs // 2)
        cbs.insert(1, kcallbacks.CapacityAnnealing(cfg.max_capacity, ramp))
    elif cfg.kl_warmup:
        cbs.insert(1, kcallbacks.KLWarmup(cfg.kl_warmup, schedule=cfg.kl_schedule))
    # a resumed run continues its patience, its time budget and its cosine (state.json keeps them)
    cbs += recipe.callbacks(state) if recipe else []
    cosine = cfg.lr_decay == "cosine"
    cbs += [kcallbacks.TimeLimit(cfg.time_limit, cosine=cosine, initial_lr=cfg.learning_rate, epochs=cfg.epochs,
                                 spent_seconds=state.get("train_seconds", 0.0))] if cfg.time_limit or cosine else []
    epochs, spent = cfg.epochs, state.get("train_seconds", 0.0)
    if cfg.time_limit and spent >= 60.0 * cfg.time_limit:  # a resumed run whose budget is used up
        log(f"--time-limit {cfg.time_limit:g} is spent ({spent / 60:.1f} minutes trained): no new epoch")
        epochs = state["epochs_done"]
    start = time.perf_counter()
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=state["epochs_done"],
                  callbacks=cbs, verbose=verbose, shuffle=False)  # the pipeline shuffles
    except tf.errors.UnavailableError as e:  # a multi-worker run lost a worker
        if cfg.strategy != "multiworker":
            raise
        import re

        lost = sorted(set(re.findall(r"^(/job:\S+)$", str(e), re.MULTILINE))) or [str(e).splitlines()[0][:200]]
        raise RunError(f"a worker of this multi-worker run stopped ({', '.join(lost)}); the run keeps its "
                       f"{read_state(run_dir)['epochs_done']} finished epochs: start every worker again "
                       f"with --resume {shown_dir or run_dir}.") from None
    except tf.errors.OpError as e:  # a streamed batch that failed its checks: the one-line reason
        from kvae.data import as_data_error

        error = as_data_error(e)
        if error is None:
            raise
        raise error from None
    elapsed = time.perf_counter() - start
    state = read_state(run_dir)
    if "stopped_on_nan_at_epoch" in state:
        kept = (f"The last good checkpoint (epoch {state['epochs_done']}) is {run_dir / 'last.keras'}."
                if state["epochs_done"] else "No epoch finished, so there is no checkpoint.")
        raise FloatingPointError(
            f"The loss became NaN/Inf in epoch {state['stopped_on_nan_at_epoch']}; training stopped. "
            f"{kept} Try a lower --lr."
        )
    if cfg.eval_k:
        split = "examples of the valid split (no test split)" if ds.test_is_validation else "test examples"
        log(f"evaluating the best epoch ({state.get('best_epoch')}): log p(x) with k={cfg.eval_k} importance "
            f"samples on {len(ds.test[0])} {split}")
    start = time.perf_counter()
    summary = evaluate(run_dir, ds=ds, model=load_model(run_dir, "best"), k=cfg.eval_k, verbose=verbose)
    # training time summed over resumed processes (state.json), as epochs_done is
    summary.update(train_seconds=state.get("train_seconds", round(elapsed, 1)), epochs_done=state["epochs_done"],
                   eval_seconds=round(time.perf_counter() - start, 1))
    files.write_json(run_dir / "summary.json", summary)
    return summary


def evaluate(run_dir, ds=None, model=None, which="best", k=0, seed=0, verbose=0):
    """Test-set metrics of a run's model, in nats per example (see
    `kvae.evaluate.summary`); with k >= 1 also the importance-sampled log p(x).

    Args:
        run_dir: str or Path; ds: its Dataset if loaded already; model: its
        model if loaded already; which: 'best' or 'last'; k, seed, verbose:
        as in `kvae.evaluate.summary`.

    Returns:
        dict: checkpoint, test_examples, test_elbo and test_<key> for every
        key of `kvae.evaluate.summary`.
    """
    from kvae import evaluate as kevaluate

    cfg = load_config(run_dir)
    ds = ds or prepare_data(cfg)
    model = model or load_model(run_dir, which)
    labels = ds.test[1] if model.conditional else None
    result = kevaluate.summary(model, ds.test[0], labels, k=k, seed=seed, verbose=verbose)
    out = {"checkpoint": which, "test_examples": result.pop("examples"),
           "test_elbo": -result.pop("negative_elbo")}
    out.update({f"test_{key}": value for key, value in result.items()})
    return out
