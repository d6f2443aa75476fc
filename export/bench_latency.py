"""Decoder latency on the device: every .tflite / .onnx file in a `kvae export`
directory, at several thread counts and batch sizes. numpy + ai-edge-litert /
onnxruntime only (no TensorFlow, no kvae).

    python export/bench_latency.py EXPORT_DIR [--threads 1 2] [--batch 1 16] [--runs 300]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def _tflite(path, threads):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=threads).get_signature_runner("decode")
    inputs = runner.get_input_details()
    return int(inputs["z"]["shape_signature"][-1]), "labels" in inputs, lambda feeds: runner(**feeds)


def _onnx(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    return int(inputs["z"].shape[-1]), "labels" in inputs, lambda feeds: session.run(None, feeds)


def measure(fn, feeds, runs):
    for _ in range(max(10, runs // 10)):
        fn(feeds)
    times = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn(feeds)
        times[i] = time.perf_counter() - t
    return np.percentile(times, 50) * 1e3, np.percentile(times, 99) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    files = sorted(Path(args.export_dir).rglob("*.tflite")) + sorted(Path(args.export_dir).rglob("*.onnx"))
    if not files:
        raise SystemExit(f"bench_latency: no .tflite or .onnx files under {args.export_dir}")
    print(f"{'artifact':32s} {'threads':>7s} {'batch':>5s} {'p50 ms':>8s} {'p99 ms':>8s} {'size MB':>8s}")
    for path in files:
        for threads in args.threads:
            latent_dim, conditional, fn = (_tflite if path.suffix == ".tflite" else _onnx)(path, threads)
            for batch in args.batch:
                feeds = {"z": np.random.default_rng(0).standard_normal((batch, latent_dim)).astype(np.float32)}
                if conditional:
                    feeds["labels"] = np.zeros(batch, np.int32)
                p50, p99 = measure(fn, feeds, args.runs)
                print(f"{path.name:32s} {threads:7d} {batch:5d} {p50:8.3f} {p99:8.3f} "
                      f"{path.stat().st_size / 1e6:8.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
