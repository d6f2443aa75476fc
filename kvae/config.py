"""What `kvae train` was asked for (`TrainConfig`, stored in a run's
config.json), validated the same way from flags, Python and files.

Example:
    >>> from kvae.config import TrainConfig
    >>> TrainConfig(epochs=0).validate()
    Traceback (most recent call last):
    ...
    kvae.config.RunError: --epochs must be >= 1, got 0
"""

import dataclasses
import math
from dataclasses import dataclass, field

from kvae import data as kdata

__all__ = ["RunError", "TrainConfig", "RESUMABLE", "flag"]

RESUMABLE = ("epochs", "data_dir", "download", "time_limit")
_FLAGS = {"learning_rate": "--lr", **{f"{k}_options": f"--{k}-option" for k in ("likelihood", "posterior", "prior", "objective")}}


def flag(field):
    """The command-line flag of a TrainConfig field.

    Args:
        field: str, a TrainConfig field name.

    Returns:
        str.

    Example:
        >>> flag("learning_rate"), flag("kl_warmup")
        ('--lr', '--kl-warmup')
    """
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


class RunError(ValueError):
    """A run directory that cannot be used as asked."""


@dataclass
class TrainConfig:
    """What `kvae train` was asked for; stored in config.json. Every field is
    a `kvae train` flag (`flag(name)`); the defaults here are the CLI's.

    Args:
        dataset, data_dir, download: where the data comes from (`kvae.data.load`).
        stream: read the training split from disk a batch at a time (`kvae.data.load_streamed`);
            always so for a `.npy` file and a folder written by `kvae data prepare`.
        binarize: None (dynamic for Bernoulli-type likelihoods) or a `kvae.data.BINARIZE` mode.
        perturb: share in [0, 1) of training pixels replaced by uniform noise, drawn anew every
            epoch: trains the background model of `kvae.anomaly.LikelihoodRatio`.
        network, latent_dim, likelihood, posterior, prior: the model's parts (registry names).
        likelihood_options, posterior_options, prior_options, objective_options: dict, keyword
            arguments of those parts (`--objective-option floor=2`; `kvae.registry.build` refuses
            an option a part does not take).
        beta, objective, num_samples, free_bits, capacity_gamma: the objective (see `kvae.VAE`).
        kl_warmup, kl_schedule, max_capacity: the schedules (`kvae.callbacks`).
        conditional: bool; epochs, batch_size, learning_rate, steps_per_execution, seed: training.
        mixed_precision: 'none', 'mixed_float16' or 'mixed_bfloat16'.
        strategy: 'none', 'mirrored' or 'multiworker'.
        eval_k: importance samples of the final test log p(x) in summary.json (0: ELBO only).
        time_limit: minutes; training stops at the end of the first epoch past it (0: no limit).
        lr_decay: 'none' or 'cosine' (the learning rate follows a cosine to 0 over the run: over
            `epochs`, or over `time_limit` if that ends the run first; kvae.callbacks.TimeLimit).
        recipe: None or a `kvae.recipes` name (`Recipe.config` makes the whole config; `kvae.runs`
            checks the name, this module knows no recipes).
    """

    dataset: str = "fashion_mnist"
    data_dir: str = None
    download: bool = False
    stream: bool = False  # read the training split from disk batch by batch (kvae.data.load_streamed)
    binarize: str = None  # None: 'dynamic' for Bernoulli likelihoods, else 'none'
    perturb: float = 0.0  # share of training pixels replaced by noise (a likelihood-ratio background model)
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
    eval_k: int = 0  # importance samples for the final test log p(x) (0: ELBO only)
    time_limit: float = 0.0  # minutes of training after which no new epoch starts (0: none)
    lr_decay: str = "none"  # 'cosine': the learning rate falls to 0 by the run's end (--epochs or --time-limit)
    recipe: str = None  # a kvae.recipes name: the model and schedule are the recipe's
    likelihood_options: dict = field(default_factory=dict)
    posterior_options: dict = field(default_factory=dict)
    prior_options: dict = field(default_factory=dict)
    objective_options: dict = field(default_factory=dict)

    def validate(self):
        finite = [f"{flag(k)} must be a finite number, got {getattr(self, k)}"
                  for k in ("beta", "learning_rate", "free_bits", "capacity_gamma", "max_capacity", "perturb",
                            "time_limit")
                  if not math.isfinite(getattr(self, k))]
        if finite:
            raise RunError(finite[0])
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (0 <= self.perturb < 1, f"--perturb must be in [0, 1), got {self.perturb}"),
            (self.latent_dim >= 1, f"--latent-dim must be >= 1, got {self.latent_dim}"),
            (self.beta >= 0, f"--beta must be >= 0, got {self.beta}"),
            (self.num_samples >= 1, f"--num-samples must be >= 1, got {self.num_samples}"),
            (self.free_bits >= 0, f"--free-bits must be >= 0, got {self.free_bits}"),
            (self.kl_warmup >= 0, f"--kl-warmup must be >= 0, got {self.kl_warmup}"),
            (self.kl_schedule in ("linear", "cyclical"), "--kl-schedule must be linear or cyclical"),
            (self.capacity_gamma >= 0, f"--capacity-gamma must be >= 0, got {self.capacity_gamma}"),
            (self.max_capacity >= 0, f"--max-capacity must be >= 0, got {self.max_capacity}"),
            (0 <= self.eval_k <= 100000, f"--eval-k must be in 0..100000, got {self.eval_k}"),
            (self.time_limit >= 0, f"--time-limit must be >= 0 minutes, got {self.time_limit}"),
            (self.lr_decay in ("none", "cosine"), f"--lr-decay must be none or cosine, got {self.lr_decay}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.learning_rate > 0, f"--lr must be > 0, got {self.learning_rate}"),
            (self.steps_per_execution >= 1, f"--steps-per-execution must be >= 1, got {self.steps_per_execution}"),
            (self.binarize in (None,) + kdata.BINARIZE, f"--binarize must be one of {', '.join(kdata.BINARIZE)}"),
            (not (self.streamed and self.binarization == "static"),
             "--binarize static draws once over the whole array in memory; with streamed data use "
             "dynamic, threshold or none"),
            (self.mixed_precision in ("none", "mixed_float16", "mixed_bfloat16"),
             f"--mixed-precision must be none, mixed_float16 or mixed_bfloat16, got {self.mixed_precision}"),
            (self.strategy in ("none", "mirrored", "multiworker"),
             f"--strategy must be none, mirrored or multiworker, got {self.strategy}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RunError(message)
        if self.kl_warmup and not self._part("objective").supports_kl_warmup:
            raise RunError(f"--kl-warmup weights the KL term of the objective; {self.objective}'s gradient has no "
                           "KL weight")

    def _part(self, kind):
        """The part this config names for `kind` ('likelihood', 'objective'), with its defaults, to read
        what it declares; RunError naming the flag if the name is not registered."""
        from kvae import registry

        name = getattr(self, kind)
        try:
            return registry.get(kind, name)
        except ValueError as e:
            raise RunError(f"--{kind}: {e}") from None

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
            if not _type_ok(value, f.type, nullable=f.default is None and f.default_factory is dataclasses.MISSING):
                raise RunError(f"{where}: {key!r} must be {f.type.__name__}"
                               f"{' or null' if f.default is None else ''}, got {value!r}.")
        cfg = cls(**raw)
        try:
            cfg.validate()
        except RunError as e:
            raise RunError(f"{where}: {e}") from None
        return cfg

    @property
    def streamed(self):
        """Whether the training split is read from disk (`--stream`, a .npy, a prepared
        folder, the directory of prepared TFDS data)."""
        from pathlib import Path

        path = Path(str(self.dataset)).expanduser()
        return (self.stream or path.suffix == ".npy" or (path / "kvae-data.json").is_file()
                or (path / "dataset_info.json").is_file())

    @property
    def binarization(self):
        if self.binarize:
            return self.binarize
        return "dynamic" if self._part("likelihood").unit_interval else "none"


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
