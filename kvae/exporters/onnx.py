"""ONNX: the tf2onnx conversion (opset 17, its file checked) and running an
artifact with onnxruntime."""

from kvae.exporters.base import ONNX_OPSET, VerificationError, feeds
from kvae.exporters.graphs import decoder_function

__all__ = ["write_onnx", "run_onnx"]


def write_onnx(model, path, function=None):
    """Convert the decoder (or `function`) to ONNX with tf2onnx, then check the file.

    Args:
        model: kvae.VAE; path: the .onnx file to write; function: a tf.function with an input signature, or None.

    Raises:
        VerificationError if tf2onnx fails.
    """
    import tf2onnx

    decode = function or decoder_function(model)
    try:
        tf2onnx.convert.from_function(decode, input_signature=decode.input_signature, opset=ONNX_OPSET,
                                      output_path=str(path))
    except Exception as e:  # noqa: BLE001
        raise VerificationError(f"ONNX conversion failed: {str(e).splitlines()[0][:300]}") from None
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def run_onnx(path, z, labels=None, inputs=None):
    """Run an ONNX graph with onnxruntime on the CPU.

    Args:
        path: a .onnx file; z: float32 [B, latent_dim]; labels: int32 [B] or None;
        inputs: a dict of named inputs instead of z and labels.

    Returns:
        (dict {'mean': [B, ...], ...}, a function that runs the first row alone, for batch-1 latency).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    given = feeds(z, labels, inputs)
    outs = dict(zip(names, session.run(None, given)))
    return outs, (lambda: session.run(None, {k: v[:1] for k, v in given.items()}))
