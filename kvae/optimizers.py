"""Optimizers the recipes use beyond Keras's own.

`NormalizedAdam` is Adam on gradients scaled to unit L2 norm per variable,
as in Tomczak and Welling's VampPrior code (their `AdamNormGrad`): a step's
size then does not follow the gradient's size, which damps the rare large
gradients of the first epochs and of a warm-up's end. `AdamW` is Keras's
decoupled weight decay on the kernels of chosen parts only (by default the
decoder's: the part that overfits binarised MNIST), saved with the model so
that a resumed run decays the same weights, with a decay that can change
linearly over the run (`weight_decay_end`); `AdamaxW` is Adamax with the same. `ValidateAverages` and
`averaged_weights` make a run validate, select and keep the moving averages
of the weights that any Keras optimizer keeps with `use_ema=True`.

    >>> import keras
    >>> opt = NormalizedAdam(learning_rate=5e-4)
    >>> isinstance(opt, keras.optimizers.Adam)
    True
"""

import contextlib

import keras
from keras import ops

__all__ = ["NormalizedAdam", "AdamW", "AdamaxW", "averaged_weights", "ValidateAverages"]


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


class _PartsDecay:
    """Decoupled weight decay (each step w -= learning_rate * weight_decay * w,
    apart from the optimizer's own update) on the Dense kernels whose path
    contains one of `decay_paths` only, for a Keras optimizer that follows it
    in the bases; saved with the model. Given `weight_decay_end`, the decay is
    a variable that goes linearly from `weight_decay` to it as `set_progress`
    is told the run's progress (kvae.callbacks.TimeLimit tells it each epoch)."""

    _decay_now = None  # the scheduled decay's variable (None: a constant decay)

    def __init__(self, weight_decay=0.004, decay_paths=("decoder_body/",), weight_decay_end=None, **kwargs):
        for name, value in [("weight_decay", weight_decay), ("weight_decay_end", weight_decay_end)]:
            if name == "weight_decay_end" and value is None:
                continue
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a float >= 0, got {value!r}.")
        if isinstance(decay_paths, str) or not decay_paths or not all(isinstance(p, str) and p for p in decay_paths):
            raise ValueError(f"decay_paths must be a non-empty sequence of non-empty str, got {decay_paths!r}.")
        super().__init__(weight_decay=weight_decay, **kwargs)
        self.decay_paths = tuple(decay_paths)
        self._decayed = set()
        self.weight_decay_end = None if weight_decay_end is None else float(weight_decay_end)
        if self.weight_decay_end is not None:
            # a variable, as the learning rate: a traced step reads its value now, not the one it was traced with
            with keras.name_scope(self.name, caller=self):
                decay = keras.Variable(float(weight_decay), name="weight_decay", trainable=False,
                                       aggregation="only_first_replica")
            self._decay_now = decay  # tracked: saved with the optimizer, restored on resume

    @property
    def weight_decay(self):
        """The decay of a step (the backend reads it): the scheduled variable, else the float."""
        return self._decay_start if self._decay_now is None else self._decay_now

    @weight_decay.setter
    def weight_decay(self, value):  # Keras's __init__ sets it
        self._decay_start = value

    def set_progress(self, progress):
        """Set a scheduled decay for the run's progress in [0, 1] (a constant decay ignores it)."""
        if self._decay_now is not None:
            progress = min(1.0, max(0.0, float(progress)))
            self._decay_now.assign(self._decay_start + (self.weight_decay_end - self._decay_start) * progress)

    def build(self, var_list):
        # chosen here, on Keras variables: the TF backend asks later about the tf.Variables beneath them
        self._decayed = {self._var_key(v) for v in var_list
                         if v.name == "kernel" and any(p in v.path for p in self.decay_paths)}
        super().build(var_list)

    def _use_weight_decay(self, variable):
        return self._var_key(variable) in self._decayed

    def get_config(self):
        config = {**super().get_config(), "weight_decay": self._decay_start, "decay_paths": list(self.decay_paths)}
        return {**config, "weight_decay_end": self.weight_decay_end} if self.weight_decay_end is not None else config


