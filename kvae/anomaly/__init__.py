"""Anomaly scores of a trained VAE, a threshold calibrated on held-in data,
and the measures of how well a score separates two sets.

The likelihood of a deep generative model is a poor anomaly score on its own:
simple images (few strokes, flat backgrounds, constants) get a HIGH
likelihood whatever they are, so a model of clothes finds handwritten digits
more likely than clothes (Nalisnick et al. 2019). The scores here, higher is
more anomalous, correct for that in different ways:

    name               score                                  needs                     cost per input
    nll                -log p(x), importance sampled (k)      -                         k decoder passes
    elbo               -(log p(x | z = mode) - KL(q || p))    -                         1 encoder + 1 decoder pass
    complexity         -log p(x) - L(x) (Serra et al. 2020)   -                         nll + one compression
    likelihood_ratio   -log p(x) + log p_bg(x) (Ren et al.    a background model        2 x nll
                       2019)                                  (`kvae train --perturb`)
    likelihood_regret  ELBO(x; q fitted to x alone) -         -                         `steps` backward passes
                       ELBO(x; q from the encoder) (Xiao                                + 2 x `samples` decoder
                       et al. 2020)                                                     passes
    typicality         |-log p(x) - H| (Nalisnick et al.      held-in data (`fit`)      as nll
                       2019b), H the mean on held-in data

What each assumes:
- complexity: L(x) is the length of x under a lossless compressor that knows
  nothing of the data (an adaptive context model for binary images, PNG for
  others; `compressed_bits`), in nats, subtracted from -log p(x). What is
  left is how much WORSE the model codes x than a compressor that knows
  nothing of the data: small for the data the model learnt, large for
  anything else, however simple. It assumes the compressor sees the same
  simplicity (flat backgrounds, smooth strokes) the model rewards.
- likelihood_ratio: the background model, trained on inputs with a share of
  pixels replaced by noise, learns the population's low-level statistics
  (background, stroke density) but not its semantics; the ratio cancels the
  former. The background must see the same kind of inputs (shape, likelihood).
- likelihood_regret: an in-distribution input is already coded well by the
  amortised encoder; an anomalous one gains much when q(z|x) is optimised for
  it alone (here: the posterior's parameters, per input, by Adam on the ELBO
  with the decoder fixed; Xiao et al. optimise the encoder's weights, which
  is ~steps x slower and not batched).
- typicality: in-distribution inputs have -log p(x) near the model's entropy
  H (estimated on held-in data); anything far from it on EITHER side is
  atypical, which catches the too-likely simple inputs that nll misses.

Modules: `base` (Score), `likelihood` (nll, elbo), `complexity` (and its
compressors), `reference` (likelihood_ratio, likelihood_regret, typicality),
`calibration` (threshold, AUROC), `lookup` (scores by name), `report` (the
anomaly report that `kvae score --report` writes).

Example:
    >>> import numpy as np, kvae
    >>> from kvae import anomaly
    >>> model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    >>> x = np.random.default_rng(0).integers(0, 2, (6, 8, 8, 1)).astype("float32")
    >>> anomaly.get("elbo")(model, x).shape
    (6,)
    >>> anomaly.auroc([0.1, 0.2, 0.3], [0.25, 0.9])
    0.8333333333333334
"""

from kvae.anomaly.base import Score
from kvae.anomaly.calibration import Threshold, auroc, calibrate, fpr_at_tpr
from kvae.anomaly.complexity import COMPRESSORS, CONTEXT_TEMPLATE, Complexity, compressed_bits
from kvae.anomaly.likelihood import NLL, NegativeELBO
from kvae.anomaly.lookup import from_options, get, names, parameters
from kvae.anomaly.reference import LikelihoodRatio, LikelihoodRegret, Typicality

__all__ = ["Score", "NLL", "NegativeELBO", "Complexity", "LikelihoodRatio", "LikelihoodRegret", "Typicality",
           "COMPRESSORS", "CONTEXT_TEMPLATE", "get", "names", "parameters", "from_options", "compressed_bits", "Threshold", "calibrate", "auroc", "fpr_at_tpr"]
