"""Named training recipes for the published statically binarised MNIST
likelihoods: `kvae train --recipe NAME --dataset binarized_mnist --data-dir DIR`,
and `kvae recipes` to list them with their anchors and kvae's measured figures.

A recipe fixes the model (networks, posterior, prior, objective), the
optimiser and the schedule (KL warm-up, early stopping on the validation
bound, an optional time limit) and the final evaluation (importance-sampled
log p(x) with k = 5000 on the run's test split). As in the papers, all
50,000 train images train and the published valid split selects the model;
without the withheld test file (kvae.data.load) the valid split is also the
one reported: no figure here saw test data.

Common to the recipes (the networks after Tomczak and Welling, 2018; iwae50, vamp and
hvae_vamp differ, below):

    networks    gated MLPs (kvae.networks.GatedDense) 784-300-300 encoder, mirrored decoder, Bernoulli pixels
    optimiser   Adam, learning rate 1e-3 falling to 0 along a cosine over the recipe's time limit, batch 100
    schedule    linear KL warm-up over 10 epochs (ELBO recipes); no early stopping: the decay always
                finishes and the best epoch by the validation bound is evaluated
    evaluation  log p(x) with k = 5000 importance samples

The time limits: vae and iaf 15 minutes, vamp 30 (its epochs take 2.5-3 times as long), vae_10min 10.
vamp puts the VampPrior over iaf's posterior (its 500 components are the posterior's Gaussians before the
flow, at the pseudo-inputs: kvae.priors.VampPrior(components="base")): 84.79 against 85.30 for the
paper's Gaussian posterior, which stays as vamp_gaussian. Both decay their decoder's kernels
(kvae.optimizers.AdamW, 0.3; 0.1 first): on the vae recipe 0.1 cut the train/validation gap from 7.4 to
4.6 nats, and log p(x) moved by no more than two seeds' spread (88.21 against 88.40 and 88.20); on
vamp_gaussian 85.70 against 85.97, and 0.3 gave 85.30 (bench/RESULTS.md).
On the vae network this beat the reference code's training (AdamNormGrad, He init, Adam's 5e-4
constant, warm-up over 100 epochs, early stopping with patience 50: 89.03 nats against 88.40), whose
decoder overfits; a Recipe can still ask for those (optimizer="normalized_adam", init="he",
patience=50). iwae50 has no warm-up (as Burda et al.), iaf's posterior and 120 minutes: an
epoch costs 34-35 s on the faster of this project's machines (family 26), 60-75 s on the other, against
5 s for vae; iwae50_gaussian keeps the papers' Gaussian posterior and the first 90 minutes. hvae_vamp
puts iaf's flow (2 steps, MADE 320) over both layers, keeps the papers' z1 networks (two gated layers of
300), their warm-up over 100 epochs, 250 pseudo-inputs, half the papers', and trains with Adamax (the
IAF paper's) at 1e-3 decayed to 0 (cosine) over 100 minutes, weight decay 0.15 on the decoder (AdamaxW):
83.02 (83.14 over 70 minutes); Adam at the papers' 5e-4 with decay 0.3 (the same decay a step) 83.21,
its train/validation gap 6.3 nats against 5.1; with Adam, 83.30 with 500 pseudo-inputs, whose epochs
take 1.1-1.3 times as long; 83.71 with one ReLU layer in the z1 networks;
84.59 with the papers' constant 5e-4 and early stopping, which ended at 35 minutes with the validation
ELBO flat; 85.12 without the flow. A cosine decay from 1e-3 with a 10-epoch warm-up overfit it sooner
(bench/RESULTS.md: two runs stopped at epoch ~100, the validation ELBO 1.5 nats below the papers'
schedule's at the same train ELBO).

Example:
    >>> from kvae import recipes
    >>> recipes.names()
    ['hvae_vamp', 'iaf', 'iwae50', 'iwae50_gaussian', 'vae', 'vae_10min', 'vamp', 'vamp_gaussian']
    >>> cfg = recipes.get("vamp").config(dataset="binarized_mnist", epochs=2)
    >>> cfg.prior, cfg.epochs, cfg.eval_k
    ('vamp_base', 2, 5000)
"""

import dataclasses
import functools
import json
from pathlib import Path
from typing import Optional, Union

__all__ = ["Recipe", "RECIPES", "MEASURED_FILE", "measured", "names", "get"]

