"""Score images for anomalies with an exported kvae scorer (`kvae export --scorer`),
and say yes/no against the threshold calibrated at export (`--fpr`). Needs only
numpy plus ai-edge-litert (for .tflite) or onnxruntime (for .onnx): no
TensorFlow, no kvae.

    python export/score.py EXPORT/tflite/scorer_float32.tflite images.npy
    python export/score.py EXPORT/onnx/scorer.onnx a.npy b.npy --json scores.json

Inputs are .npy files holding one image [H, W, C] or a batch [N, H, W, C] (or
[N, D] for vector data), as floats in [0, 1] or integers 0..255 (0/1 integers
are kept as they are). They are prepared as the run's validation images were
when the threshold was set: for a Bernoulli-type likelihood, binarised by one
seeded Bernoulli draw ('static', --seed) or by x > 0.5 ('threshold'), as
metadata.json says. Scores, in nats, higher is more anomalous:

    elbo        -ELBO at the posterior mode (the exported graph)
    complexity  elbo - ln 2 x the input's length under an adaptive context
                coder (binary inputs; kvae.anomaly.compressed_bits 'context',
                computed here with numpy): corrects the likelihood's
                preference for simple inputs (bench/RESULTS.md). The default
                where the export has its threshold.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def fail(message):
    """One line on stderr and exit code 2, as kvae's command line does for bad input."""
    print(f"score: {message}", file=sys.stderr)
    raise SystemExit(2)


