"""A training run on disk.

RUN_DIR/
  config.json          everything needed to rebuild the model and its data
  state.json           epochs finished, best validation loss (written atomically)
  last.keras           model + optimizer after the last finished epoch
  best.keras           the model with the best validation loss
  metrics.csv          one row per epoch (Keras CSVLogger)
  curves.png           ELBO / reconstruction / KL per epoch
  images/              samples_epoch_NNN.png, reconstructions_epoch_NNN.png
  tensorboard/         TensorBoard logs
  summary.json         test metrics and wall time, when training ends

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
import dataclasses
import io
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kvae import data as kdata
from kvae import files

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
#: settings that may change when a run is resumed (everything else is the run)
RESUMABLE = ("epochs", "data_dir", "download")
_FLAGS = {"learning_rate": "--lr"}


def flag(field):
    """The command-line flag of a TrainConfig field, e.g. 'learning_rate' -> '--lr'."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


class RunError(ValueError):
    """A run directory that cannot be used as asked."""


@dataclass
class TrainConfig:
    """What `kvae train` was asked for; stored in config.json."""

    dataset: str = "fashion_mnist"
    data_dir: str = None
    download: bool = False
    binarize: str = None  # None: 'dynamic' for Bernoulli likelihoods, else 'none'
    network: str = "mlp"
    latent_dim: int = 16
    likelihood: str = "bernoulli"
    posterior: str = "diagonal"
    prior: str = "standard_normal"
    beta: float = 1.0
    objective: str = "elbo"
    num_samples: int = 1
    free_bits: float = 0.0
    kl_warmup: int = 0  # epochs of KL warm-up (0: none)
    kl_schedule: str = "linear"
    capacity_gamma: float = 0.0  # > 0: Burgess et al. capacity objective
    max_capacity: float = 25.0  # nats, reached after --kl-warmup epochs (or half the epochs)
    conditional: bool = False
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    mixed_precision: str = "none"
    strategy: str = "none"
    steps_per_execution: int = 32
    seed: int = 0

    def validate(self):
        finite = [f"{flag(k)} must be a finite number, got {getattr(self, k)}"
                  for k in ("beta", "learning_rate", "free_bits", "capacity_gamma", "max_capacity")
                  if not math.isfinite(getattr(self, k))]
        if finite:
            raise RunError(finite[0])
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.latent_dim >= 1, f"--latent-dim must be >= 1, got {self.latent_dim}"),
            (self.beta >= 0, f"--beta must be >= 0, got {self.beta}"),
            (self.num_samples >= 1, f"--num-samples must be >= 1, got {self.num_samples}"),
            (self.free_bits >= 0, f"--free-bits must be >= 0, got {self.free_bits}"),
            (self.kl_warmup >= 0, f"--kl-warmup must be >= 0, got {self.kl_warmup}"),
            (self.kl_schedule in ("linear", "cyclical"), "--kl-schedule must be linear or cyclical"),
            (self.capacity_gamma >= 0, f"--capacity-gamma must be >= 0, got {self.capacity_gamma}"),
            (self.max_capacity >= 0, f"--max-capacity must be >= 0, got {self.max_capacity}"),
            (not (self.kl_warmup and self.objective == "iwae"),
             "--kl-warmup weights the KL term of the elbo objective; the iwae bound has none"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"--lr must be > 0, got {self.learning_rate}"),
            (self.steps_per_execution >= 1, f"--steps-per-execution must be >= 1, got {self.steps_per_execution}"),
            (self.binarize in (None,) + kdata.BINARIZE, f"--binarize must be one of {', '.join(kdata.BINARIZE)}"),
            (self.mixed_precision in ("none", "mixed_float16", "mixed_bfloat16"),
             f"--mixed-precision must be none, mixed_float16 or mixed_bfloat16, got {self.mixed_precision}"),
            (self.strategy in ("none", "mirrored", "multiworker"),
             f"--strategy must be none, mirrored or multiworker, got {self.strategy}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RunError(message)

    @classmethod
    def from_dict(cls, raw, where="the config"):
        """A validated TrainConfig from a dict (config.json's "train"): unknown
        keys, wrong types and invalid values raise RunError naming `where`."""
        if not isinstance(raw, dict):
            raise RunError(f"{where}: expected an object of settings, got {type(raw).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise RunError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}.")
        for key, value in raw.items():
            f = fields[key]
            if not _type_ok(value, f.type, nullable=f.default is None):
                raise RunError(f"{where}: {key!r} must be {f.type.__name__}"
                               f"{' or null' if f.default is None else ''}, got {value!r}.")
        cfg = cls(**raw)
        try:
            cfg.validate()
        except RunError as e:
            raise RunError(f"{where}: {e}") from None
        return cfg

    @property
    def binarization(self):
        if self.binarize:
            return self.binarize
        return "dynamic" if self.likelihood in ("bernoulli", "continuous_bernoulli") else "none"


def _type_ok(value, kind, nullable):
    if value is None:
        return nullable
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


# ------------------------------------------------------------------ data
def prepare_data(cfg):
    """The dataset of a run, checked whole (every split) and binarised as configured.

    Raises DataError before anything is trained: NaN/Inf anywhere, values
    outside [0, 1] for a Bernoulli-type likelihood or any binarisation, labels
    out of range for a conditional run.
    """
    from kvae import distributions

    ds = kdata.load(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, seed=cfg.seed)
    likelihood = distributions.get_likelihood(cfg.likelihood)
    unit = (f"the {likelihood.name} likelihood" if likelihood.unit_interval
            else f"--binarize {cfg.binarization}" if cfg.binarization != "none" else None)
    for split in ("train", "validation", "test"):
        x, y = getattr(ds, split)
        kdata.check(x, y, unit_interval=unit, num_classes=ds.num_classes if cfg.conditional else None,
                    where=f"{ds.source}, {split} split")
    mode = cfg.binarization
    # Validation and test get one fixed draw, so their ELBO is comparable across epochs.
    fixed = "static" if mode == "dynamic" else mode
    ds.validation = (kdata.binarize(ds.validation[0], fixed, cfg.seed + 1), ds.validation[1])
    ds.test = (kdata.binarize(ds.test[0], fixed, cfg.seed + 2), ds.test[1])
    ds.train = (kdata.binarize(ds.train[0], mode, cfg.seed + 3), ds.train[1])
    return ds


def _pipelines(cfg, ds, model, epoch):
    labels = (lambda split: split[1] if model.conditional else None)
    train = kdata.pipeline(ds.train[0], labels(ds.train), cfg.batch_size, shuffle=True, seed=cfg.seed,
                           dynamic_binarize=cfg.binarization == "dynamic", epoch=epoch)
    val = kdata.pipeline(ds.validation[0], labels(ds.validation), cfg.batch_size, shuffle=False)
    return train, val


# ----------------------------------------------------------------- model
def _strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def build_model(cfg, ds):
    import keras

    import kvae

    if cfg.conditional and not ds.num_classes:
        raise RunError(f"--conditional needs labels, and {cfg.dataset} has none.")
    return kvae.VAE(
        input_shape=ds.input_shape, latent_dim=cfg.latent_dim, encoder=cfg.network,
        decoder=cfg.network, likelihood=cfg.likelihood, posterior=cfg.posterior, prior=cfg.prior,
        beta=cfg.beta, num_classes=ds.num_classes if cfg.conditional else None, seed=cfg.seed,
        objective=cfg.objective, num_samples=cfg.num_samples, free_bits=cfg.free_bits,
        capacity_gamma=cfg.capacity_gamma,
    ), keras.optimizers.Adam(cfg.learning_rate)


# ------------------------------------------------------------------ runs
def is_run(path):
    return (Path(path) / CONFIG_FILE).exists()


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path} is unreadable or truncated ({e}); {what}") from None


