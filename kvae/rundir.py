"""Reading a run directory: its config and state (its checkpoints and summary
open with `kvae.load_model` and `kvae.saving.read_summary`, which the tools that
read a model use without the run layer).

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

import json
from pathlib import Path

from kvae.config import RunError, TrainConfig
from kvae.saving import CONFIG_FILE, read_summary

__all__ = ["CONFIG_FILE", "STATE_FILE", "RUN_ENTRIES", "is_run", "foreign_entry", "load_config", "read_state",
           "best_so_far", "describe"]

STATE_FILE = "state.json"
#: what kvae writes in a run directory (above), and nothing else: what `--force` may replace
RUN_ENTRIES = (CONFIG_FILE, STATE_FILE, "last.keras", "best.keras", "metrics.csv", "curves.png", "images",
               "tensorboard", "summary.json", "evaluation.json")


def is_run(path):
    """Whether `path` is a run directory (it holds config.json).

    Args:
        path: str or Path.

    Returns:
        bool.
    """
    return (Path(path) / CONFIG_FILE).exists()


def foreign_entry(directory, entries):
    """The first entry of `directory` that kvae did not write, or None.

    Args:
        directory: Path; entries: the names kvae writes there (e.g. `RUN_ENTRIES`);
        hidden temporary files of kvae's atomic writes count as kvae's.

    Returns:
        Path or None.
    """
    from kvae import files

    for p in sorted(Path(directory).iterdir()):
        if p.name not in entries and not files.is_temp(p.name):
            return p
    return None


def _read_json(path, what):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"{path} is unreadable or truncated ({e}); {what}") from None


def load_config(run_dir):
    """The run's settings, validated.

    Args:
        run_dir: str or Path.

    Returns:
        kvae.config.TrainConfig; RunError naming the file and the key otherwise.
    """
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        raise RunError(f"{run_dir} is not a kvae run directory (no {CONFIG_FILE}).")
    path = run_dir / CONFIG_FILE
    raw = _read_json(path, "it records how the run was made, so the run cannot be used.")
    if not isinstance(raw, dict) or "train" not in raw:
        raise RunError(f"{path} has no \"train\" settings; it is not a kvae run's config.")
    return TrainConfig.from_dict(raw["train"], where=str(path))

def read_state(run_dir):
    """state.json, validated. A run that has no state.json and no checkpoint
    has finished no epoch.

    Args:
        run_dir: str or Path.

    Returns:
        dict {"epochs_done": int >= 0, ...}; RunError if it is missing beside a
        checkpoint, truncated, of the wrong shape, or claims epochs without last.keras.
    """
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


def best_so_far(state, monitor):
    """The best value so far of `monitor`, in its own units, and its epoch, from a
    state.json that `kvae.callbacks.RunCheckpoint` wrote.

    Args:
        state: dict, `read_state`'s; monitor: str, a log key.

    Returns:
        (float, int 1-based epoch), or (None, None) if the state holds no best of that monitor.
    """
    if state.get("best_monitor") != monitor or "best" not in state or "best_epoch" not in state:
        return None, None
    return state["best"], state["best_epoch"]



def describe(run_dir):
    """What a run directory holds, as (label, text) rows (`kvae info`).

    Args:
        run_dir: str or Path.

    Returns:
        list of (str, str).
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    raw = json.loads((run_dir / CONFIG_FILE).read_text())
    state = read_state(run_dir)
    monitor = state.get("best_monitor", "val_loss")
    best, best_epoch = best_so_far(state, monitor)
    rows = [("dataset", f"{cfg.dataset} {tuple(raw['data']['input_shape'])} from {raw['data']['source']}"),
            ("model", f"{cfg.network} encoder/decoder, latent_dim {cfg.latent_dim}, {cfg.likelihood} "
                      f"likelihood, {cfg.posterior} posterior, {cfg.prior} prior, beta {cfg.beta}"
                      + (", conditional" if cfg.conditional else "")),
            ("epochs", f"{state['epochs_done']} of {cfg.epochs} done"),
            (f"best {monitor}", "-" if best is None else f"{best:.3f} (epoch {best_epoch})")]
    summary = read_summary(run_dir)
    if summary:
        rows.append(("test ELBO", f"{summary['test_elbo']:.3f} nats ({summary['train_seconds']:.0f} s of training)"))
    rows.append(("files", ", ".join(sorted(p.name for p in run_dir.iterdir()))))
    return rows
