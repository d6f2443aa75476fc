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
"""

import contextlib
import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kvae import callbacks as kcallbacks
from kvae import data as kdata

CONFIG_FILE = "config.json"


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

    @property
    def binarization(self):
        if self.binarize:
            return self.binarize
        return "dynamic" if self.likelihood in ("bernoulli", "continuous_bernoulli") else "none"


# ------------------------------------------------------------------ data
def prepare_data(cfg):
    """The dataset of a run, binarised as configured: (Dataset, train_x)."""
    ds = kdata.load(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download, seed=cfg.seed)
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


def load_config(run_dir):
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a kvae run directory (no {CONFIG_FILE}).")
    raw = json.loads((run_dir / CONFIG_FILE).read_text())
    return TrainConfig(**raw["train"])


def load_model(run_dir, which="best"):
    """The run's `best` (or `last`) model."""
    import keras

    import kvae  # noqa: F401 - registers the classes

    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a kvae run directory (no {CONFIG_FILE}).")
    path = run_dir / f"{which}.keras"
    if not path.exists():
        path = run_dir / "last.keras"
    if not path.exists():
        raise RunError(f"{run_dir} has no checkpoint yet (no finished epoch).")
    return keras.models.load_model(path)


def _truncate_metrics(run_dir, epochs_done):
    """Keep only the rows of finished epochs (a crash may leave one more)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) < epochs_done]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(kept)


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


def train(cfg, run_dir, force=False, resume=False, verbose=1, log=print):
    """Train (or resume) a run; returns the summary dict written to summary.json.

    Raises RunError or kdata errors for bad input, before any training step.
    """
    import keras

    run_dir = Path(run_dir)
    if resume:
        cfg_saved = load_config(run_dir)
        if cfg.epochs is not None:  # an explicit --epochs sets the new total
            if cfg.epochs < 1:
                raise RunError(f"--epochs must be >= 1, got {cfg.epochs}")
            cfg_saved.epochs = cfg.epochs
        cfg = cfg_saved
    else:
        cfg.validate()
        if run_dir.exists() and any(run_dir.iterdir()):
            if not force:
                raise RunError(f"{run_dir} already holds files; use --force to replace them, "
                               "--resume to continue that run, or another --out.")
            shutil.rmtree(run_dir)
    _setup_runtime(cfg)
    ds = prepare_data(cfg)
    log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
    strategy = _strategy(cfg.strategy)
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    state = kcallbacks.read_state(run_dir) if resume else {"epochs_done": 0}
    with scope:
        if resume:
            model = load_model(run_dir, "last")
            log(f"resuming {run_dir} after epoch {state['epochs_done']} of {cfg.epochs}")
            _truncate_metrics(run_dir, state["epochs_done"])
        else:
            model, optimizer = build_model(cfg, ds)
            # more steps per execution than an epoch has would confuse the progress bar
            steps = math.ceil(len(ds.train[0]) / cfg.batch_size)
            model.compile(optimizer=optimizer, steps_per_execution=min(cfg.steps_per_execution, steps))
    if state["epochs_done"] >= cfg.epochs:
        log(f"{run_dir} already finished its {cfg.epochs} epochs; pass --epochs N to train further.")
    if not resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        import kvae

        kcallbacks.write_json(run_dir / CONFIG_FILE, {
            "kvae_version": kvae.__version__, "train": asdict(cfg), "model": model.get_config(),
            "data": {"name": ds.name, "source": ds.source, "input_shape": list(ds.input_shape),
                     "num_classes": ds.num_classes},
        })
    else:  # a longer --epochs on resume is remembered
        raw = json.loads((run_dir / CONFIG_FILE).read_text())
        raw["train"]["epochs"] = cfg.epochs
        kcallbacks.write_json(run_dir / CONFIG_FILE, raw)

    import tensorflow as tf

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
    state = kcallbacks.read_state(run_dir)
    if "stopped_on_nan_at_epoch" in state:
        kept = (f"The last good checkpoint (epoch {state['epochs_done']}) is {run_dir / 'last.keras'}."
                if state["epochs_done"] else "No epoch finished, so there is no checkpoint.")
        raise FloatingPointError(
            f"The loss became NaN/Inf in epoch {state['stopped_on_nan_at_epoch']}; training stopped. "
            f"{kept} Try a lower --lr."
        )
    summary = evaluate(run_dir, ds=ds, model=load_model(run_dir, "best"))
    summary.update(train_seconds=round(elapsed, 1), epochs_done=state["epochs_done"])
    kcallbacks.write_json(run_dir / "summary.json", summary)
    return summary


def evaluate(run_dir, ds=None, model=None, which="best", k=0, seed=0):
    """Test-set metrics of a run's model, in nats per example (see
    `kvae.evaluate.summary`); with k >= 1 also the importance-sampled log p(x)."""
    from kvae import evaluate as kevaluate

    cfg = load_config(run_dir)
    ds = ds or prepare_data(cfg)
    model = model or load_model(run_dir, which)
    labels = ds.test[1] if model.conditional else None
    result = kevaluate.summary(model, ds.test[0], labels, k=k, seed=seed)
    out = {"checkpoint": which, "test_examples": result.pop("examples"),
           "test_elbo": -result.pop("negative_elbo")}
    out.update({f"test_{key}": value for key, value in result.items()})
    return out