#: flags a recipe leaves to the user (everything else is the recipe's)
OPEN_FIELDS = ("dataset", "data_dir", "download", "stream", "epochs", "time_limit", "seed", "eval_k",
               "steps_per_execution", "mixed_precision", "strategy", "recipe")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A documented way to train one model to a published figure.

    Args:
        name: str; summary: one line.
        published: str, the anchor (test NLL in nats, with its source).
        goal: float (kvae's goal for the validation NLL, nats), a str for a
            relative goal, or None.
        settings: dict of `kvae.config.TrainConfig` fields.
        hidden_units: the MLP's widths (encoder side first; the decoder mirrors them).
        gated: bool, `GatedDense` layers.
        posterior, prior: registry names or callables (latent_dim, input_shape) -> part.
        patience: int, epochs without a better validation bound before stopping (0: never).
        optimizer: "adam", "normalized_adam" (kvae.optimizers.NormalizedAdam, the reference code's) or
            "adamax" (Keras's Adamax, the IAF paper's).
        init: "glorot" (Keras's default), or "he" (kvae.networks.he_normal, the reference code's).
        weight_decay: float >= 0, decoupled weight decay on the decoder's kernels
            (kvae.optimizers.AdamW, or AdamaxW with "adamax"; 0: none). Not with "normalized_adam".
        weight_decay_end: float >= 0 or None, the decay at the run's end, reached linearly from
            `weight_decay` over the cosine's progress (needs lr_decay "cosine"; None: constant).
        average: float in [0, 1), the momentum of a moving average of the
            weights (Keras's `use_ema`), which the run validates, selects and
            evaluates in place of the trained weights (0: none).
        dataset: str, the data the anchors and measured figures are for (a run on other data says so).
    """

    name: str
    summary: str
    published: str
    goal: Union[float, str, None]
    settings: dict
    hidden_units: tuple = (300, 300)
    gated: bool = True
    posterior: object = "diagonal"
    prior: object = "standard_normal"
    patience: int = 50
    optimizer: str = "adam"
    init: str = "glorot"
    weight_decay: float = 0.0
    average: float = 0.0
    weight_decay_end: Optional[float] = None
    #: the data the recipe's anchors and measured figures are for
    dataset: str = "binarized_mnist"

    def __post_init__(self):
        if self.optimizer not in ("adam", "normalized_adam", "adamax") or self.init not in ("glorot", "he"):
            raise ValueError(f"recipe {self.name!r}: optimizer must be 'adam', 'normalized_adam' or 'adamax' and init "
                             f"'glorot' or 'he', got {self.optimizer!r} and {self.init!r}")
        if not self.weight_decay >= 0 or (self.weight_decay and self.optimizer == "normalized_adam"):
            raise ValueError(f"recipe {self.name!r}: weight_decay must be >= 0, and only with optimizer 'adam' or "
                             f"'adamax'; got {self.weight_decay!r} with {self.optimizer!r}")
        if self.weight_decay_end is not None and not (self.weight_decay_end >= 0 and self.weight_decay
                                                      and self.settings.get("lr_decay") == "cosine"):
            raise ValueError(f"recipe {self.name!r}: weight_decay_end must be >= 0, with weight_decay > 0 and "
                             f"lr_decay 'cosine' (its progress); got {self.weight_decay_end!r}")
        if not 0 <= self.average < 1:
            raise ValueError(f"recipe {self.name!r}: average must be in [0, 1), got {self.average!r}")

    def config(self, **given):
        """The recipe's run settings: its own, then `given`.

        Args:
            **given: `TrainConfig` fields, only those in OPEN_FIELDS (others
                raise RunError naming the flag).

        Returns:
            kvae.config.TrainConfig, validated; its model fields name the
            recipe's parts (the recipe builds them with its own options).
        """
        from kvae.config import RunError, TrainConfig, flag

        fixed = sorted(k for k in given if k not in OPEN_FIELDS)
        if fixed:
            raise RunError(f"{flag(fixed[0])}: recipe {self.name!r} fixes the model and its training; drop the "
                           "flag, or train without --recipe")
        base = dict(epochs=2000, batch_size=100, learning_rate=5e-4, latent_dim=40, binarize="none", eval_k=5000)
        cfg = TrainConfig(**{**base, **self.settings, **given, "recipe": self.name})
        cfg.validate()
        return cfg

    def build_model(self, cfg, ds, model=None):
        """The recipe's model.

        Args:
            cfg: the TrainConfig `config` made; ds: the kvae.data.Dataset;
            model: a kvae.VAE to use instead of the recipe's parts (`kvae train --config`
                rebuilds a run's recorded model), then initialised as the recipe's.

        Returns:
            (an uncompiled kvae.VAE, its optimizer: keras.optimizers.Adam or Adamax,
            kvae.optimizers.NormalizedAdam or, with weight decay, kvae.optimizers.AdamW or AdamaxW).
        """
        import keras

        import kvae
        from kvae.optimizers import AdamaxW, AdamW, NormalizedAdam

        def part(spec):
            return spec(cfg.latent_dim, ds.input_shape) if callable(spec) else spec

        model = model or kvae.VAE(ds.input_shape, cfg.latent_dim,
                         encoder=kvae.networks.mlp(self.hidden_units, gated=self.gated),
                         decoder=kvae.networks.mlp(self.hidden_units[::-1], gated=self.gated),
                         likelihood=cfg.likelihood, posterior=part(self.posterior), prior=part(self.prior),
                         objective=cfg.objective, num_samples=cfg.num_samples, seed=cfg.seed)
        if self.init == "he":
            kvae.networks.he_normal(model, seed=cfg.seed)
        options = dict(learning_rate=cfg.learning_rate)
        if self.average:
            options.update(use_ema=True, ema_momentum=self.average)
        if self.weight_decay:
            decayed = AdamaxW if self.optimizer == "adamax" else AdamW
            return model, decayed(weight_decay=self.weight_decay, weight_decay_end=self.weight_decay_end, **options)
        optimizer = {"adam": keras.optimizers.Adam, "normalized_adam": NormalizedAdam,
                     "adamax": keras.optimizers.Adamax}[self.optimizer]
        return model, optimizer(**options)

    @property
    def monitor(self):
        """(metric, mode) of model selection: the validation bound the recipe
        optimises, or the ELBO where a warm-up weights the KL in the loss."""
        from kvae import objectives

        bound = (objectives.get(self.settings.get("objective", "elbo")).selects_by_loss
                 and not self.settings.get("kl_warmup"))
        return ("val_loss", "min") if bound else ("val_elbo", "max")  # a warm-up weights val_loss

    def callbacks(self, state=None):
        """Early stopping on the validation bound; given a run's state.json
        (`kvae.rundir.read_state`), it continues that run's patience.

        Returns:
            list of keras callbacks.
        """
        from kvae.callbacks import EarlyStopping
        from kvae.rundir import best_so_far

        if not self.patience:
            return []
        metric, mode = self.monitor
        best, best_epoch = best_so_far(state or {}, metric)
        return [EarlyStopping(metric, mode, self.patience, best=best, best_epoch=best_epoch)]

    def row(self):
        """What `kvae recipes` prints about it.

        Returns:
            (name, summary, published, goal, measured), each a str.
        """
        m = measured().get(self.name)
        figure = (f"{m['nll']:.2f} nats in {m['minutes']:.0f} min ({m['epochs']} epochs; {m['where']})"
                  if m else "not measured yet")
        return self.name, self.summary, self.published, self.goal_text(), figure

    def goal_text(self):
        """The goal as `kvae recipes` and bench/recipes.py print it.

        Returns:
            str: "<= 88.5" for a number, a relative goal as written, "-" for none.
        """
        return "-" if self.goal is None else self.goal if isinstance(self.goal, str) else f"<= {self.goal}"


def _vamp(latent_dim, input_shape, components="posterior"):
    from kvae.priors import VampPrior

    return VampPrior(latent_dim, input_shape, num_pseudo_inputs=500, components=components)


def _iaf(latent_dim, input_shape):
    from kvae.flows import IAFPosterior

    return IAFPosterior(num_steps=2, hidden_units=320, context_dim=40)


def _hierarchical(latent_dim, input_shape):
    from kvae.hierarchical import HierarchicalPosterior

    return HierarchicalPosterior(context_dim=300, hidden_units=300, hidden_layers=2, gated=True, flow_steps=2,
                                 flow_hidden_units=320)


def _hierarchical_vamp(latent_dim, input_shape, num_pseudo_inputs=250):
    from kvae.hierarchical import HierarchicalVampPrior

    return HierarchicalVampPrior(latent_dim, input_shape, num_pseudo_inputs=num_pseudo_inputs, hidden_units=300,
                                 hidden_layers=2, gated=True)


_ELBO = dict(objective="elbo", num_samples=1, kl_warmup=100)
#: a short warm-up and a learning rate that falls to 0 by the end of the time limit: on the vae network
#: it beat the reference code's training (bench/RESULTS.md), whose decoder overfits
_COSINE = dict(kl_warmup=10, lr_decay="cosine", learning_rate=1e-3)
RECIPES = {r.name: r for r in (
    Recipe("vae", "ELBO, N(0, I) prior, 40 latents; warm-up 10 epochs, Adam 1e-3 decaying to 0 (cosine) over 15 "
           "minutes, the best epoch by the validation ELBO", "88.56 (Tomczak & Welling 2018); 89.78 pythae", 88.5,
           {**_ELBO, **_COSINE, "time_limit": 15.0}, patience=0),
    Recipe("iwae50", "IWAE bound, k = 50, iaf's posterior (2 steps, MADE 320), N(0, I) prior, 40 latents; Adam 1e-3 "
           "decaying to 0 (cosine) over 120 minutes (151-214 epochs on the faster machine: each costs 50 decoder "
           "passes), weight decay 0.2 on the decoder's kernels (AdamW), the best epoch by the validation bound",
           "86.82 to 87.10 (pythae; Burda et al.)", 86.5,
           {**_COSINE, "kl_warmup": 0, "objective": "iwae", "num_samples": 50, "time_limit": 120.0,
            "posterior": "iaf"}, posterior=_iaf, patience=0, weight_decay=0.2),
    Recipe("iwae50_gaussian", "iwae50 with the papers' Gaussian posterior: IWAE bound, k = 50, N(0, I) prior, 40 "
           "latents; Adam 1e-3 decaying to 0 (cosine) over 90 minutes (about 70 epochs on the slower machine), the "
           "best epoch by the validation bound", "86.82 to 87.10 (pythae; Burda et al.)", 86.5,
           {**_COSINE, "kl_warmup": 0, "objective": "iwae", "num_samples": 50, "time_limit": 90.0},
           patience=0),
    Recipe("vamp", "ELBO, VampPrior with 500 pseudo-inputs over iaf's posterior (the prior mixes its Gaussians "
           "before the flow), 40 latents; trained as vae, over 30 minutes, with weight decay 0.3 on the decoder's "
           "kernels (AdamW)", "85.57 (Tomczak & Welling 2018, Gaussian posterior)", 85.0,
           {**_ELBO, **_COSINE, "time_limit": 30.0, "prior": "vamp_base", "posterior": "iaf"},
           prior=functools.partial(_vamp, components="base"), posterior=_iaf, patience=0, weight_decay=0.3),
    Recipe("vamp_gaussian", "vamp with the paper's Gaussian posterior: ELBO, VampPrior with 500 pseudo-inputs, 40 "
           "latents; trained as vae, over 30 minutes, with weight decay 0.3 on the decoder's kernels (AdamW)",
           "85.57 (Tomczak & Welling 2018)", 85.0, {**_ELBO, **_COSINE, "time_limit": 30.0, "prior": "vamp"},
           prior=_vamp, patience=0, weight_decay=0.3),
    Recipe("hvae_vamp", "two stochastic layers (40 + 40) with the VampPrior (250 pseudo-inputs) on the top one, "
           "z1's networks two gated layers of 300 (the papers'), iaf's flow (2 steps, MADE 320) over [z2, z1] after "
           "the two Gaussians; the papers' warm-up (100 epochs); Adamax 1e-3, decaying to 0 (cosine) over 100 "
           "minutes, weight decay 0.15 on the decoder's kernels (AdamaxW), the best epoch by the validation ELBO",
           "83.19 (Tomczak & Welling 2018)", 83.0,
           {**_ELBO, "time_limit": 100.0, "latent_dim": 80, "posterior": "hierarchical", "prior": "hierarchical_vamp",
            "lr_decay": "cosine", "learning_rate": 1e-3},
           posterior=_hierarchical, prior=_hierarchical_vamp, patience=0, weight_decay=0.15, optimizer="adamax"),
    Recipe("iaf", "ELBO, IAF posterior (2 steps, MADE 320), N(0, I) prior, 40 latents; trained as vae",
           "IAF paper: dynamic MNIST only", ">= 1 nat better than vae",
           {**_ELBO, **_COSINE, "time_limit": 15.0, "posterior": "iaf"}, posterior=_iaf, patience=0),
    Recipe("vae_10min", "the vae network in 10 minutes: warm-up 10 epochs, plain Adam 1e-3 decaying to 0 (cosine) "
           "over the 10 minutes", "PyTorch reference 91.5 in 10 min (this machine)", 89.0,
           {**_ELBO, **_COSINE, "time_limit": 10.0}, patience=0),
)}

#: the measured figures' file: bench/recipes.py --record writes it, `kvae recipes` reads it
MEASURED_FILE = Path(__file__).with_name("recipes_measured.json")


def measured():
    """kvae's measured validation NLL per recipe (nats, k = 5000), as bench/recipes.py --record wrote it.

    Returns:
        dict {recipe name: {"nll", "minutes", "epochs", "where"}}; {} if the file is absent.
    """
    if not MEASURED_FILE.is_file():
        return {}
    return json.loads(MEASURED_FILE.read_text())["recipes"]


def names():
    """The recipe names.

    Returns:
        list of str, sorted.
    """
    return sorted(RECIPES)


def get(name):
    """The `Recipe` called `name`.

    Args:
        name: str, one of `names()`.

    Returns:
        Recipe.

    Raises:
        ValueError listing the names if `name` is not one.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Choose one of: {', '.join(names())} (kvae recipes lists them).")
    return RECIPES[name]
