"""A run's life: `train` claims and locks a new directory, validates
everything, and only then writes; `resume` continues one from its last
finished epoch. The trust rules are in kvae.runs's docstring."""

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from kvae import files
from kvae.config import RESUMABLE, RunError, TrainConfig, flag
from kvae.rundir import CONFIG_FILE, RUN_ENTRIES, STATE_FILE, foreign_entry, is_run, load_config, read_state
from kvae.runs.building import new_model, recipe_of, setup_runtime, write_config
from kvae.runs.cluster import strategy_for, worker_run
from kvae.runs.data import absolute_paths, check_recorded_data, data_moved, prepare_data
from kvae.runs.fitting import fit_run, truncate_metrics
from kvae.saving import load_model, read_summary

__all__ = ["train", "resume", "resume_config"]


def _lock(run_dir):
    try:
        return files.RunLock(run_dir, "another kvae process")
    except files.LockedError as e:
        raise RunError(str(e)) from None


def _claim_new(run_dir, force):
    """Create (or take) `run_dir` for a new run and lock it, deleting nothing.
    Returns (lock, directories this call created)."""
    try:
        files.check_destination(run_dir, "--out")
    except files.DestinationError as e:
        raise RunError(str(e)) from None
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a directory.")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise RunError(f"{run_dir} already holds files; use --force to replace them, "
                           "--resume to continue that run, or another --out.")
        if not is_run(run_dir):
            first = sorted(run_dir.iterdir())[0]
            raise RunError(f"--force replaces a kvae run directory, and --out {run_dir} is not one (no "
                           f"{CONFIG_FILE}): it would delete {first}; nothing was deleted. Choose another --out.")
        foreign = foreign_entry(run_dir, RUN_ENTRIES)
        if foreign is not None:
            raise RunError(f"--force replaces only what kvae wrote in {run_dir}, and {foreign} is not a kvae "
                           "file; nothing was deleted. Move it out, or choose another --out.")
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


def train(cfg, run_dir, force=False, verbose=1, log=print, model_config=None):
    """Train a new run into `run_dir`.

    Args:
        cfg: kvae.config.TrainConfig; run_dir: str or Path; force: bool,
        replace a run there; verbose: 0 or 1 (progress bar); log: print-like;
        model_config: dict or None, a recorded model to build instead of the settings' parts
        (`kvae train --config RUN/config.json`).

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
    cfg = absolute_paths(cfg)  # recorded so that the run works from any directory
    run_dir = Path(run_dir)
    strategy, chief = strategy_for(cfg)
    if not chief:
        return worker_run(cfg, run_dir, strategy, False, verbose, log)
    lock, created = _claim_new(run_dir, force)
    wrote = False
    try:
        setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        recipe = recipe_of(cfg)
        if recipe is not None and recipe.dataset != ds.name:
            log(f"note: recipe {recipe.name!r} was made for {recipe.dataset}; its anchors and measured figures "
                f"(kvae recipes) do not apply to {ds.name}")
        with strategy.scope() if strategy else contextlib.nullcontext():
            model = new_model(cfg, ds, model_config)
        # Validated: only now may the old run go.
        if force:
            _empty(run_dir)
        wrote = True
        write_config(run_dir, cfg, model, ds)
        files.write_json(run_dir / STATE_FILE, {"epochs_done": 0})
        return fit_run(cfg, run_dir, ds, model, {"epochs_done": 0}, verbose, log)
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


def resume_config(run_dir, changes=None, more_epochs=None):
    """The run's saved config with `changes` ({field: value}) applied.

    Only `RESUMABLE` fields may change (epochs: the new total, never below the
    epochs done; data_dir and download: where the same data is found). Any other
    field given with a value that differs from the run's raises RunError naming
    every such flag; equal values are accepted, so a command can be repeated
    with --resume added.

    Args:
        run_dir: str or Path; changes: {TrainConfig field: value} or None;
        more_epochs: int >= 1 or None, epochs to add to those done (`--epochs +N`).

    Returns:
        kvae.config.TrainConfig, validated.
    """
    cfg = load_config(run_dir)
    done = read_state(run_dir)["epochs_done"]
    changes = dict(changes or {})
    for key in ("dataset", "data_dir"):  # a path given as on the first command (relative) is the same path
        if changes.get(key) is not None:
            changes[key] = getattr(absolute_paths(dataclasses.replace(cfg, **{key: changes[key]})), key)
    if "dataset" in changes and changes["dataset"] != cfg.dataset and data_moved(cfg):
        cfg.dataset = changes.pop("dataset")  # the same data, found elsewhere: recorded below
    check_recorded_data(cfg, run_dir)
    if more_epochs is not None:
        if "epochs" in changes or int(more_epochs) < 1:
            raise RunError("give --epochs either as a total or as +N (N >= 1 more), not both")
        changes["epochs"] = done + int(more_epochs)
    if "epochs" in changes and changes["epochs"] < done:
        raise RunError(f"--epochs {changes['epochs']} is below the {done} epochs {run_dir} has done; give a total "
                       f"of at least {done}, or --epochs +N for N more.")
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
    return absolute_paths(cfg)


def resume(run_dir, changes=None, verbose=1, log=print, more_epochs=None):
    """Continue a run from its last finished epoch (see `resume_config` for
    `changes`). Data order and binarisation depend only on (seed, epoch), so
    the result equals an uninterrupted run's.

    Args:
        run_dir: str or Path; changes, more_epochs: as in `resume_config`; verbose, log: as in `train`.

    Returns:
        dict, the summary written to summary.json (read back, with nothing written, when the
        run has done its epochs already and has its summary).
    """
    run_dir = Path(run_dir)
    cfg = resume_config(run_dir, changes, more_epochs)
    summary = read_summary(run_dir)
    if read_state(run_dir)["epochs_done"] >= cfg.epochs and summary:
        log(f"{run_dir} already finished its {cfg.epochs} epochs; pass --epochs +N to train further.")
        return summary
    strategy, chief = strategy_for(cfg)
    if not chief:
        return worker_run(cfg, run_dir, strategy, True, verbose, log)
    lock = _lock(run_dir)
    try:
        state = read_state(run_dir)
        for p in files.sweep(run_dir, recursive=True):
            log(f"removed {p.name}, left by a killed process")
        setup_runtime(cfg)
        ds = prepare_data(cfg)
        log(f"data: {ds.summary()}; binarisation: {cfg.binarization}")
        with strategy.scope() if strategy else contextlib.nullcontext():
            # no finished epoch: the same seed rebuilds the same initial model
            model = load_model(run_dir, "last") if state["epochs_done"] else new_model(cfg, ds)
        log(f"resuming {run_dir} after epoch {state['epochs_done']} of {cfg.epochs}")
        if state["epochs_done"] >= cfg.epochs:
            log(f"{run_dir} already finished its {cfg.epochs} epochs; pass --epochs +N to train further.")
        truncate_metrics(run_dir, state["epochs_done"])
        raw = json.loads((run_dir / CONFIG_FILE).read_text())
        if raw["train"] != asdict(cfg):
            raw["train"] = asdict(cfg)
            files.write_json(run_dir / CONFIG_FILE, raw)
        return fit_run(cfg, run_dir, ds, model, state, verbose, log)
    finally:
        lock.release()
