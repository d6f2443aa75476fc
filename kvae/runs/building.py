"""What a run builds: its recipe, its model and optimizer, its runtime settings, its config.json."""

import math
from dataclasses import asdict

from kvae import files
from kvae.config import RunError
from kvae.rundir import CONFIG_FILE

__all__ = ["recipe_of", "build_model", "config_from_file", "model_from_config", "parts_of", "new_model", "setup_runtime", "write_config"]


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


def build_model(cfg, ds, model_config=None):
    """The model and optimizer a run trains.

    Args:
        cfg: kvae.config.TrainConfig; ds: kvae.data.Dataset (its shape and classes);
        model_config: dict or None, a run's recorded model (config.json's "model", every part
            with its options): built as it is instead of from the settings' names.

    Returns:
        (an uncompiled kvae.VAE, a keras.optimizers.Adam).
    """
    import keras

    import kvae

    if cfg.conditional and not ds.num_classes:
        raise RunError(f"--conditional needs labels, and {cfg.dataset} has none.")
    model = None if model_config is None else model_from_config(model_config, ds)
    if cfg.recipe:
        return recipe_of(cfg).build_model(cfg, ds, model)
    if model is not None:
        return model, keras.optimizers.Adam(cfg.learning_rate)
    return kvae.VAE(
        input_shape=ds.input_shape, latent_dim=cfg.latent_dim, encoder=cfg.network, decoder=cfg.network,
        num_classes=ds.num_classes if cfg.conditional else None, seed=cfg.seed, **parts_of(cfg, ds.input_shape),
    ), keras.optimizers.Adam(cfg.learning_rate)


def model_from_config(model_config, ds):
    """A fresh kvae.VAE from a recorded model config, checked against the data it will train on.

    Args:
        model_config: dict, a `VAE.get_config()` (config.json's "model"); ds: kvae.data.Dataset.

    Returns:
        kvae.VAE (new weights).

    Raises:
        RunError naming what does not fit.
    """
    import kvae

    try:
        model = kvae.VAE.from_config(dict(model_config))
    except (TypeError, ValueError, KeyError) as e:
        raise RunError(f"--config: its \"model\" cannot be built: {str(e).splitlines()[0][:300]}") from None
    if tuple(model.data_shape) != tuple(ds.input_shape):
        raise RunError(f"--config: its model takes input_shape {tuple(model.data_shape)}, but {ds.name} has "
                       f"{tuple(ds.input_shape)}.")
    if model.num_classes not in (None, ds.num_classes):
        raise RunError(f"--config: its model is conditional on {model.num_classes} classes, but {ds.name} has "
                       f"{ds.num_classes}.")
    return model


def parts_of(cfg, input_shape):
    """The likelihood, posterior, prior and objective a config names, each made with its options.

    The objective gets `num_samples`, and `beta`, `free_bits`, `capacity_gamma` where they differ
    from their defaults, then `objective_options`: an option the part does not take is refused.

    Args:
        cfg: kvae.config.TrainConfig; input_shape: one example's shape.

    Returns:
        dict of `kvae.VAE` keyword arguments (likelihood, posterior, prior, objective).

    Raises:
        RunError naming the flag and the part if an option does not fit.
    """
    from kvae import registry
    from kvae.config import TrainConfig, flag

    default = TrainConfig()
    objective = {"num_samples": cfg.num_samples}
    objective.update({k: getattr(cfg, k) for k in ("beta", "free_bits", "capacity_gamma")
                      if getattr(cfg, k) != getattr(default, k)})
    objective.update(cfg.objective_options)
    made = {}
    for kind, options, context in (("likelihood", cfg.likelihood_options, {}),
                                    ("posterior", cfg.posterior_options, {}),
                                    ("prior", cfg.prior_options, {"latent_dim": cfg.latent_dim,
                                                                  "input_shape": tuple(input_shape)}),
                                    ("objective", objective, {})):
        try:
            made[kind] = registry.build(kind, getattr(cfg, kind), options, **context)
        except (ValueError, TypeError) as e:
            given = [k for k in options if k in getattr(cfg, f"{kind}_options")]
            where = flag(f"{kind}_options") if given else flag(kind)
            raise RunError(f"{where}: {e}") from None
    return made


def new_model(cfg, ds, model_config=None):
    """The run's model, compiled with its optimizer.

    Args:
        cfg: TrainConfig; ds: Dataset.

    Returns:
        kvae.VAE, compiled.
    """
    model, optimizer = build_model(cfg, ds, model_config)
    # more steps per execution than an epoch has would confuse the progress bar
    steps = math.ceil(len(ds.train[0]) / cfg.batch_size)
    if cfg.strategy == "multiworker":  # Keras 3.15 fails with more across workers (keras-team/keras#19246)
        steps = 1
    model.compile(optimizer=optimizer, steps_per_execution=min(cfg.steps_per_execution, steps))
    return model


def setup_runtime(cfg):
    """Threads, seeds and the dtype policy of a run, before its model is built.

    Args:
        cfg: TrainConfig.
    """
    import keras
    import tensorflow as tf

    if cfg.strategy == "none":
        try:  # leaves both cores to the training step (bench/RESULTS.md)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # TF already initialised (e.g. called from Python, not the CLI)
    keras.utils.set_random_seed(cfg.seed)
    keras.config.set_dtype_policy("float32" if cfg.mixed_precision == "none" else cfg.mixed_precision)


def write_config(run_dir, cfg, model, ds):
    """Write config.json: the settings, the built model's config (every part with its options) and the data.

    Args:
        run_dir: Path; cfg: TrainConfig; model: kvae.VAE; ds: Dataset.
    """
    import kvae

    files.write_json(run_dir / CONFIG_FILE, {
        "kvae_version": kvae.__version__, "train": asdict(cfg), "model": model.get_config(),
        "data": {"name": ds.name, "source": ds.source, "input_shape": list(ds.input_shape),
                 "num_classes": ds.num_classes, "notes": ds.notes},
    })


def config_from_file(path, given=None):
    """The settings and the model a run's config.json records, for a new run (`kvae train --config`).

    Args:
        path: str or Path of a config.json; given: {TrainConfig field: value} or None, flags to
            apply: only the recipes' open fields (dataset, data_dir, epochs, seed, ...).

    Returns:
        (kvae.config.TrainConfig, validated; the "model" dict or None).

    Raises:
        RunError naming the file, the key or the flag.
    """
    import json
    from pathlib import Path

    from kvae.config import TrainConfig, flag
    from kvae.recipes import OPEN_FIELDS

    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"--config {path}: cannot read it as JSON ({e}).") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("train"), dict):
        raise RunError(f"--config {path} has no \"train\" settings; give a kvae run's config.json.")
    fixed = sorted(k for k in (given or {}) if k not in OPEN_FIELDS and raw["train"].get(k) != given[k])
    if fixed:
        raise RunError(f"{flag(fixed[0])}: --config {path} fixes the model and its training; edit the file "
                       "instead, or train without --config")
    cfg = TrainConfig.from_dict({**raw["train"], **(given or {})}, where=str(path))
    model = raw.get("model")
    if model is not None and not isinstance(model, dict):
        raise RunError(f"--config {path}: \"model\" must be an object (a kvae.VAE config).")
    return cfg, model
