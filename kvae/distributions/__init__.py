"""Posteriors q(z|x) and likelihoods p(x|z).

Networks output plain float32 tensors of *parameters*; the classes here know how
many parameters they need, and build `tfp.distributions` objects from them inside
train/test steps and objectives. Nothing here is a `tfp.layers` layer (those do
not work with Keras 3).

Log-variances and log-scales are clamped before `exp`, so that a float16 network
body cannot overflow them, and every builder casts its parameters to float32
(`kvae.distributions.gaussian`, the one Gaussian helper). Modules: `posteriors`,
`likelihoods`, `gaussian`, `part` (their shared base).

Example:
    >>> from kvae import distributions
    >>> q = distributions.get_posterior("diagonal").distribution([[0.0, 0.0, 0.0, 0.0]])
    >>> [int(n) for n in q.batch_shape + q.event_shape]
    [1, 2]
"""

from kvae.distributions.gaussian import LOG_SCALE_MAX, LOG_SCALE_MIN, LOG_VAR_MAX, LOG_VAR_MIN
from kvae.distributions.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian, Likelihood, get_likelihood
from kvae.distributions.part import Part
from kvae.distributions.posteriors import (Density, DiagonalGaussian, FullCovarianceGaussian, Posterior,
                                           PowerSpherical, get_posterior)

__all__ = ["Part", "Posterior", "Density", "DiagonalGaussian", "FullCovarianceGaussian", "PowerSpherical", "Likelihood",
           "Bernoulli", "ContinuousBernoulli", "Gaussian", "get_posterior", "get_likelihood",
           "LOG_VAR_MIN", "LOG_VAR_MAX", "LOG_SCALE_MIN", "LOG_SCALE_MAX"]
