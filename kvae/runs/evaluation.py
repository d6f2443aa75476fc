"""Evaluating a run's model on its test split."""

from kvae.rundir import load_config
from kvae.runs.data import check_recorded_data, prepare_data
from kvae.saving import load_model

__all__ = ["evaluate"]


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
    if ds is None:
        check_recorded_data(cfg, run_dir)
        ds = prepare_data(cfg)
    model = model or load_model(run_dir, which)
    labels = ds.test[1] if model.conditional else None
    result = kevaluate.summary(model, ds.test[0], labels, k=k, seed=seed, verbose=verbose)
    out = {"checkpoint": which, "test_examples": result.pop("examples"),
           "test_elbo": -result.pop("negative_elbo")}
    out.update({f"test_{key}": value for key, value in result.items()})
    return out
