"""Optional dependencies: which extra provides what, and one clear error when
one is missing. `pip install kvae` gives the model, training and evaluation
(TensorFlow, Keras, TFP, numpy); the rest is optional:

    kvae[data]    named datasets and user files: tensorflow-datasets, scikit-learn (8x8 digits),
                  pillow (image folders), scipy (MATLAB .amat files), pyarrow (Parquet scores)
    kvae[plots]   pictures and training logs: matplotlib, tensorboard (TF 2.21 no longer installs it)
    kvae[export]  TFLite / ONNX exports and their checks: tf2onnx, onnx, onnxruntime, ai-edge-litert
    kvae[all]     all three (what the `kvae` command uses)

Example:
    >>> require("json", "data", "reading JSON").__name__
    'json'
"""

import importlib

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency that is not installed."""


def require(module, extra, feature):
    """Import and return `module`, or raise MissingExtraError saying which
    extra to install for `feature`.

    Args:
        module: str, e.g. "matplotlib.figure"; extra: str, the kvae extra that
        installs it; feature: str, what needs it (starts the message).

    Returns:
        The module.

    Example:
        >>> require("json", "core", "Settings").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
                                f"pip install 'kvae[{extra}]'") from None