def load_config(run_dir):
    """The run's validated TrainConfig (RunError naming the file and the key otherwise)."""
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a kvae run directory (no {CONFIG_FILE}).")
    path = run_dir / CONFIG_FILE
    raw = _read_json(path, "it records how the run was made, so the run cannot be used.")
    if not isinstance(raw, dict) or "train" not in raw:
        raise RunError(f"{path} has no \"train\" settings; it is not a kvae run's config.")
    return TrainConfig.from_dict(raw["train"], where=str(path))


def load_model(run_dir, which="best"):
    """The run's `best` (or `last`) model."""
    import kvae

    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a kvae run directory (no {CONFIG_FILE}).")
    path = run_dir / f"{which}.keras"
    if not path.exists():
        path = run_dir / "last.keras"
    if not path.exists():
        raise RunError(f"{run_dir} has no checkpoint yet (no finished epoch).")
    try:
        return kvae.load_model(path)
    except ValueError as e:
        raise RunError(str(e)) from None


def read_state(run_dir):
    """state.json, validated: {"epochs_done": int >= 0, ...}. A run that has
    no state.json and no checkpoint has finished no epoch."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.exists():
        if (run_dir / "last.keras").exists():
            raise RunError(f"{path} is missing, so which epochs finished is unknown; refusing to resume "
                           "(it would overwrite the run). Restore it, or start a new run with --out.")
        return {"epochs_done": 0}
    state = _read_json(path, "refusing to resume (it would overwrite the run).")
    done = state.get("epochs_done") if isinstance(state, dict) else None
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        raise RunError(f"{path} does not hold a valid state (expected {{\"epochs_done\": N, ...}} with N >= 0); "
                       "refusing to resume.")
    if done > 0 and not (run_dir / "last.keras").exists():
        raise RunError(f"{path} says {done} epochs finished, but {run_dir / 'last.keras'} is missing.")
    return state


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
    model.compile(optimizer=optimizer, steps_per_execution=min(cfg.steps_per_execution, steps))
    return model


def train(cfg, run_dir, force=False, verbose=1, log=print):
    """Train a new run into `run_dir`; returns the summary dict written to summary.json.

    Everything is validated (config, every data split, the model) before the
    disk changes; with `force` an existing run is deleted only then. If this
    call fails or is interrupted before its first epoch finishes, it removes
    what it wrote (a new directory entirely), so the command can simply be run
    again. Raises RunError or kdata errors for bad input.
    """
    cfg.validate()
    run_dir = Path(run_dir)
    lock, created = _claim_new(run_dir, force)
    wrote = False
    try:
        _setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        strategy = _strategy(cfg.strategy)
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
    return cfg


def resume(run_dir, changes=None, verbose=1, log=print):
    """Continue a run from its last finished epoch (see `resume_config` for
    `changes`); returns the summary dict. Data order and binarisation depend
    only on (seed, epoch), so the result equals an uninterrupted run's."""
    run_dir = Path(run_dir)
    cfg = resume_config(run_dir, changes)
    lock = _lock(run_dir)
    try:
        state = read_state(run_dir)
        for p in files.sweep(run_dir, recursive=True):
            log(f"removed {p.name}, left by a killed process")
        _setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        strategy = _strategy(cfg.strategy)
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