@keras.saving.register_keras_serializable(package="kvae")
class AdamW(_PartsDecay, keras.optimizers.AdamW):
    """Keras's AdamW (each step w -= learning_rate * weight_decay * w, apart
    from Adam's update) on the Dense kernels whose path contains one of
    `decay_paths` only; biases, other parts and pseudo-inputs are not decayed.

    Args:
        weight_decay: float >= 0 (with `weight_decay_end`: the run's first).
        decay_paths: sequence of str, path fragments (default the decoder
            body's, "decoder_body/").
        weight_decay_end: float >= 0 or None, the decay at the run's end,
            reached linearly over `set_progress(0)` to `set_progress(1)`
            (None: `weight_decay` throughout).
        **kwargs: for `keras.optimizers.AdamW` (learning_rate, beta_1, ...).

    Example:
        >>> import keras
        >>> opt = AdamW(learning_rate=1e-3, weight_decay=0.1)
        >>> layer = keras.layers.Dense(2, name="decoder_body")
        >>> layer.build((None, 3))
        >>> opt.build(layer.trainable_variables)
        >>> [v.name for v in layer.trainable_variables if opt._use_weight_decay(v)]
        ['kernel']
    """


@keras.saving.register_keras_serializable(package="kvae")
class AdamaxW(_PartsDecay, keras.optimizers.Adamax):
    """Keras's Adamax (Adam with the infinity norm: the IAF paper's optimizer)
    with the same decoupled weight decay as `AdamW` on the kernels whose path
    contains one of `decay_paths` only.

    Args:
        weight_decay: float >= 0 (with `weight_decay_end`: the run's first).
        decay_paths: sequence of str, path fragments (default "decoder_body/").
        weight_decay_end: float >= 0 or None, as in `AdamW`.
        **kwargs: for `keras.optimizers.Adamax` (learning_rate, beta_1, ...).
    """


@contextlib.contextmanager
def averaged_weights(model):
    """Within the block, the model's trainable weights hold its optimizer's
    moving averages (Keras's `use_ema=True`); after it, its own weights again.
    The optimizer's state is not changed. Without averages (no `use_ema`, or
    no step taken yet) nothing changes.

    Args:
        model: a compiled keras.Model.

    Yields:
        bool, whether the averages are in.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
        >>> model.compile(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5), "mse")
        >>> for _ in range(2):  # (fit would end by copying the averages into the weights)
        ...     _ = model.train_on_batch(np.ones((1, 1)), np.zeros((1, 1)))
        >>> trained = model.weights[0].numpy()
        >>> with averaged_weights(model) as swapped:
        ...     inside = model.weights[0].numpy()
        >>> swapped, bool((inside != trained).all()), bool((model.weights[0].numpy() == trained).all())
        (True, True, True)
    """
    optimizer = getattr(model, "optimizer", None)
    averages = getattr(optimizer, "_model_variables_moving_average", None) if getattr(
        optimizer, "use_ema", False) else None
    pairs = [(v, averages[optimizer._get_variable_index(v)]) for v in model.trainable_variables] if averages else []
    if not pairs or int(optimizer.iterations.numpy()) == 0:
        yield False
        return
    held = [keras.ops.convert_to_numpy(v) for v, _ in pairs]  # a copy on the host, not a view of the variable
    for v, average in pairs:
        v.assign(average)
    try:
        yield True
    finally:
        for (v, _), value in zip(pairs, held):
            v.assign(value)


class ValidateAverages(keras.callbacks.Callback):
    """Validates the optimizer's moving averages of the weights (Keras's
    `use_ema=True`) instead of the weights being trained: swapped in for each
    evaluation inside `fit`, swapped back after it. Does nothing without them."""

    def on_test_begin(self, logs=None):
        self._block = averaged_weights(self.model)
        self._block.__enter__()

    def on_test_end(self, logs=None):
        block, self._block = getattr(self, "_block", None), None
        if block is not None:
            block.__exit__(None, None, None)
