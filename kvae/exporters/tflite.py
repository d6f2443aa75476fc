"""TFLite / LiteRT: the float32, float16, dynamic-range int8 and full-int8
conversions (builtin ops only, so an unsupported op fails here and not on the
device), and running an artifact with ai_edge_litert."""

from pathlib import Path

import numpy as np

from kvae.exporters.base import VerificationError, feeds

__all__ = ["write_tflite", "run_tflite"]


def write_tflite(decoder_savedmodel, path, variant, model, signature="decode"):
    """Convert a SavedModel's signature to TFLite (builtin ops only).

    Args:
        decoder_savedmodel: the SavedModel folder; path: the .tflite file to write; variant: one of
        TFLITE_VARIANTS; model: kvae.VAE (the int8 calibration draws its latents); signature: str.

    Raises:
        VerificationError naming the variant if the converter fails.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(decoder_savedmodel), signature_keys=[signature])
    # Builtins only: an op the device interpreter lacks fails here, not on the phone.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        rng = np.random.default_rng(0)

        def representative():  # latents drawn from the prior, as at run time
            z = model.prior.distribution(model).sample(256, seed=tf.constant([0, 0])).numpy()
            for i in range(0, 256, 8):
                inputs = {"z": z[i:i + 8]}
                if model.conditional:
                    inputs["labels"] = rng.integers(0, model.num_classes, 8).astype("int32")
                yield inputs

        converter.representative_dataset = representative
    try:
        if variant == "int8":
            Path(path).write_bytes(_convert_int8_with_float_input_layer(converter))
        else:
            Path(path).write_bytes(converter.convert())
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError and others
        raise VerificationError(f"TFLite {variant} conversion failed: {str(e).splitlines()[0][:300]}") from None


_COMPUTE_OPS = {"FULLY_CONNECTED", "CONV_2D", "TRANSPOSE_CONV", "DEPTHWISE_CONV_2D", "BATCH_MATMUL"}


def _convert_int8_with_float_input_layer(converter):
    """Full-int8 conversion, except the ops from the inputs up to and including
    the first matmul/convolution, which stay float32.

    Quantising z itself to int8 (a step of ~0.03 over +-4) was the largest
    error of the int8 decoder (0.088 max on pixel probabilities for the demo
    model, 0.032 with its first layer in float). That layer holds only
    latent_dim x width weights, so the file stays ~27% of float32. The ops are
    read from the plain conversion with TF's public flatbuffer reader
    (`tensorflow.lite.tools.flatbuffer_utils`), in execution order.
    """
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    plain = flatbuffer_utils.read_model_from_bytearray(bytearray(converter.convert()))
    graph = plain.subgraphs[0]

    def name(i):
        n = graph.tensors[i].name
        return n.decode() if isinstance(n, bytes) else n

    frontier, denylist = set(graph.inputs), []
    for op in graph.operators:  # in execution order
        if not frontier.intersection(op.inputs):
            continue
        denylist += [name(i) for i in op.outputs]
        frontier.update(op.outputs)
        if flatbuffer_utils.opcode_to_name(plain, op.opcodeIndex) in _COMPUTE_OPS:
            break
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=converter.representative_dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist))
    return debugger.get_nondebug_quantized_model()


def run_tflite(path, z, labels=None, signature="decode", inputs=None):
    """Run a signature with ai_edge_litert's signature runner (no TensorFlow needed).

    Args:
        path: a .tflite file; z: float32 [B, latent_dim]; labels: int32 [B] or None;
        signature: 'decode', or 'score' for the scorer; inputs: a dict of
        named inputs instead of z and labels (e.g. {'x': images}).

    Returns:
        (dict {'mean': [B, ...], ...}, a function that runs the first row alone, for batch-1 latency).
    """
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner(signature)
    inputs = feeds(z, labels, inputs)
    return runner(**inputs), (lambda: runner(**{k: v[:1] for k, v in inputs.items()}))
