"""kvae: variational autoencoders for Keras 3 (TensorFlow backend).

The public API:
    VAE                      the model (kvae.model.VAE)
    kvae.networks            mlp(), conv() encoder/decoder bodies
    kvae.distributions       posteriors and likelihoods
    kvae.priors              StandardNormal, MixtureOfGaussians, VampPrior, SphericalUniform
    kvae.objectives          ELBO terms and KL as pure functions
    kvae.callbacks           KLWarmup, CapacityAnnealing, image grids, checkpoints
    kvae.evaluate            log-likelihood, active units, latent tools
    kvae.exporters           SavedModel, TFLite, ONNX exports and their checks
    kvae.plots               image grids and training curves
    kvae.data                named datasets found offline, binarisation, tf.data pipelines
"""

__version__ = "0.1.0"

from kvae import (callbacks, data, distributions, evaluate, exporters, networks, objectives, plots,
                  priors)
from kvae.model import VAE

__all__ = ["VAE", "callbacks", "data", "distributions", "evaluate", "exporters", "networks", "objectives",
           "plots", "priors", "__version__"]
