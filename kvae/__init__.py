"""kvae: variational autoencoders for Keras 3 (TensorFlow backend).

The public API:
    VAE                      the model (kvae.model.VAE)
    load_model(path)         a saved VAE: a `.keras` file or a run directory (best or last),
                             with a one-line error for a bad file
    kvae.networks            mlp(), conv() encoder/decoder bodies
    kvae.distributions       posteriors and likelihoods
    kvae.priors              StandardNormal, MixtureOfGaussians, VampPrior, SphericalUniform
    kvae.objectives          ELBO, FreeBitsELBO, CapacityELBO, IWAE: objective objects
    kvae.registry            one lookup of parts by name (likelihood, posterior, prior, network, objective, score)
    kvae.replicas            per-replica noise, seeds and cross-replica batch statistics
    kvae.callbacks           KLWarmup, CapacityAnnealing, image grids, checkpoints
    kvae.evaluate            log-likelihood, ELBO summaries, active units
    kvae.latent              interpolation, traversal, latent map, masks, denoise, inpaint
    kvae.anomaly             anomaly scores (nll, elbo, complexity, likelihood ratio, regret, typicality),
                             a calibrated threshold, AUROC
    kvae.exporters           SavedModel, TFLite, ONNX exports and their checks
    kvae.plots               image grids and training curves (needs matplotlib)
    kvae.data                datasets (one `load`), user files, checks, streaming sources, tf.data pipelines
    kvae.config              TrainConfig: the settings of a training run
    kvae.rundir              reading a run directory (config, state, checkpoints)
    kvae.runs                training, resuming and evaluating a run
    kvae.files               atomic writes and run-directory locks

docs/ARCHITECTURE.md draws the parts and shows how to add one.

`import kvae` registers kvae's classes with Keras (it imports `kvae.model`,
the parts and `kvae.optimizers`), so `keras.saving.load_model` reads a kvae `.keras`
file; the other submodules load on first use (PEP 562). The `kvae` command
starts through `kvae_command`, which keeps this import lazy, so `kvae --help`
answers without importing TensorFlow.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("anomaly", "callbacks", "config", "data", "distributions", "evaluate", "exporters", "extras", "files", "flows", "fused", "hierarchical", "latent",
               "model", "networks", "objectives", "optimizers", "plots", "priors", "progress", "recipes", "registry", "replicas", "rundir", "runs", "saving", "scoring")

__all__ = ["VAE", "load_model", "__version__", *_SUBMODULES]


def __getattr__(name):
    if name == "VAE":
        from kvae.model import VAE

        return VAE
    if name in _SUBMODULES:
        return importlib.import_module(f"kvae.{name}")
    raise AttributeError(f"module 'kvae' has no attribute {name!r}")


def _started_by_the_command():
    """Whether the `kvae` console script (kvae_command) is starting: then nothing heavy is imported here."""
    import sys

    return "kvae_command" in sys.modules


if not _started_by_the_command():
    for _module in ("kvae.model", "kvae.flows", "kvae.hierarchical", "kvae.optimizers"):
        importlib.import_module(_module)  # registers the VAE, every part and kvae's optimizers with Keras


def __dir__():
    return sorted(set(globals()) | set(__all__))


def load_model(path, which="best"):
    """A kvae model from a `.keras` file or a run directory (`kvae.saving.load_model`).

    Args:
        path: str or Path, a `.keras` file or a run directory.
        which: str, 'best' or 'last' (a run directory's checkpoint).

    Returns:
        kvae.VAE.

    Raises:
        ValueError naming the path if it cannot be loaded as a kvae model.
    """
    from kvae import saving

    return saving.load_model(path, which)
