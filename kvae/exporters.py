"""Decoder export: SavedModel (TF Serving), TFLite / LiteRT, ONNX; each verified.

The exported decoder is deterministic: z (float32 [batch, latent_dim], plus
int32 labels [batch] for a conditional model) -> `mean` = E[x|z] in the data's
shape (pixel probabilities for a Bernoulli likelihood) and, where the
likelihood has them, `logits`. z is drawn on the host: random ops do not belong
in edge artifacts (they become Flex ops in TFLite and invalid ONNX). Only the
SavedModel, run by a server that has all of TF, also carries a `sample`
signature with the seed as an input (stateless, so one seed gives one picture).

Every artifact is run by its own runtime (the SavedModel in a Python process
where kvae cannot be imported, TFLite by ai_edge_litert, ONNX by onnxruntime)
on the same latents as the Keras decoder, and the export fails if an error
exceeds its tolerance.

    DIR/
      savedmodel/<model_name>/<version>/   TF Serving layout; assets/kvae_metadata.json
      tflite/decoder_{float32,float16,dynamic_int8,int8}.tflite
      onnx/decoder.onnx
      metadata.json                        latent dim, shapes, likelihood, kvae version, training summary
      report.json                          errors, sizes, batch-1 latency per artifact

The SavedModel's `encode` signature names the posterior's mode `mean` (the
mean for Gaussian posteriors; see `kvae.VAE.encode`), as servers already call it.

Over 350 lines on purpose: the three formats share the decode graph, the
verification loop and the report, and are read together when an artifact fails.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from kvae import files
from kvae.extras import require

__all__ = ["FORMATS", "TFLITE_VARIANTS", "SCORER_TFLITE_VARIANTS", "TOLERANCE", "INT8_LOGIT_CLIP", "ExportError", "VerificationError",
           "load_source", "decode_outputs", "decoder_function", "scorer_problem", "scorer_outputs", "scorer_function", "run_tflite", "run_onnx",
           "run_savedmodel_without_kvae", "default_tflite_variants", "export", "format_report"]

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
#: The full-int8 BERNOULLI decoder clips logits to +-8 (probabilities within
#: 3.4e-4 of 0 and 1), so its 256 activation levels cover the informative range
#: rather than saturated pixels. Its `logits` are checked against the clipped
#: Keras logits, and its mean costs at most 3.4e-4. What it does to a score
#: computed on the device from those logits: -log p(x|z) of one pixel is
#: softplus(-logit) for x = 1, so a pixel the model is sure of costs at least
#: 3.4e-4 nats (<= 0.27 nats over 784 pixels), and a pixel the model is sure is
#: wrong costs at most ~8 nats instead of |logit|: confidently wrong pixels are
#: compressed, which lowers anomaly scores driven by them. Use the float32 or
#: float16 decoder for anomaly scores. The continuous Bernoulli is never
#: clipped: its mean approaches 1 only as 1 - 1/logit (0.875 at logit 8).
INT8_LOGIT_CLIP = {"bernoulli": 8.0}


class ExportError(ValueError):
    """An export that cannot be done as asked (bad source, format, directory)."""


class VerificationError(RuntimeError):
    """An artifact that did not reproduce the Keras decoder within tolerance."""


# -------------------------------------------------------------- the source
def load_source(path):
    """The model to export and the metadata written beside it.

    Args:
        path: str or Path, a run directory or a `.keras` file (`kvae.load_model`).

    Returns:
        (kvae.VAE, dict: kvae version, latent_dim, input_shape, likelihood,
        outputs, num_classes, prior, int8 logit clip, training summary, source).

    Raises:
        ExportError naming the path if it cannot be loaded.
    """
    import kvae
    from kvae import saving

    path = Path(path)
    try:
        model, summary = saving.load_model(path), saving.read_summary(path) if path.is_dir() else {}
    except ValueError as e:
        raise ExportError(str(e)) from None
    metadata = {
        "kvae_version": kvae.__version__,
        "latent_dim": model.latent_dim,
        "input_shape": list(model.data_shape),
        "likelihood": model.likelihood.name,
        "outputs": ["mean"] + (["logits"] if model.likelihood.has_logits else []),
        "num_classes": model.num_classes,
        "prior": type(model.prior).__name__,
        "int8_logit_clip": INT8_LOGIT_CLIP.get(model.likelihood.name),  # the full-int8 decoder's logits
        "training_summary": summary,
        "source": str(path),
    }
    return model, metadata


# ----------------------------------------------------------- the graphs
def _specs(model):
    import tensorflow as tf

    z = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    labels = tf.TensorSpec([None], tf.int32, name="labels")
    x = tf.TensorSpec([None, *model.data_shape], tf.float32, name="x")
    return z, labels, x


def decode_outputs(model, z, labels=None, clip_logits=None):
    """The exported decoder's outputs at latents z.

    Args:
        model: kvae.VAE; z: float32 [B, latent_dim]; labels: int32 [B] or None;
        clip_logits: float or None (logits clipped to +-clip_logits).

    Returns:
        dict {"mean": E[x|z] [B, *input_shape], "logits": [B, *param_shape]
        (where the likelihood has them)}.
    """
    params = model.decode_params(z, labels)
    if clip_logits is not None and model.likelihood.has_logits:
        params = tf_clip(params, clip_logits)
    out = {"mean": model.likelihood.mean(params)}
    if model.likelihood.has_logits:
        out["logits"] = params
    return out


def tf_clip(t, bound):
    import tensorflow as tf

    return tf.clip_by_value(t, -bound, bound)


def decoder_function(model, clip_logits=None):
    """The decoder as a graph: no random op, named inputs, any batch size.

    Args:
        model: kvae.VAE; clip_logits: float or None (the full-int8 decoder).

    Returns:
        tf.function decode(z [B, latent_dim][, labels [B]]) -> {'mean'[, 'logits']}.
    """
    import tensorflow as tf

    z_spec, labels_spec, _ = _specs(model)
    if model.conditional:
        @tf.function(input_signature=[z_spec, labels_spec])
        def decode(z, labels):
            return decode_outputs(model, z, labels, clip_logits)
    else:
        @tf.function(input_signature=[z_spec])
        def decode(z):
            return decode_outputs(model, z, clip_logits=clip_logits)
    return decode


def scorer_problem(model):
    """Why the model's scorer cannot be exported, or None if it can.

    Args:
        model: kvae.VAE.

    Returns:
        str or None.
    """
    import tensorflow as tf

    if not model.posterior.has_kl_per_dim(model.prior):
        return (f"the device scorer needs the KL in closed form (a diagonal posterior with the standard normal "
                f"prior); this model has a {model.posterior.name} posterior and a {type(model.prior).__name__}: "
                "score it on the host with kvae anomalies")
    probe = model.likelihood.export_log_prob(tf.zeros([1, *model.param_shape]), tf.zeros([1, *model.data_shape]))
    if probe is None:
        return f"the {model.likelihood.name} likelihood has no exportable log-density; score it on the host"
    return None


def scorer_outputs(model, x, labels=None):
    """The device scorer: -ELBO at the posterior's mode with the analytic KL
    (`kvae.anomaly.NegativeELBO`), written with ops every runtime has.

    Args:
        model: kvae.VAE (see `scorer_problem`); x: float32 [B, *input_shape]; labels: int32 [B] or None.

    Returns:
        dict {"score": [B], "reconstruction": -log p(x | z = mode) [B], "kl": [B]}, nats.
    """
    import tensorflow as tf

    params = model.encode_params(x, labels)
    mode = model.posterior.mode_stddev(params)[0]
    log_px = model.likelihood.export_log_prob(model.decode_params(mode, labels), x)
    kl = tf.reduce_sum(model.posterior.kl_per_dim(params, model.prior), axis=-1)
    return {"score": kl - log_px, "reconstruction": -log_px, "kl": kl}


def scorer_function(model):
    """The scorer as a graph: no random op, named inputs, any batch size.

    Args:
        model: kvae.VAE.

    Returns:
        tf.function score(x [B, *input_shape][, labels [B]]) -> {'score', 'reconstruction', 'kl'}.
    """
    import tensorflow as tf

    _, labels_spec, x_spec = _specs(model)
    if model.conditional:
        return tf.function(lambda x, labels: scorer_outputs(model, x, labels), input_signature=[x_spec, labels_spec])
    return tf.function(lambda x: scorer_outputs(model, x), input_signature=[x_spec])


def _write_scorer_savedmodel(model, path):
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("score", scorer_function(model))
    archive.write_out(str(path), verbose=False)


def _write_savedmodel(model, path, metadata, decoder_only=False, clip_logits=None):
    import keras
    import tensorflow as tf

    z_spec, labels_spec, x_spec = _specs(model)
    cond = model.conditional
    archive = keras.export.ExportArchive()
    archive.track(model)
    decode = decoder_function(model, clip_logits)
    archive.add_endpoint("decode", decode)
    if not decoder_only:
        archive.add_endpoint("serving_default", decode)

        def encode(x, labels=None):
            mean, stddev = model.posterior.mode_stddev(model.encode_params(x, labels))
            return {"mean": mean, "stddev": stddev}

        def reconstruct(x, labels=None):
            mean, _ = model.posterior.mode_stddev(model.encode_params(x, labels))
            return {"mean": model.likelihood.mean(model.decode_params(mean, labels))}

        def sample(n, seed, label=None):
            z = model.prior.distribution(model).sample(n, seed=tf.stack([seed, 0]))
            labels = None if label is None else tf.fill([n], label)
            return {"mean": model.likelihood.mean(model.decode_params(z, labels))}

        n_spec = tf.TensorSpec([], tf.int32, name="n")
        seed_spec = tf.TensorSpec([], tf.int32, name="seed")
        label_spec = tf.TensorSpec([], tf.int32, name="label")
        if cond:
            archive.add_endpoint("encode", tf.function(encode, input_signature=[x_spec, labels_spec]))
            archive.add_endpoint("reconstruct", tf.function(reconstruct, input_signature=[x_spec, labels_spec]))
            archive.add_endpoint("sample", tf.function(sample, input_signature=[n_spec, seed_spec, label_spec]))
        else:
            archive.add_endpoint("encode", tf.function(lambda x: encode(x), input_signature=[x_spec]))
            archive.add_endpoint("reconstruct", tf.function(lambda x: reconstruct(x), input_signature=[x_spec]))
            archive.add_endpoint("sample", tf.function(lambda n, seed: sample(n, seed),
                                                       input_signature=[n_spec, seed_spec]))
    archive.write_out(str(path), verbose=False)
    (Path(path) / "assets").mkdir(exist_ok=True)
    (Path(path) / "assets" / "kvae_metadata.json").write_text(json.dumps(metadata, indent=2))


def _write_tflite(decoder_savedmodel, path, variant, model, signature="decode"):
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


def _write_onnx(model, path, function=None):
    import tf2onnx

    decode = function or decoder_function(model)
    try:
        tf2onnx.convert.from_function(decode, input_signature=decode.input_signature, opset=ONNX_OPSET,
                                      output_path=str(path))
    except Exception as e:  # noqa: BLE001
        raise VerificationError(f"ONNX conversion failed: {str(e).splitlines()[0][:300]}") from None
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


# --------------------------------------------------------------- runners
def _latency(fn, runs=200, warmup=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


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
    inputs = _feeds(z, labels, inputs)
    return runner(**inputs), (lambda: runner(**{k: v[:1] for k, v in inputs.items()}))


def _feeds(z, labels, inputs):
    if inputs is not None:
        return {k: v for k, v in inputs.items() if v is not None}
    return {"z": z} if labels is None else {"z": z, "labels": labels}


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
    feeds = _feeds(z, labels, inputs)
    outs = dict(zip(names, session.run(None, feeds)))
    return outs, (lambda: session.run(None, {k: v[:1] for k, v in feeds.items()}))


_SAVEDMODEL_CHECK = textwrap.dedent("""
    import json, sys, time
    sys.modules["kvae"] = None  # a server has no kvae: prove the artifact needs none
    import numpy as np, tensorflow as tf
    path, z_path, labels_path, out_path = sys.argv[1:5]
    fn = tf.saved_model.load(path).signatures["serving_default"]
    feeds = {"z": tf.constant(np.load(z_path))}
    if labels_path != "-":
        feeds["labels"] = tf.constant(np.load(labels_path))
    out = {k: v.numpy() for k, v in fn(**feeds).items()}
    one = {k: v[:1] for k, v in feeds.items()}
    for _ in range(20): fn(**one)
    times = []
    for _ in range(200):
        t = time.perf_counter(); fn(**one); times.append(time.perf_counter() - t)
    np.savez(out_path, **out, p50=np.percentile(times, 50) * 1e3, p99=np.percentile(times, 99) * 1e3)
