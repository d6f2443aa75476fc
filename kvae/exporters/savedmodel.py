"""SavedModel (TF Serving): writing it, and running it as a server would, in a
fresh process where kvae cannot be imported."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from kvae.exporters.base import VerificationError
from kvae.exporters.graphs import decoder_function, scorer_function, specs

__all__ = ["write_savedmodel", "write_scorer_savedmodel", "run_savedmodel_without_kvae"]


def write_scorer_savedmodel(model, path):
    """Write the scorer's SavedModel (one `score` signature).

    Args:
        model: kvae.VAE; path: the folder to write.

    Returns:
        None; the SavedModel is in `path`.
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("score", scorer_function(model))
    archive.write_out(str(path), verbose=False)


def write_savedmodel(model, path, metadata, decoder_only=False, clip_logits=None):
    """Write the SavedModel: decode (also serving_default), encode, reconstruct and sample signatures.

    Args:
        model: kvae.VAE; path: the folder to write; metadata: dict, written to assets/kvae_metadata.json;
        decoder_only: bool, the decode signature alone (what TFLite converts); clip_logits: float or None.

    Returns:
        None; the SavedModel is in `path`.
    """
    import keras
    import tensorflow as tf

    z_spec, labels_spec, x_spec = specs(model)
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


def run_savedmodel_without_kvae(path, z, labels=None, scratch=None):
    """The `serving_default` signature, run in a fresh Python process where
    `import kvae` fails, as a server would run it.

    Args:
        path: the SavedModel directory; z, labels: as in `run_tflite`;
        scratch: the folder for its inputs and outputs (an export's own work folder, which
            the next export sweeps if this process is killed), or None (the system's temp).

    Returns:
        (dict of outputs, (p50_ms, p99_ms) of batch-1 calls).
    """
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
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
