"""Checks and scaling of arrays: pixels scaled by what they are, labels, shapes,
and the one check a model runs on its inputs. Pure numpy: no files are read here."""

import numpy as np

from kvae.data.errors import DataError

__all__ = ["pixel_scale", "to_unit", "with_channel", "labels_array", "check", "check_shape", "check_label_range",
           "check_for_model", "split_validation"]


def pixel_scale(arrays, where):
    """How to bring pixel arrays to [0, 1], decided from their VALUES (all
    splits together), never from the dtype alone: integers in {0, 1} (binary
    images stored as uint8, e.g. TFDS's binarized_mnist) are kept, integers in
    0..255 are divided by 255, floats are kept (the model checks their range).

    Args:
        arrays: the splits' pixel arrays (None entries are skipped).
        where: str, names the data in messages.

    Returns:
        (divisor float, note str or None); DataError for integers outside
        0..255 or for integer and float splits mixed.

    Example:
        >>> pixel_scale([np.array([0, 1], np.uint8)], "x")[0], pixel_scale([np.array([0, 200], np.uint8)], "x")[0]
        (1.0, 255.0)
    """
    arrays = [np.asarray(a) for a in arrays if a is not None]
    integer = [np.issubdtype(a.dtype, np.integer) or a.dtype == bool for a in arrays]
    if any(integer) and not all(integer):
        raise DataError(f"{where}: some splits hold integer pixels and others floats "
                        f"({', '.join(str(a.dtype) for a in arrays)}); give every split the same scale.")
    if not arrays or not all(integer):
        return 1.0, None
    lo = min(int(a.min(initial=0)) for a in arrays)
    hi = max(int(a.max(initial=0)) for a in arrays)
    if lo < 0 or hi > 255:
        raise DataError(f"{where}: integer pixels must lie in 0..255 (or be 0/1), found values in [{lo}, {hi}].")
    if hi <= 1:
        return 1.0, "integer pixels with values 0/1: kept as 0/1 (not divided by 255)"
    return 255.0, "integer pixels 0..255: divided by 255"


def to_unit(x, divisor):
    """x as float32, divided by `divisor` unless it is 1.

    Args:
        x: array; divisor: float, the pixel scale (`pixel_scale`).

    Returns:
        numpy float32 array.
    """
    return (np.asarray(x).astype("float32") / divisor) if divisor != 1 else np.asarray(x).astype("float32")


def with_channel(x):
    """x with a channel axis appended if it is [N, H, W].

    Args:
        x: numpy array [N, ...].

    Returns:
        numpy array [N, H, W, C] (or [N, D] as given).
    """
    return x[..., None] if x.ndim == 3 else x


def labels_array(y, n, where):
    """Labels as int32 [n], or None: refuses a length that differs from the
    images', non-integer values (2.5; a float 3.0 is accepted) and negatives.

    Args:
        y: array [n] or [n, 1], or None; n: int, the number of images;
        where: str, names the data in the message.

    Returns:
        int32 [n] or None.
    """
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DataError(f"{where}: labels must be one integer per example, got an array of shape {y.shape}.")
    y = y.reshape(-1)
    if len(y) != n:
        raise DataError(f"{where}: {n} examples but {len(y)} labels.")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}.")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: labels must be integers; label {i} is {y[i]!r}.")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"{where}: labels must be >= 0; label {i} is {y[i]}.")
    return y.astype("int32")