class Scorer:
    """A .tflite or .onnx scorer: score(x) -> {'score', 'reconstruction', 'kl'} per input."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            fail(f"no such file: {path}")
        try:
            if self.path.suffix == ".tflite":
                from ai_edge_litert.interpreter import Interpreter

                runner = Interpreter(model_path=str(self.path)).get_signature_runner("score")
                self.inputs = {k: tuple(v["shape_signature"]) for k, v in runner.get_input_details().items()}
                self._run = lambda feeds: runner(**feeds)
            elif self.path.suffix == ".onnx":
                import onnxruntime as ort

                session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
                self.inputs = {i.name: tuple(i.shape) for i in session.get_inputs()}
                names = [o.name for o in session.get_outputs()]
                self._run = lambda feeds: dict(zip(names, session.run(None, feeds)))
            else:
                fail(f"expected a .tflite or .onnx scorer, got {self.path.name}")
        except SystemExit:
            raise
        except Exception as e:  # noqa: BLE001 - the runtimes raise many types for a bad file
            fail(f"{self.path} is not a kvae scorer this runtime can load: {str(e).strip()[:200]}")
        if "x" not in self.inputs:
            fail(f"{self.path} has no input 'x' (inputs: {', '.join(self.inputs)}): export it with --scorer")
        if "labels" in self.inputs:
            fail("this scorer is conditional; this runner scores unconditional models only")

    def score(self, x):
        out = self._run({"x": np.asarray(x, np.float32)})
        return {k: np.asarray(v, np.float64).reshape(-1) for k, v in out.items()}


def load_images(path, shape):
    """One .npy file as float32 [N, *shape] in [0, 1]."""
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path} as a .npy array: {e}")
    shape = tuple(shape)
    if shape[-1] == 1 and x.shape[-len(shape) + 1:] == shape[:-1] and x.ndim in (len(shape) - 1, len(shape)):
        x = x[..., None]  # grey images without their channel axis
    if x.shape == shape:
        x = x[None]  # one image
    if x.ndim == len(shape) + 1 and len(x) == 0:
        fail(f"{path} holds no images (shape {tuple(x.shape)})")
    if x.shape[1:] != shape:
        fail(f"{path}: images of shape {tuple(x.shape[1:]) or tuple(x.shape)} do not fit the scorer's "
             f"input {tuple(shape)}")
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        if x.min(initial=0) < 0 or x.max(initial=0) > 255:
            fail(f"{path}: integer pixels must lie in 0..255")
        x = x.astype(np.float32) / (255.0 if x.max(initial=0) > 1 else 1.0)
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min(initial=0) < 0 or x.max(initial=0) > 1:
        fail(f"{path}: pixels must be finite and in [0, 1] (or integers 0..255)")
    return x


#: kvae.anomaly.CONTEXT_TEMPLATE: JBIG's three-line template of causal neighbours
CONTEXT_TEMPLATE = ((-2, -1), (-2, 0), (-2, 1), (-1, -2), (-1, -1), (-1, 0), (-1, 1), (-1, 2), (0, -2), (0, -1))


def context_bits(x):
    """Bits of binary images [N, H, W, 1] under kvae's adaptive context coder
    (kvae.anomaly._context_bits: Krichevsky-Trofimov estimates per context,
    counted within each image), in numpy alone."""
    n, h, w = x.shape[:3]
    pad = np.zeros((n, h + 2, w + 4), np.int64)
    pad[:, 2:, 2:-2] = x[..., 0]
    ones = np.zeros((n, 2 ** len(CONTEXT_TEMPLATE)))
    seen = np.zeros_like(ones)
    rows, bits = np.arange(n), np.zeros(n)
    for r in range(h):
        for c in range(w):
            ctx = np.zeros(n, np.int64)
            for k, (dy, dx) in enumerate(CONTEXT_TEMPLATE):
                ctx |= pad[:, 2 + r + dy, 2 + c + dx] << k
            p1 = (ones[rows, ctx] + 0.5) / (seen[rows, ctx] + 1.0)
            v = pad[:, 2 + r, 2 + c]
            bits -= np.log2(np.where(v == 1, p1, 1.0 - p1))
            ones[rows, ctx] += v
            seen[rows, ctx] += 1
    return bits


def prepare(x, metadata, seed):
    """Binarise as the run did for its validation images."""
    thresholds = (metadata.get("scorer") or {}).get("thresholds") or {}
    mode = thresholds.get("binarize", "static" if metadata.get("likelihood") in ("bernoulli",) else "none")
    if mode == "static":
        return (np.random.default_rng(seed).uniform(size=x.shape) < x).astype(np.float32)
    if mode == "threshold":
        return (x > 0.5).astype(np.float32)
    return x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scorer", help="scorer_float32.tflite, scorer_float16.tflite or scorer.onnx")
    p.add_argument("images", nargs="+", help=".npy files")
    p.add_argument("--metadata", help="the export's metadata.json (default: found beside the scorer's folder)")
    p.add_argument("--seed", type=int, default=0, help="of the binarisation draw")
    p.add_argument("--score", choices=["elbo", "complexity"], default=None,
                   help="default: complexity where the export has its threshold, else elbo")
    p.add_argument("--json", help="also write the scores here")
    args = p.parse_args(argv)
    meta_path = Path(args.metadata) if args.metadata else Path(args.scorer).resolve().parent.parent / "metadata.json"
    if not meta_path.is_file():
        fail(f"no metadata.json at {meta_path}: pass --metadata EXPORT/metadata.json")
    metadata = json.loads(meta_path.read_text())
    if "scorer" not in metadata:
        fail(f"{meta_path} has no scorer: export with kvae export --scorer")
    scorer = Scorer(args.scorer)
    shape = tuple(metadata["input_shape"])
    thresholds = metadata["scorer"].get("thresholds") or {}
    name = args.score or ("complexity" if "complexity" in thresholds else "elbo")
    t = thresholds.get(name)
    rows = []
    for path in args.images:
        x = prepare(load_images(path, shape), metadata, args.seed)
        out = scorer.score(x)
        out["elbo"] = out.pop("score")
        if name == "complexity":
            if not np.isin(x, (0, 1)).all():
                fail("the complexity score needs binary inputs: use --score elbo")
            out["complexity"] = out["elbo"] - context_bits(x) * np.log(2.0)
        for i in range(len(x)):
            row = {"file": path, "index": i, "score": float(out[name][i]), **{k: float(v[i]) for k, v in out.items()}}
            if t is not None:
                row["anomalous"] = bool(row["score"] > t["value"])
            rows.append(row)
    print(f"{'file':30s} {'index':>5s} {name:>10s} {'elbo':>10s} {'recon':>10s} {'kl':>8s}  verdict")
    for r in rows:
        verdict = "-" if t is None else ("ANOMALOUS" if r["anomalous"] else "ok")
        print(f"{Path(r['file']).name[:30]:30s} {r['index']:5d} {r['score']:10.3f} {r['elbo']:10.3f} "
              f"{r['reconstruction']:10.3f} {r['kl']:8.3f}  {verdict}")
    if t is not None:
        print(f"{name} threshold {t['value']:.3f} nats (false-positive rate {t['fpr']:g} on {t['heldin_n']} "
              "held-in images)")
    if args.json:
        Path(args.json).write_text(json.dumps({"score": name, "threshold": t and t["value"], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
