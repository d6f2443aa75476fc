"""Fitting a run: its callbacks (checkpoints, schedules, time limit, images,
curves, TensorBoard), `fit` from its last finished epoch, and its final evaluation."""

import csv
import io
import time
from pathlib import Path

from kvae import files
from kvae.config import RunError
from kvae.rundir import read_state
from kvae.runs.building import recipe_of
from kvae.runs.data import pipelines
from kvae.runs.evaluation import evaluate
from kvae.saving import load_model

__all__ = ["fit_run", "truncate_metrics"]


def fit_run(cfg, run_dir, ds, model, state, verbose, log, shown_dir=None):
    """Fit a run from its state to its end, then evaluate its best checkpoint and write summary.json.

    Args:
        cfg: TrainConfig; run_dir: Path; ds: Dataset; model: kvae.VAE, compiled; state: dict (state.json);
        verbose: 0 or 1; log: print-like; shown_dir: the directory named in messages (a worker's chief's).

    Returns:
        dict, the summary.
    """
    import keras
    import tensorflow as tf

    from kvae import callbacks as kcallbacks
    from kvae.extras import require
    from kvae.optimizers import ValidateAverages

    require("tensorboard", "plots", "The run directory's TensorBoard logs")
    epoch = tf.Variable(state["epochs_done"], dtype=tf.int64, trainable=False)
    train_ds, val_ds = pipelines(cfg, ds, model, epoch)
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
    if epochs <= state["epochs_done"]:  # nothing to train: no TensorBoard event file for an empty fit
        cbs = [c for c in cbs if not isinstance(c, keras.callbacks.TensorBoard)]
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


def truncate_metrics(run_dir, epochs_done):
    """Keep only the rows of finished epochs in metrics.csv (a crash may leave one more, or half a row).

    Args:
        run_dir: str or Path; epochs_done: int.
    """
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