def check(x, y=None, *, input_shape=None, unit_interval=None, num_classes=None, where="the data"):
    """Raise DataError naming the problem if arrays cannot train a model.

    Checks the WHOLE arrays: per-example shape (if `input_shape`), numeric
    dtype, NaN/Inf, values in [0, 1] (if `unit_interval` names what needs
    them, e.g. "the bernoulli likelihood"), and labels (if `num_classes`:
    present, one per example, integers in [0, num_classes)).

    Args:
        x: array [N, *input_shape].
        y: labels [N] or None.
        input_shape: tuple or None.
        unit_interval: str or None, what needs values in [0, 1].
        num_classes: int or None (None: labels are not needed, not checked).
        where: how to name the data in the message, e.g. "the test split".

    Example:
        >>> import numpy as np
        >>> check(np.zeros((2, 3)), unit_interval="the bernoulli likelihood")
        >>> check(np.full((2, 3), 255.0), unit_interval="the bernoulli likelihood", where="x")
        Traceback (most recent call last):
        ...
        kvae.data.DataError: x: The bernoulli likelihood needs values in [0, 1]; they range over [255, 255]. Scale them (e.g. x / 255).
    """
    x = np.asarray(x)
    if input_shape is not None:
        check_shape(x.shape, input_shape, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: Inputs must be numeric, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            i = int(np.argmin(finite.reshape(len(x), -1).all(axis=1))) if x.ndim > 1 else int(np.argmin(finite))
            raise DataError(f"{where}: {int((~finite).sum())} NaN or Inf values (the first in example {i}).")
    if unit_interval and x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where}: {unit_interval[0].upper()}{unit_interval[1:]} needs values in [0, 1]; they "
                        f"range over [{x.min():g}, {x.max():g}]. Scale them (e.g. x / 255).")
    if num_classes is not None:
        if y is None:
            raise DataError(f"{where}: This VAE is conditional (num_classes={num_classes}): pass labels, "
                            "e.g. fit on (x, labels).")
        y = labels_array(y, len(x), where)
        if y.size and y.max() >= num_classes:
            i = int(np.argmax(y))
            raise DataError(f"{where}: Labels must be integers in [0, {num_classes}); label {i} is {y[i]}.")


def check_shape(shape, input_shape, where=None):
    """Raise DataError if a batch's `shape` [N, ...] does not hold examples of
    `input_shape` (the one shape check: the model's forward pass uses it too).

    Args:
        shape: the batch's shape; input_shape: one example's shape;
        where: str or None, names the data in the message.

    Example:
        >>> check_shape((5, 8, 8, 1), (8, 8, 1))
        >>> check_shape((5, 64), (8, 8, 1))
        Traceback (most recent call last):
        ...
        kvae.data.DataError: Input shape (64,) (per example) does not match the model's input_shape (8, 8, 1).
    """
    got = tuple(shape[1:])
    if got != tuple(input_shape):
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}Input shape {got} (per example) does not match the model's input_shape "
                        f"{tuple(input_shape)}.")


def check_label_range(labels, num_classes):
    """Raise DataError unless every label is an integer in [0, num_classes).

    Args:
        labels: int array [N]; num_classes: int.

    Example:
        >>> check_label_range([0, 9], 10)
        >>> check_label_range([3, 10], 10)
        Traceback (most recent call last):
        ...
        kvae.data.DataError: Labels must be integers in [0, 10); got values in [3, 10].
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Labels must be integers in [0, {num_classes}); got values in "
                        f"[{labels.min()}, {labels.max()}].")


def check_for_model(model, x, y=None, where="the inputs"):
    """Raise DataError naming the problem if data cannot train or evaluate
    `model`: `check` with the model's shape, likelihood range and classes.

    Args:
        model: a `kvae.VAE`.
        x: array [N, *input_shape], or a `tf.data.Dataset` (checked by its
            first batch); generators and PyDatasets are not checked here (the
            step checks shapes when it traces).
        y: labels [N] or None.
        where: how to name the data in the message.

    Returns:
        None; raises DataError (a ValueError) naming the first problem.
    """
    import keras
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        first = next(iter(x.take(1)), None)
        if first is None:
            raise DataError("The dataset is empty.")
        x, y, _ = keras.utils.unpack_x_y_sample_weight(first)
        where = f"{where} (first batch of the dataset)"
    if x is None or not hasattr(x, "shape"):
        return
    unit = f"the {model.likelihood.name} likelihood" if model.likelihood.unit_interval else None
    check(np.asarray(x), None if y is None else np.asarray(y), input_shape=model.data_shape,
          unit_interval=unit, num_classes=model.num_classes, where=where)


def split_validation(validation_data):
    """Split Keras's `validation_data` argument.

    Args:
        validation_data: x, (x,), (x, labels) or a tf.data.Dataset.

    Returns:
        (x, labels or None).
    """
    if isinstance(validation_data, (tuple, list)):
        return validation_data[0], (validation_data[1] if len(validation_data) > 1 else None)
    return validation_data, None
