"""What every export module shares: the formats, the tolerances, the errors and the inputs of a runner."""

__all__ = ["FORMATS", "TFLITE_VARIANTS", "TOLERANCE", "SCORER_TFLITE_VARIANTS", "ONNX_OPSET", "ExportError",
           "VerificationError", "feeds"]


FORMATS = ("savedmodel", "tflite", "onnx")


TFLITE_VARIANTS = ("float32", "float16", "dynamic_int8", "int8")


#: Max error allowed for each artifact against the Keras decoder, on EVERY output
#: (`mean` and, where exported, `logits`), relative to that output's range:
#: max |artifact - keras| <= TOLERANCE * max(1, max |keras|). For pixel
#: probabilities (range 1) this is the absolute error; for logits or Gaussian
#: means it scales with their range, as quantisation error does (256 levels
#: over the range for int8).
TOLERANCE = {"savedmodel": 1e-5, "onnx": 1e-5, "tflite_float32": 1e-5, "tflite_float16": 1e-3,
             "tflite_dynamic_int8": 0.05, "tflite_int8": 0.05,
             "scorer_tflite_float32": 1e-5, "scorer_tflite_float16": 1e-3, "scorer_onnx": 1e-5}


#: TFLite variants of the scorer (`export(scorer=True)`)
SCORER_TFLITE_VARIANTS = ("float32", "float16")


ONNX_OPSET = 17


class ExportError(ValueError):
    """An export that cannot be done as asked (bad source, format, directory)."""


class VerificationError(RuntimeError):
    """An artifact that did not reproduce the Keras decoder within tolerance."""


def feeds(z, labels, inputs):
    """The named inputs of an artifact.

    Args:
        z: float32 [B, latent_dim]; labels: int32 [B] or None; inputs: dict or None (used as given, None values dropped).

    Returns:
        dict of numpy arrays.
    """
    if inputs is not None:
        return {k: v for k, v in inputs.items() if v is not None}
    return {"z": z} if labels is None else {"z": z, "labels": labels}
