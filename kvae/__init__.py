"""kvae: variational autoencoders for Keras 3 (TensorFlow backend).

The public API:
    VAE                      the model (kvae.model.VAE)
    kvae.networks            mlp(), conv() encoder/decoder bodies
    kvae.distributions       posteriors and likelihoods
    kvae.priors              StandardNormal, MixtureOfGaussians, VampPrior
    kvae.objectives          ELBO terms and KL as pure functions
    kvae.data                named datasets found offline, binarisation, tf.data pipelines
"""

__version__ = "0.1.0"

from kvae import data, distributions, networks, objectives, priors
from kvae.model import VAE

__all__ = ["VAE", "data", "distributions", "networks", "objectives", "priors", "__version__"]