""")


def run_savedmodel_without_kvae(path, z, labels=None):
    """The `serving_default` signature, run in a fresh Python process where
    `import kvae` fails, as a server would run it.

    Args:
        path: the SavedModel directory; z, labels: as in `run_tflite`.

    Returns:
        (dict of outputs, (p50_ms, p99_ms) of batch-1 calls).
    """
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "z.npy", z)
        labels_path = "-"
        if labels is not None:
            np.save(tmp / "labels.npy", labels)
            labels_path = str(tmp / "labels.npy")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-c", _SAVEDMODEL_CHECK, str(path), str(tmp / "z.npy"),
                               labels_path, str(tmp / "out.npz")], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise VerificationError(
                f"The SavedModel did not run without kvae: {done.stderr.strip().splitlines()[-1]}")
        out = dict(np.load(tmp / "out.npz"))
    latency = (float(out.pop("p50")), float(out.pop("p99")))
    return out, latency


def _size(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------ export
def default_tflite_variants(likelihood):
    """The TFLite variants written when none are named: all four, except for the
    continuous Bernoulli, whose logits span thousands of nats on grey images
    (+-3,886 on the 8x8 digits after 30 epochs), so reduced precision loses its
    mean: float16 missed its 1e-3 by 1.18e-3 there, dynamic-range int8 by
    0.164, and full int8 cannot run it (see UNSUPPORTED). float16 and
    dynamic_int8 may still be asked for, and are verified like any artifact
    (bench/export_errors.py).

    Args:
        likelihood: str, the likelihood's name.

    Returns:
        tuple of variant names.
    """
    return ("float32",) if likelihood == "continuous_bernoulli" else TFLITE_VARIANTS


#: (likelihood, variant) pairs refused up front, with the reason
UNSUPPORTED = {("continuous_bernoulli", "int8"):
               "the full-int8 interpreter cannot compute the continuous Bernoulli's mean "
               "(its 1/logit divides by a quantised zero in LiteRT's int8 DIV); use float32 or float16"}


def export(source, out_dir, formats=FORMATS, force=False, model_name="kvae", version=1,
           num_check=64, seed=0, tflite_variants=None, log=print, scorer=False, scorer_threshold=None):
    """Export the decoder of `source` (a run directory or `.keras` file) into
    `out_dir`, verify every artifact, and return the report (also written as
    report.json). `tflite_variants=None` writes `default_tflite_variants` of
    the model's likelihood. Raises ExportError on any failure, leaving nothing behind.

    Args:
        source: a run directory or `.keras` file; out_dir: the directory to create;
        formats: from FORMATS; force: replace out_dir; model_name, version: TF
        Serving's layout; num_check: latents drawn from the prior for the
        checks; seed: int; tflite_variants: from TFLITE_VARIANTS or None; log: print-like;
        scorer: also export the anomaly scorer (`scorer_outputs`: x -> -ELBO at the
        posterior mode) to the TFLite (float32, float16) and ONNX formats asked
        for, checked against `kvae.anomaly.NegativeELBO` on the model's own
        samples and on noise; scorer_threshold: dict {'binarize': mode, score
        name: {value, fpr, ...}} stored in metadata.json for the device runner
        (export/score.py), or None.

    Returns:
        dict: rows (one per artifact: errors, tolerance, size, latency), metadata.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"Unknown format(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} exists; use --force to replace it, or another --out.")
    if int(version) < 1:
        raise ExportError(f"version must be >= 1, got {version}.")
    bad = [v for v in tflite_variants or () if v not in TFLITE_VARIANTS]
    if bad or ("tflite" in formats and tflite_variants is not None and not tuple(tflite_variants)):
        raise ExportError(f"Unknown TFLite variant(s) {', '.join(bad) or '(none)'}: choose from "
                          f"{', '.join(TFLITE_VARIANTS)}.")
    needed = {"tflite": ["ai_edge_litert.interpreter"], "onnx": ["tf2onnx", "onnx", "onnxruntime"]}
    for module in [m for f in formats for m in needed.get(f, [])]:
        require(module, "export", f"Exporting to {module.split('.')[0]}")
    if scorer and not {"tflite", "onnx"} & set(formats):
        raise ExportError("The scorer is exported to tflite and onnx: add one of them to --format.")
    model, metadata = load_source(source)
    if scorer:
        problem = scorer_problem(model)
        if problem:
            raise ExportError(f"Cannot export the scorer: {problem}.")
        metadata["scorer"] = {"score": "elbo", "inputs": {"x": [None, *model.data_shape]},
                              "outputs": ["score", "reconstruction", "kl"],
                              "formula": "score = KL(q(z|x) || p(z)) - log p(x | z = mode of q(z|x)), nats; "
                                         "higher is more anomalous; 'complexity' = score - ln 2 x the context "
                                         "coder's bits (kvae.anomaly.compressed_bits, in export/score.py)",
                              "thresholds": scorer_threshold}
    likelihood = model.likelihood.name
    tflite_variants = tuple(default_tflite_variants(likelihood) if tflite_variants is None else tflite_variants)
    refused = [f"{v}: {UNSUPPORTED[likelihood, v]}" for v in tflite_variants if (likelihood, v) in UNSUPPORTED]
    if refused and "tflite" in formats:
        raise ExportError(f"TFLite {refused[0]}.")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for p in files.sweep(out_dir.parent):  # what a killed export left (its process is gone)
        log(f"removed {p.name}, left by a killed process")
    # Built in a hidden sibling directory, which replaces out_dir whole only if
    # every artifact passed its check; on any failure or interrupt it is removed.
    with files.atomic_path(out_dir, directory=True) as work:
        return _export_into(model, metadata, work, formats, model_name, int(version), num_check, seed,
                            tflite_variants, log, scorer)


