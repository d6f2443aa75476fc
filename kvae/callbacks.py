"""Keras callbacks: KL warm-up and capacity schedules (they set the
objective's variables), and for a kvae run directory crash-safe checkpoints,
image grids and training curves per epoch (with an optimizer that keeps
moving averages of the weights, the averages are the best model: see
kvae.optimizers.ValidateAverages)."""

import math
import time
from pathlib import Path

import keras
import numpy as np

from kvae import files, plots
from kvae.optimizers import averaged_weights
from kvae.rundir import STATE_FILE, best_so_far, read_state

__all__ = ["SetEpoch", "RunCheckpoint", "ImageGrids", "TrainingCurves",
           "KLWarmup", "CapacityAnnealing", "TimeLimit", "EarlyStopping"]


def _objective_variable(model, name, callback, needs):
    variable = {"kl_weight": model.objective.kl_weight, "capacity": model.objective.capacity}[name]
    if variable is None:
        raise ValueError(f"{callback} needs {needs}; this model's objective is {model.objective!r}.")
    return variable


class SetEpoch(keras.callbacks.Callback):
    """Keeps an int64 `tf.Variable` at the current epoch (for
    `kvae.data.pipeline(..., epoch=variable)`).

    Args:
        variable: int64 tf.Variable.
    """

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch with a finite loss: save `last.keras` (model and
    optimizer state) and, if the validation loss improved, `best.keras`; then
    record the epoch and the training time so far (`train_seconds`, summed
    over resumed processes) in `state.json`. Saves go to a temporary file
    first and are renamed into place, so a run killed at any moment leaves the
    previous epoch's files intact. An epoch whose loss is NaN or Inf saves
    nothing and stops training. With moving averages of the weights
    (`averaged_weights`), `best.keras` holds the averages and `last.keras`
    the weights being trained (a resumed run goes on training those).

    Args:
        run_dir: str or Path; monitor: the log key whose best value is "best"
            (in its own units: the ELBO as the ELBO, with "best_mode");
        mode: 'min' or 'max', which value is best.
    """

    def __init__(self, run_dir, monitor="val_loss", mode="min"):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        self.run_dir = Path(run_dir)
        self.monitor, self.mode = monitor, mode

    def on_train_begin(self, logs=None):
        self._start = time.monotonic() - float(read_state(self.run_dir).get("train_seconds", 0.0))

    def _save_model(self, name):
        with files.atomic_path(self.run_dir / name) as tmp:  # removed again on any failure
            self.model.save(tmp)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        state = read_state(self.run_dir)
        values = [float(np.mean(v)) for v in logs.values()]
        if not all(math.isfinite(v) for v in values):
            state["stopped_on_nan_at_epoch"] = epoch + 1
            files.write_json(self.run_dir / STATE_FILE, state)
            self.model.stop_training = True
            return
        self._save_model("last.keras")
        current = float(np.mean(logs.get(self.monitor, logs.get("loss"))))
        best, _ = best_so_far(state, self.monitor)
        if best is None or (current < best if self.mode == "min" else current > best):
            with averaged_weights(self.model):
                self._save_model("best.keras")
            state.update(best=current, best_epoch=epoch + 1, best_monitor=self.monitor, best_mode=self.mode)
        state["epochs_done"] = epoch + 1
        if hasattr(self, "_start"):
            state["train_seconds"] = round(time.monotonic() - self._start, 1)
        state.pop("stopped_on_nan_at_epoch", None)
        files.write_json(self.run_dir / STATE_FILE, state)


class ImageGrids(keras.callbacks.Callback):
    """Per epoch: a grid of prior samples (the same z every epoch) and a grid
    of fixed validation inputs next to their reconstructions.

    Args:
        run_dir: str or Path (writes images/); x: validation inputs [n, ...];
        labels: [n] or None; num_samples: int; seed: int (the samples' z).
    """

    def __init__(self, run_dir, x, labels=None, num_samples=64, seed=0):
        super().__init__()
        self.dir = Path(run_dir) / "images"
        self.x, self.labels = x, labels
        self.num_samples, self.seed = num_samples, seed

    def on_epoch_end(self, epoch, logs=None):
        m = self.model
        sample_labels = np.arange(self.num_samples) % m.num_classes if m.conditional else None
        samples = m.sample(self.num_samples, seed=self.seed, labels=sample_labels).numpy()
        plots.save_grid(samples, self.dir / f"samples_epoch_{epoch + 1:03d}.png",
                        title=f"prior samples, epoch {epoch + 1}")
        labels = self.labels if m.conditional else None
        recon = m.reconstruct(self.x, labels).numpy()
        plots.save_pairs(self.x, recon, self.dir / f"reconstructions_epoch_{epoch + 1:03d}.png",
                         title=f"inputs (odd rows) and reconstructions, epoch {epoch + 1}")


class TrainingCurves(keras.callbacks.Callback):
    """Redraws `curves.png` from `metrics.csv` after every epoch (so a
    resumed run's curves include the epochs before the crash). Put it after
    the CSVLogger.

    Args:
        run_dir: str or Path.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = Path(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        csv_path = self.run_dir / "metrics.csv"
        if csv_path.exists():
            plots.save_curves(plots.read_metrics(csv_path), self.run_dir / "curves.png")


class KLWarmup(keras.callbacks.Callback):
    """KL warm-up: at the start of each epoch, set the objective's KL weight
    (`model.objective.kl_weight`, an ELBO's or an IWAE's) to beta * factor(epoch).

    'linear' (Bowman et al., 2016): factor = min(1, (epoch + 1) / epochs), so
    the weight reaches beta after `epochs` epochs.
    'cyclical' (Fu et al., 2019): the epochs are split into cycles of
    `epochs` each; within a cycle the factor rises linearly from 0 to 1 over
    the first `ratio` of the cycle and then holds at 1.

    Args:
        epochs: int >= 1, length of the ramp (linear) or of a cycle (cyclical).
        schedule: 'linear' or 'cyclical'.
        ratio: float in (0, 1], share of a cycle spent ramping (cyclical only).
    """

    def __init__(self, epochs, schedule="linear", ratio=0.5):
        super().__init__()
        if int(epochs) < 1:
            raise ValueError(f"KLWarmup needs epochs >= 1, got {epochs}.")
        if schedule not in ("linear", "cyclical"):
            raise ValueError(f"Unknown KL warm-up schedule {schedule!r}: 'linear' or 'cyclical'.")
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}.")
        self.epochs, self.schedule, self.ratio = int(epochs), schedule, float(ratio)

    def factor(self, epoch):
        if self.schedule == "linear":
            return min(1.0, (epoch + 1) / self.epochs)
        position = (epoch % self.epochs) / self.epochs  # in [0, 1)
        return min(1.0, position / self.ratio)

    def on_epoch_begin(self, epoch, logs=None):
        weight = _objective_variable(self.model, "kl_weight", "KLWarmup", "an ELBO or IWAE objective (a KL weight)")
        weight.assign(self.model.objective.beta * self.factor(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_weight"] = float(self.model.objective.kl_weight.numpy())


class CapacityAnnealing(keras.callbacks.Callback):
    """Raise the KL capacity C linearly from 0 to `max_capacity` nats over
    `epochs` epochs (Burgess et al., 2018), for a model whose objective is a
    `kvae.objectives.CapacityELBO` (capacity_gamma > 0): C = max_capacity *
    min(1, epoch / epochs) at the start of each epoch, in `model.objective.capacity`.

    Args:
        max_capacity: float >= 0, nats.
        epochs: int >= 1, length of the ramp.
    """

    def __init__(self, max_capacity, epochs):
        super().__init__()
        if not max_capacity >= 0 or int(epochs) < 1:
            raise ValueError(f"CapacityAnnealing needs max_capacity >= 0 and epochs >= 1, "
                             f"got {max_capacity} and {epochs}.")
        self.max_capacity, self.epochs = float(max_capacity), int(epochs)

    def capacity(self, epoch):
        return self.max_capacity * min(1.0, epoch / self.epochs)

    def on_epoch_begin(self, epoch, logs=None):
        capacity = _objective_variable(self.model, "capacity", "CapacityAnnealing",
                                       "a model built with capacity_gamma > 0")
        capacity.assign(self.capacity(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["kl_capacity"] = float(self.model.objective.capacity.numpy())


class TimeLimit(keras.callbacks.Callback):
    """Stop training at the end of the first epoch that finishes after
    `minutes` of training, counting `spent_seconds` already trained by an
    earlier process (a resumed run continues its budget, it does not start a
    new one). With `cosine=True` the learning rate also follows a cosine from
    `initial_lr` (default: the optimizer's rate at the start) to 0 over the
    run, set at the start of every epoch from the run's progress: the larger
    of the time spent over `minutes` and, given `epochs`, the epochs done over
    `epochs`. So the rate reaches 0 as whichever limit ends the run does, on
    a fast machine or a slow one, resumed or not. `minutes=0` sets no time
    limit (a cosine over the epochs alone). An optimizer with a weight-decay
    schedule (kvae.optimizers.AdamW or AdamaxW with `weight_decay_end`) is
    told the same progress at the start of every epoch.

    Args:
        minutes: float >= 0 (0 only with `cosine` and `epochs`).
        cosine: bool.
        spent_seconds: float >= 0, training time before this process.
        initial_lr: float or None, the cosine's starting rate.
        epochs: int >= 1 or None, the epochs the run trains in all (Keras's
            epoch index counts a resumed run's earlier epochs too).
    """

    def __init__(self, minutes, cosine=False, spent_seconds=0.0, initial_lr=None, epochs=None):
        super().__init__()
        if not float(minutes) >= 0 or not (float(minutes) > 0 or (cosine and epochs)):
            raise ValueError(f"minutes must be > 0 (or 0 with cosine=True and epochs), got {minutes}.")
        if not float(spent_seconds) >= 0:
            raise ValueError(f"spent_seconds must be >= 0, got {spent_seconds}.")
        if epochs is not None and int(epochs) < 1:
            raise ValueError(f"epochs must be >= 1 or None, got {epochs}.")
        self.minutes, self.cosine = float(minutes), bool(cosine)
        self.spent, self.initial_lr = float(spent_seconds), initial_lr
        self.epochs = None if epochs is None else int(epochs)
        self.clock = time.monotonic  # seconds; replaceable (tests)

    def _fraction(self):
        """The share of the time limit spent (0 without one)."""
        return min(1.0, (self.clock() - self.start) / (60.0 * self.minutes)) if self.minutes else 0.0

    def progress(self, epoch):
        """The run's progress in [0, 1] at the start of (0-based) `epoch`."""
        return min(1.0, max(self._fraction(), epoch / self.epochs if self.epochs else 0.0))

    def on_train_begin(self, logs=None):
        self.start = self.clock() - self.spent
        if self.initial_lr is None:
            self.initial_lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_begin(self, epoch, logs=None):
        progress = self.progress(epoch)
        if self.cosine:
            self.model.optimizer.learning_rate.assign(self.initial_lr * 0.5 * (1.0 + math.cos(math.pi * progress)))
        if hasattr(self.model.optimizer, "set_progress"):
            self.model.optimizer.set_progress(progress)

    def on_epoch_end(self, epoch, logs=None):
        if self.minutes and self._fraction() >= 1.0:
            self.model.stop_training = True


class EarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that can continue a run's patience:
    given the best value and the (1-based) epoch it was reached in, a fit
    that starts at `initial_epoch` counts the epochs since then, as an
    uninterrupted run would have.

    Args:
        monitor, mode, patience: as in keras; best: float or None, the best
        monitored value so far; best_epoch: int or None, its epoch (1-based).
    """

    def __init__(self, monitor, mode, patience, best=None, best_epoch=None):
        super().__init__(monitor, mode=mode, patience=patience)
        self.resume_best, self.resume_epoch = best, best_epoch

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._initial_epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._initial_epoch is None:
            self._initial_epoch = epoch
            if self.resume_best is not None and self.resume_epoch is not None and epoch >= self.resume_epoch:
                self.best, self.best_epoch = float(self.resume_best), self.resume_epoch - 1
                self.wait = epoch - self.resume_epoch
