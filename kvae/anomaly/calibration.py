"""A threshold calibrated on held-in scores, and how well a score separates two sets (AUROC, FPR at a TPR)."""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Threshold", "calibrate", "auroc", "fpr_at_tpr"]


@dataclass
class Threshold:
    """A score threshold: inputs scoring ABOVE `value` are flagged anomalous.

    Args:
        value: float; fpr: the false-positive rate asked for; heldin_fpr: the
        share of the held-in scores above `value` (<= fpr); n: held-in scores used.
    """

    value: float
    fpr: float
    heldin_fpr: float
    n: int

    def flag(self, scores):
        """Args: scores: array [N]. Returns: bool [N], True where anomalous."""
        return np.asarray(scores) > self.value


def calibrate(heldin_scores, fpr=0.05):
    """The threshold whose false-positive rate on held-in (in-distribution)
    scores is at most `fpr`: their (1 - fpr) quantile, rounded up to a score.

    Args:
        heldin_scores: array [N] of scores of in-distribution inputs not used in training.
        fpr: float in (0, 1).

    Returns:
        `Threshold`.

    Example:
        >>> t = calibrate(np.arange(100.0), fpr=0.05)
        >>> t.value, t.heldin_fpr, t.flag([94.0, 96.0]).tolist()
        (95.0, 0.04, [False, True])
    """
    scores = np.asarray(heldin_scores, np.float64).ravel()
    if not 0 < fpr < 1:
        raise ValueError(f"The false-positive rate must be in (0, 1), got {fpr}.")
    if not np.isfinite(scores).all():
        raise ValueError("Held-in scores must be finite to calibrate a threshold.")
    need = math.ceil(1.0 / fpr)
    if len(scores) < need:
        raise ValueError(f"Calibrating at fpr={fpr} needs at least {need} held-in scores, got {len(scores)}.")
    value = float(np.quantile(scores, 1.0 - fpr, method="higher"))
    return Threshold(value=value, fpr=float(fpr), heldin_fpr=float(np.mean(scores > value)), n=len(scores))


def auroc(inlier_scores, outlier_scores):
    """Area under the ROC curve with the outliers as positives: the chance
    that a random outlier scores above a random inlier (ties count half).

    Args:
        inlier_scores, outlier_scores: arrays.

    Returns:
        float in [0, 1]; 0.5 is a coin, 1 separates them perfectly.
    """
    a, b = np.asarray(inlier_scores, np.float64).ravel(), np.asarray(outlier_scores, np.float64).ravel()
    if not len(a) or not len(b):
        raise ValueError("auroc needs at least one inlier and one outlier score.")
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    return float((ranks[len(a):].sum() - len(b) * (len(b) + 1) / 2.0) / (len(a) * len(b)))


def fpr_at_tpr(inlier_scores, outlier_scores, tpr=0.95):
    """The share of inliers flagged at the highest threshold that flags at
    least `tpr` of the outliers (FPR at 95% TPR, lower is better).

    Args:
        inlier_scores, outlier_scores: arrays; tpr: float in (0, 1].

    Returns:
        float in [0, 1].

    Example:
        >>> fpr_at_tpr([0.1, 0.2, 0.3, 0.4], [0.35, 0.5], tpr=1.0)
        0.25
    """
    a, b = np.asarray(inlier_scores, np.float64).ravel(), np.sort(np.asarray(outlier_scores, np.float64).ravel())
    threshold = b[int(math.floor((1.0 - tpr) * len(b) + 1e-9))]
    return float(np.mean(a >= threshold))
