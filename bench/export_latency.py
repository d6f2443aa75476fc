"""Batch-1 decoder latency and artifact size: Keras (eager call and `predict`)
against the exported SavedModel, TFLite (float32 / float16 / dynamic-range int8
/ full int8) and ONNX Runtime, for the default MLP and conv VAEs on 28x28x1.

Each model is trained for 2 epochs on 10,000 Fashion-MNIST images (binarised at
0.5) so that the quantisation errors are those of real weights. Latency: p50
and p99 of 200 single-example calls after 20 warm-up calls, one process, back
to back (the SavedModel runs in a child process without kvae, as a server would).

    python bench/export_latency.py [--out bench/RESULTS.md]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kvae  # noqa: E402
from kvae import exporters  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="append the tables to this markdown file")
    args = parser.parse_args()
    ds = kvae.data.load("fashion_mnist")
    x = kvae.data.binarize(ds.train[0][:10000], "threshold")
    sections = []
    for network in ["mlp", "conv"]:
        keras.utils.set_random_seed(0)
        model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=16, encoder=network, decoder=network)
        model.compile(optimizer="adam")
        model.fit(x, epochs=2, batch_size=128, verbose=0)
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "m.keras")
            report = exporters.export(Path(tmp) / "m.keras", Path(tmp) / "e", log=lambda *a: None)
        z1 = np.random.default_rng(0).normal(size=(1, 16)).astype("float32")
        model.decoder.predict(z1, verbose=0)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            model.decoder.predict(z1, verbose=0)
            times.append(time.perf_counter() - t)
        rows = report["rows"]
        rows.insert(1, {"artifact": "keras decoder.predict", "size_bytes": None, "max_abs_error": 0.0,
                        "mean_abs_error": 0.0, "p50_ms": float(np.percentile(times, 50) * 1e3),
                        "p99_ms": float(np.percentile(times, 99) * 1e3)})
        eager = rows[0]["p50_ms"]
        f32 = next(r["size_bytes"] for r in rows if r["artifact"] == "tflite_float32")
        lines = [f"### {network} decoder (latent 16 -> 28x28x1)", "",
                 "| artifact | size (KB) | size / tflite float32 | max abs err | mean abs err | p50 ms | p99 ms "
                 "| p50 / Keras eager |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in rows:
            size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1024:.0f}"
            rel = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / f32:.2f}"
            lines.append(f"| {r['artifact']} | {size} | {rel} | {r['max_abs_error']:.1e} | {r['mean_abs_error']:.1e} "
                         f"| {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p50_ms'] / eager:.3f} |")
        sections.append("\n".join(lines))
        print(sections[-1] + "\n", flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + "\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