def scorer_check_inputs(model, n, seed):
    """Inputs to check the scorer on: n // 2 of the model's own samples (z
    from the prior, x from p(x|z)) and the rest uniform noise (as a flagged
    input would be), both binary for a Bernoulli-type likelihood's binary data.

    Args:
        model: kvae.VAE; n: int; seed: int.

    Returns:
        (x float32 [n, *input_shape], labels int32 [n] or None).
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, model.num_classes, n).astype("int32") if model.conditional else None
    half = n // 2
    z = model.prior.distribution(model).sample(half, seed=tf.constant([seed, 2])).numpy()
    params = model.decode_params(z, None if labels is None else labels[:half])
    own = model.likelihood.distribution(params, len(model.data_shape)).sample(seed=tf.constant([seed, 3]))
    noise = rng.uniform(size=(n - half, *model.data_shape))
    if model.likelihood.unit_interval:
        noise = (noise < 0.5).astype("float32")
    return np.concatenate([own.numpy(), noise]).astype("float32"), labels


def _export_into(model, metadata, work, formats, model_name, version, num_check, seed, tflite_variants, log,
                 scorer=False):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    # Checked where the decoder will run: at draws from the model's prior.
    z = model.prior.distribution(model).sample(num_check, seed=tf.constant([seed, 1])).numpy()
    labels = rng.integers(0, model.num_classes, num_check).astype("int32") if model.conditional else None
    reference = {k: v.numpy() for k, v in decode_outputs(model, z, labels).items()}
    clip = INT8_LOGIT_CLIP.get(model.likelihood.name)
    clipped = {k: v.numpy() for k, v in decode_outputs(model, z, labels, clip_logits=clip).items()}
    keras_p50, keras_p99 = _latency(lambda: model.decode(z[:1], None if labels is None else labels[:1]))
    rows = [{"artifact": "keras model.decode (eager)", "size_bytes": None, "max_abs_error": 0.0,
             "mean_abs_error": 0.0, "p50_ms": keras_p50, "p99_ms": keras_p99, "tolerance": None}]

    def check(name, path, outputs, latency, expected=None):
        expected = expected or (clipped if name == "tflite_int8" else reference)
        errors = {}
        for key, want in expected.items():
            if key not in outputs:
                raise VerificationError(f"{name} has no output {key!r} (it has {', '.join(sorted(outputs))}).")
            err = np.abs(np.asarray(outputs[key]).reshape(want.shape) - want)
            errors[key] = (float(err.max()), float(err.mean()), max(1.0, float(np.abs(want).max())))
        main = "mean" if "mean" in errors else "score"
        row = {"artifact": name, "path": str(path.relative_to(work)), "size_bytes": _size(path),
               "max_abs_error": errors[main][0], "mean_abs_error": errors[main][1],
               "errors": {k: {"max_abs": e[0], "mean_abs": e[1], "range": e[2]} for k, e in errors.items()},
               "p50_ms": latency[0], "p99_ms": latency[1], "tolerance": TOLERANCE[name]}
        rows.append(row)
        for key, (worst, _, scale) in errors.items():
            if not worst <= TOLERANCE[name] * scale:
                raise VerificationError(f"{name} does not match the Keras decoder: max abs error on {key!r} "
                                        f"{worst:.2e} > {TOLERANCE[name]:g} x range {scale:.3g}.")
        shown = "  ".join(f"{k} {e[0]:.1e}" for k, e in errors.items())
        log(f"  {name:22s} ok  max err {shown}  {row['size_bytes'] / 1e6:7.3f} MB  p50 {row['p50_ms']:.3f} ms")

    (work / "metadata.json").write_text(json.dumps(metadata, indent=2))
    if "savedmodel" in formats:
        path = work / "savedmodel" / model_name / str(version)
        _write_savedmodel(model, path, metadata)
        outputs, latency = run_savedmodel_without_kvae(path, z, labels)
        check("savedmodel", path, outputs, latency)
    if "tflite" in formats:
        (work / "tflite").mkdir()
        with tempfile.TemporaryDirectory() as tmp:
            _write_savedmodel(model, Path(tmp) / "decoder", metadata, decoder_only=True)
            if "int8" in tflite_variants and clip is not None:
                _write_savedmodel(model, Path(tmp) / "decoder_clipped", metadata, decoder_only=True,
                                  clip_logits=clip)
            for variant in tflite_variants:
                path = work / "tflite" / f"decoder_{variant}.tflite"
                source = Path(tmp) / ("decoder_clipped" if variant == "int8" and clip is not None else "decoder")
                _write_tflite(source, path, variant, model)
                outputs, one = run_tflite(path, z, labels)
                check(f"tflite_{variant}", path, outputs, _latency(one))
    if "onnx" in formats:
        (work / "onnx").mkdir()
        path = work / "onnx" / "decoder.onnx"
        _write_onnx(model, path)
        outputs, one = run_onnx(path, z, labels)
        check("onnx", path, outputs, _latency(one))
    if scorer:
        _export_scorer(model, work, formats, num_check, seed, check)
    report = {"checked_on": f"{num_check} latents drawn from the prior ({type(model.prior).__name__}), seed {seed}", "rows": rows, "metadata": metadata}
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _export_scorer(model, work, formats, num_check, seed, check):
    from kvae import anomaly

    x, labels = scorer_check_inputs(model, num_check, seed)
    inputs = {"x": x, "labels": labels}
    expected = {k: v.numpy() for k, v in scorer_outputs(model, x, labels).items()}
    # The Keras score by another road (TFP's densities and KL), so the exported math is checked too.
    keras_score = anomaly.NegativeELBO()(model, x, labels)
    if not np.allclose(expected["score"], keras_score, rtol=1e-5, atol=1e-3):
        raise VerificationError(f"The scorer graph does not match kvae.anomaly.NegativeELBO: max abs difference "
                                f"{np.abs(expected['score'] - keras_score).max():.2e}.")
    expected["score"] = keras_score
    if "tflite" in formats:
        with tempfile.TemporaryDirectory() as tmp:
            _write_scorer_savedmodel(model, Path(tmp) / "scorer")
            for variant in SCORER_TFLITE_VARIANTS:
                path = work / "tflite" / f"scorer_{variant}.tflite"
                _write_tflite(Path(tmp) / "scorer", path, variant, model, signature="score")
                outputs, one = run_tflite(path, None, signature="score", inputs=inputs)
                check(f"scorer_tflite_{variant}", path, outputs, _latency(one), expected)
    if "onnx" in formats:
        path = work / "onnx" / "scorer.onnx"
        _write_onnx(model, path, scorer_function(model))
        outputs, one = run_onnx(path, None, inputs=inputs)
        check("scorer_onnx", path, outputs, _latency(one), expected)


def format_report(report):
    """The report of `export` as a table to print.

    Args:
        report: dict returned by `export`.

    Returns:
        str.
    """
    lines = [f"{'artifact':24s} {'size MB':>9s} {'max err':>9s} {'mean err':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"]
    for r in report["rows"]:
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.3f}"
        lines.append(f"{r['artifact']:24s} {size:>9s} {r['max_abs_error']:9.1e} {r['mean_abs_error']:9.1e} "
                     f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    return "\n".join(lines)
