"""The progress bar `VAE.fit` and `VAE.evaluate` show: Keras's own, with its
step count kept at or below the epoch's steps (kvae's default
steps_per_execution runs several steps per call)."""

import keras

__all__ = ["ProgbarLogger", "with_progbar"]


class ProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras's progress bar with the step count kept at or below the epoch's
    steps. With steps_per_execution > 1, Keras 3.15 reports the last, partial
    execution as a whole one (an epoch of 422 steps ends at "448/422");
    `VAE.fit` and `VAE.evaluate` use this bar unless given another."""

    def _clamp(self, batch):
        return batch if self.target is None else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._clamp(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._clamp(batch), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(self._clamp(batch), logs)


def with_progbar(kwargs):
    """`fit`/`evaluate` kwargs with kvae's ProgbarLogger added, unless the
    caller passes a progress bar or verbose=0 (what `VAE.fit` uses).

    Args:
        kwargs: dict of `fit` / `evaluate` keyword arguments.

    Returns:
        dict.
    """
    if isinstance(kwargs.get("callbacks"), keras.callbacks.CallbackList):
        return kwargs  # fit's own validation pass: its list is made already
    callbacks = list(kwargs.get("callbacks") or [])
    if kwargs.get("verbose", "auto") != 0 and not any(
            isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        kwargs = dict(kwargs, callbacks=callbacks + [ProgbarLogger()])
    return kwargs
