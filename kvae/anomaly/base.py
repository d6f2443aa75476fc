"""`Score`, the base of every anomaly score, and the input check they share."""

import numpy as np

__all__ = ["Score", "checked_inputs"]


class Score:
    """An anomaly score: `score(model, x)` -> float64 [N], higher is more anomalous.

    A score that needs held-in data (`needs_reference`) is `fit` on it first.
    `name` is the registry name; `get_config` returns the constructor's arguments.
    """

    name = None
    #: `fit(model, x_heldin)` must be called before scoring
    needs_reference = False

    def fit(self, model, x, labels=None):
        """Fit what the score estimates from held-in data (nothing by default).

        Args:
            model: a `kvae.VAE`; x: held-in inputs [N, *input_shape]; labels: [N] or None.

        Returns:
            self.
        """
        return self

    def __call__(self, model, x, labels=None, verbose=0):
        raise NotImplementedError

    def get_config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def checked_inputs(model, x, labels):
    """x as float32, checked against the model (its first row), and labels only for a conditional model.

    Args:
        model: kvae.VAE; x: array [N, *input_shape]; labels: [N] or None.

    Returns:
        (x float32, labels or None).
    """
    x = np.asarray(x, np.float32)
    model.check_inputs(x[:1], None if labels is None else labels[:1])
    return x, (labels if model.conditional else None)