def _fit(cfg, run_dir, ds, model, state, verbose, log):
    import keras
    import tensorflow as tf

    from kvae import callbacks as kcallbacks
    from kvae.extras import require

    require("tensorboard", "plots", "The run directory's TensorBoard logs")
    epoch = tf.Variable(state["epochs_done"], dtype=tf.int64, trainable=False)
    train_ds, val_ds = _pipelines(cfg, ds, model, epoch)
    fixed = ds.validation[0][:16]
    fixed_labels = ds.validation[1][:16] if ds.validation[1] is not None else None
    cbs = [
        kcallbacks.SetEpoch(epoch),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run_dir / "metrics.csv"), append=True),
        kcallbacks.RunCheckpoint(run_dir),
        kcallbacks.TrainingCurves(run_dir),
        kcallbacks.ImageGrids(run_dir, fixed, fixed_labels, seed=cfg.seed),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
    ]
    if cfg.capacity_gamma > 0:
        ramp = cfg.kl_warmup or max(1, cfg.epochs // 2)
        cbs.insert(1, kcallbacks.CapacityAnnealing(cfg.max_capacity, ramp))
    elif cfg.kl_warmup:
        cbs.insert(1, kcallbacks.KLWarmup(cfg.kl_warmup, schedule=cfg.kl_schedule))
    start = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, initial_epoch=state["epochs_done"],
              callbacks=cbs, verbose=verbose, shuffle=False)  # the pipeline shuffles
    elapsed = time.perf_counter() - start
    state = read_state(run_dir)
    if "stopped_on_nan_at_epoch" in state:
        kept = (f"The last good checkpoint (epoch {state['epochs_done']}) is {run_dir / 'last.keras'}."
                if state["epochs_done"] else "No epoch finished, so there is no checkpoint.")
        raise FloatingPointError(
            f"The loss became NaN/Inf in epoch {state['stopped_on_nan_at_epoch']}; training stopped. "
            f"{kept} Try a lower --lr."
        )
    summary = evaluate(run_dir, ds=ds, model=load_model(run_dir, "best"))
    summary.update(train_seconds=round(elapsed, 1), epochs_done=state["epochs_done"])
    files.write_json(run_dir / "summary.json", summary)
    return summary


def evaluate(run_dir, ds=None, model=None, which="best", k=0, seed=0, verbose=0):
    """Test-set metrics of a run's model, in nats per example (see
    `kvae.evaluate.summary`); with k >= 1 also the importance-sampled log p(x)."""
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
