"""A run's data: its dataset checked and binarised as configured, inputs from
outside the run prepared the same way, and the tf.data pipelines of `fit`."""

import numpy as np

from kvae import data as kdata
from kvae.config import RunError

__all__ = ["needs_unit_interval", "absolute_paths", "data_moved", "check_recorded_data", "prepare_data", "prepare_inputs", "stream_inputs", "pipelines"]


def needs_unit_interval(cfg):
    """What in the run needs pixels in [0, 1] (for messages), or None.

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        str or None.
    """
    from kvae import distributions

    likelihood = distributions.get_likelihood(cfg.likelihood)
    return (f"the {likelihood.name} likelihood" if likelihood.unit_interval
            else f"--binarize {cfg.binarization}" if cfg.binarization != "none" else None)


def _is_path(name):
    return name is not None and str(name) not in kdata.NAMES


def absolute_paths(cfg):
    """The config with its data paths absolute, so that the run keeps working from any directory.

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        a new TrainConfig (a named dataset, or a path that does not exist, is kept as given).
    """
    import dataclasses
    from pathlib import Path

    changes = {}
    if _is_path(cfg.dataset) and Path(str(cfg.dataset)).expanduser().exists():
        changes["dataset"] = str(Path(str(cfg.dataset)).expanduser().resolve())
    if cfg.data_dir and Path(cfg.data_dir).expanduser().exists():
        changes["data_dir"] = str(Path(cfg.data_dir).expanduser().resolve())
    return dataclasses.replace(cfg, **changes)


def data_moved(cfg):
    """Whether a run's recorded data path no longer exists (moved or deleted).

    Args:
        cfg: kvae.config.TrainConfig.

    Returns:
        bool.
    """
    from pathlib import Path

    return _is_path(cfg.dataset) and not Path(str(cfg.dataset)).expanduser().exists()


def check_recorded_data(cfg, run_dir):
    """Refuse, in one line with the flag to use, a run whose recorded data has moved.

    Args:
        cfg: the run's TrainConfig; run_dir: str or Path.

    Raises:
        RunError naming the path and `kvae train --resume RUN --dataset NEW`.
    """
    if data_moved(cfg):
        raise RunError(f"{run_dir} was trained on {cfg.dataset}, which is not there any more (moved or deleted?): "
                       f"`kvae train --resume {run_dir} --dataset NEW_PATH` records where it is now.")


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
    unit = needs_unit_interval(cfg)
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
    unit = needs_unit_interval(cfg)
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
    unit = needs_unit_interval(cfg)
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


def pipelines(cfg, ds, model, epoch):
    """The run's training and validation tf.data pipelines.

    Args:
        cfg: TrainConfig; ds: Dataset; model: the VAE (its strategy); epoch: int64 tf.Variable.

    Returns:
        (train, validation) datasets (train distributed per worker under a multi-worker strategy).
    """
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
