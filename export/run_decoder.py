"""Decode latents drawn on the host with an exported kvae decoder, and write an
image grid. Needs only numpy plus ai-edge-litert (for .tflite) or onnxruntime
(for .onnx): no TensorFlow, no kvae.

    python export/run_decoder.py decoder_float32.tflite --n 16 --seed 0 --out grid.png
    python export/run_decoder.py decoder.onnx --n 16 --label 3 --out threes.png   # conditional
"""

import argparse
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np


def fail(message):
    """One line on stderr and exit code 2, as kvae's command line does for bad input."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


class Decoder:
    """A .tflite or .onnx decoder: decode(z[, labels]) -> E[x|z] in the image shape."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            fail(f"run_decoder: no such file: {path}")
        try:
            self._load()
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - the runtimes raise many types for a bad file
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            fail(f"run_decoder: {self.path} is not a kvae decoder this runtime can load: {first}")

    def _load(self):
        if self.path.suffix == ".tflite":
            from ai_edge_litert.interpreter import Interpreter

            self._runner = Interpreter(model_path=str(self.path)).get_signature_runner("decode")
            inputs = self._runner.get_input_details()
            self.latent_dim = int(inputs["z"]["shape_signature"][-1])
            self.conditional = "labels" in inputs
            self._run = lambda feeds: self._runner(**feeds)["mean"]
        elif self.path.suffix == ".onnx":
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            inputs = {i.name: i for i in self._session.get_inputs()}
            self.latent_dim = int(inputs["z"].shape[-1])
            self.conditional = "labels" in inputs
            self._run = lambda feeds: self._session.run(["mean"], feeds)[0]
        else:
            fail(f"run_decoder: expected a .tflite or .onnx file, got {self.path.name}")

    def decode(self, z, labels=None):
        feeds = {"z": np.asarray(z, np.float32)}
        if self.conditional:
            if labels is None:
                fail("run_decoder: this decoder is conditional: pass --label K")
            feeds["labels"] = np.broadcast_to(np.asarray(labels, np.int32), (len(z),)).copy()
        return self._run(feeds)


def grid(images, columns=None, pad=1):
    """[N, H, W, C] in [0, 1] -> one uint8 [rows, cols, C] image."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(np.clip(images, 0, 1)):
        r, k = divmod(i, columns)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = (
            np.round(im * 255).astype(np.uint8))
    return canvas


def write_png(path, image, scale=4):
    """A grey (C=1) or RGB (C=3) uint8 image as PNG, with the standard library only."""
    image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    height, width, channels = image.shape
    color_type = {1: 0, 3: 2}[channels]
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # whole or absent
    try:
        tmp.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
                        + chunk(b"IEND", b""))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def prior_name(model_path):
    """The prior named in the export's metadata.json (beside tflite/ and onnx/), if any."""
    meta = Path(model_path).resolve().parent.parent / "metadata.json"
    return json.loads(meta.read_text()).get("prior") if meta.exists() else None


def draw_latents(n, latent_dim, seed, prior=None):
    """z ~ N(0, I), or uniform on the unit sphere for a hyperspherical model
    (prior 'SphericalUniform'). Mixture and VampPrior models: draw from their
    prior with the SavedModel's `sample` signature instead."""
    z = np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)
    if prior == "SphericalUniform":
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="decoder_*.tflite or decoder.onnx from `kvae export`")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label", type=int, default=None, help="class to draw (conditional decoders)")
    parser.add_argument("--out", default="grid.png")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    decoder = Decoder(args.model)
    z = draw_latents(args.n, decoder.latent_dim, args.seed, prior_name(decoder.path))
    images = decoder.decode(z, args.label)
    if images.ndim == 2:  # vector data: show square images if it can
        side = int(np.sqrt(images.shape[1]))
        images = images.reshape(len(images), side, side, 1)
    write_png(args.out, grid(images))
    print(f"decoded {args.n} latents with {decoder.path.name}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
