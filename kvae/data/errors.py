"""The errors of kvae's data layer: data that cannot be used, data that is not there."""

import re

__all__ = ["DataError", "DataNotFoundError", "as_data_error"]


class DataError(ValueError):
    """Data that exists but cannot be used (corrupt, inconsistent, unknown)."""


class DataNotFoundError(FileNotFoundError):
    """A named dataset that no offline source holds."""


def as_data_error(error):
    """The DataError a failed tf.data read stands for, or None.

    A DataError raised while a batch is read inside tf.data reaches the
    caller as a TensorFlow OpError whose text holds it; a TFRecord that fails
    its checksum is a DataLossError.

    Args:
        error: an exception.

    Returns:
        DataError with the original one-line message, or None.
    """
    text = str(error)
    if "DataError: " in text:
        line = text.split("DataError: ", 1)[1].splitlines()[0]
        # a tf.debugging.Assert's data prints as "message] [value]"
        return DataError(re.sub(r"\] \[(-?\d+)\]\s*$", r" \1.", line))
    if type(error).__name__ == "DataLossError":
        first = text.strip().splitlines()[0] if text.strip() else "unreadable record"
        return DataError(f"A TFRecord shard is damaged ({first}); prepare the data again with `kvae data prepare`.")
    return None


# Shown (in tracebacks and doctests) under the name users import them by.
DataError.__module__ = DataNotFoundError.__module__ = "kvae.data"
