"""Optimizers the recipes use beyond Keras's own.

`NormalizedAdam` is Adam on gradients scaled to unit L2 norm per variable,
as in Tomczak and Welling's VampPrior code (their `AdamNormGrad`): a step's
size then does not follow the gradient's size, which damps the rare large
gradients of the first epochs and of a warm-up's end.

    >>> import keras
    >>> opt = NormalizedAdam(learning_rate=5e-4)
    >>> isinstance(opt, keras.optimizers.Adam)
    True
"""

import keras
from keras import ops

__all__ = ["NormalizedAdam"]


@keras.saving.register_keras_serializable(package="kvae")
class NormalizedAdam(keras.optimizers.Adam):
    """Adam whose every gradient g is first replaced by g / (||g||_2 + epsilon_norm),
    the norm taken per variable (after any clipnorm/clipvalue of Keras's own).

    Args:
        epsilon_norm: float > 0, added to the norm (default 1e-7, as in the
            reference code).
        **kwargs: for `keras.optimizers.Adam` (learning_rate, beta_1, ...).
    """

    def __init__(self, epsilon_norm=1e-7, **kwargs):
        super().__init__(**kwargs)
        if not epsilon_norm > 0:
            raise ValueError(f"epsilon_norm must be > 0, got {epsilon_norm}.")
        self.epsilon_norm = float(epsilon_norm)

    def _clip_gradients(self, grads):
        grads = super()._clip_gradients(grads)
        return [None if g is None else g / (ops.sqrt(ops.sum(ops.square(g))) + self.epsilon_norm) for g in grads]

    def get_config(self):
        return {**super().get_config(), "epsilon_norm": self.epsilon_norm}
