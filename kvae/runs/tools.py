"""What the command line does with a trained run, as functions a Python user
calls with the same behaviour: its test inputs, a score table, the anomaly
report, and the thresholds of the exported scorer."""

import numpy as np

from kvae import data as kdata
from kvae.config import RunError
from kvae.rundir import is_run, load_config
from kvae.runs.data import check_recorded_data, prepare_data, prepare_inputs, stream_inputs
from kvae.saving import load_model

__all__ = ["test_inputs", "score_table", "anomaly_report", "scorer_thresholds"]


def test_inputs(run_dir, n=None, which="best"):
    """A run's model and its test split, checked and binarised as the run's.

    Args:
        run_dir: str or Path; n: int or None, the first n examples only; which: 'best' or 'last'.

    Returns:
        (kvae.VAE, x float32 [N, *input_shape], labels int32 [N] for a conditional model, else None).
    """
    cfg, model = load_config(run_dir), load_model(run_dir, which)
    check_recorded_data(cfg, run_dir)
    x, y = prepare_data(cfg).test
    y = y if model.conditional else None
    if n is not None:
        x, y = x[:n], (None if y is None else y[:n])
    return model, x, y


def score_table(run_dir, data, out, scores, batch_size=1024, verbose=1):
    """Stream `data` through a run's model and write per-example scores (`kvae.scoring.score`).

    Args:
        run_dir: str or Path; data: a .npy/.npz file, an image folder, a prepared folder
            (streamed), or a dataset name (its test split); out: FILE.parquet or a folder for
            .npy shards; scores: list of `kvae.anomaly.Score` (`kvae.anomaly.from_options`);
        batch_size: int >= 1; verbose: 0 or 1.

    Returns:
        dict: rows, columns, path, format, and `inputs` (where the data came from).
    """
    from kvae import scoring

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    cfg, model = load_config(run_dir), load_model(run_dir)
    if kdata.is_streamable(data):
        source, labels, binarize, where = stream_inputs(cfg, data, model.data_shape)
    else:
        source, labels, where = prepare_inputs(cfg, data, model.data_shape)
        binarize = False
    info = scoring.score(model, source, out, scores=scores, labels=labels, batch_size=batch_size,
                         binarize=binarize, seed=cfg.seed + 2, verbose=verbose)
    return {**info, "inputs": where}


def anomaly_report(run_dir, score, data=None, fpr=None, n=16, verbose=1):
    """One score of every test input (or of `data`), the n most and least anomalous, and,
    with `fpr`, a threshold calibrated on the run's validation split and the inputs above it.

    A score that needs held-in data (`needs_reference`) is fitted on one half of the
    validation split and calibrated on the other.

    Args:
        run_dir: str or Path; score: a `kvae.anomaly.Score`; data: None (the test split) or
            what `kvae.data.read_inputs` reads; fpr: float in (0, 1) or None; n: int >= 1;
        verbose: 0 or 1.

    Returns:
        (dict, the JSON the CLI writes: score, options, inputs, scores, most_anomalous,
        least_anomalous, and with `fpr` threshold and flagged; x, the inputs scored).
    """
    from kvae import anomaly, latent

    if fpr is not None and not 0 < fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {fpr}")
    cfg, model = load_config(run_dir), load_model(run_dir)
    check_recorded_data(cfg, run_dir)
    ds = prepare_data(cfg)
    if data:
        x, y, where = prepare_inputs(cfg, data, model.data_shape)
    else:
        (x, y), where = ds.test, "the test split"
    y = y if model.conditional else None
    heldin_x, heldin_y = ds.validation
    heldin_y = heldin_y if model.conditional else None
    half = len(heldin_x) // 2
    if score.needs_reference:
        score.fit(model, heldin_x[:half], None if heldin_y is None else heldin_y[:half])
        heldin_x, heldin_y = heldin_x[half:], None if heldin_y is None else heldin_y[half:]
    scores = score(model, x, y, verbose=verbose)
    most, least = latent.rank(scores, n)
    result = {"score": score.name, "options": score.get_config(), "inputs": where,
              "scores": [float(v) for v in scores], "most_anomalous": [int(i) for i in most],
              "least_anomalous": [int(i) for i in least]}
    if fpr is not None:
        threshold = anomaly.calibrate(score(model, heldin_x, heldin_y, verbose=verbose), fpr)
        result["threshold"] = {"value": threshold.value, "fpr": threshold.fpr, "heldin_fpr": threshold.heldin_fpr,
                               "heldin_n": threshold.n, "calibrated_on": "the run's validation split"}
        result["flagged"] = [int(i) for i in np.flatnonzero(threshold.flag(scores))]
    return result, x


def scorer_thresholds(run_dir, fpr):
    """Thresholds of the exported device scorer at `fpr` on a run's validation split: for
    'elbo' and, for binary inputs, 'complexity' (elbo minus the context coder's length,
    which export/score.py computes on the device).

    Args:
        run_dir: str or Path, a run directory; fpr: float in (0, 1).

    Returns:
        dict: binarize (what the device must do to inputs), and per score its value, fpr,
        heldin_fpr, heldin_n, calibrated_on.
    """
    from kvae import anomaly

    if not 0 < fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {fpr}")
    if not is_run(run_dir):
        raise RunError(f"--fpr calibrates on a run's validation split; {run_dir} is not a run directory")
    cfg, model = load_config(run_dir), load_model(run_dir)
    check_recorded_data(cfg, run_dir)
    x, y = prepare_data(cfg).validation
    elbo = anomaly.NegativeELBO()(model, x, y if model.conditional else None)
    scores = {"elbo": elbo}
    if np.isin(x, (0, 1)).all():
        scores["complexity"] = elbo - anomaly.compressed_bits(x, "context") * np.log(2.0)
    out = {"binarize": "static" if cfg.binarization == "dynamic" else cfg.binarization}
    for name, values in scores.items():
        t = anomaly.calibrate(values, fpr)
        out[name] = {"value": t.value, "fpr": t.fpr, "heldin_fpr": t.heldin_fpr, "heldin_n": t.n,
                     "calibrated_on": "the run's validation split"}
    return out
