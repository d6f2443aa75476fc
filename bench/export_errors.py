"""Export errors per likelihood and per output: the max abs error of every
artifact's `mean` and `logits` against the Keras decoder, beside that output's
range (max |value|), which scales the tolerance (kvae.exporters.TOLERANCE).

One MLP VAE (latent 4) per likelihood, trained 30 epochs on scikit-learn's
8x8 digits (binarised at 0.5 for the Bernoulli, grey levels in [0, 1] for the
others), exported to every format and TFLite variant with the checks relaxed
so that every error is reported, including those over tolerance.

    python bench/export_errors.py [--out bench/RESULTS.md]
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import kvae  # noqa: E402
from kvae import exporters  # noqa: E402
from report import emit  # noqa: E402

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="append the table to this markdown file")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    grey = (load_digits().images[..., None] / 16.0).astype("float32")
    tolerance = dict(exporters.TOLERANCE)
    exporters.TOLERANCE.update({k: np.inf for k in tolerance})  # report, do not stop
    rows = ["| likelihood | artifact | tolerance | mean: max err | logits: max err (range) | within |",
            "| --- | --- | ---: | ---: | ---: | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in LIKELIHOODS:
            keras.utils.set_random_seed(0)
            x = (grey > 0.5).astype("float32") if name == "bernoulli" else grey
            model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=4, likelihood=name)
            model.compile(optimizer="adam")
            model.fit(x, epochs=args.epochs, batch_size=64, verbose=0)
            model.save(Path(tmp) / f"{name}.keras")
            variants = [v for v in exporters.TFLITE_VARIANTS if v not in kvae.registry.get("likelihood", name).tflite_refuses]
            report = exporters.export(Path(tmp) / f"{name}.keras", Path(tmp) / name, tflite_variants=variants,
                                      log=lambda *a: None)
            for row in report["rows"][1:]:
                errors, tol = row["errors"], tolerance[row["artifact"]]
                ok = all(e["max_abs"] <= tol * e["range"] for e in errors.values())
                logits = (f"{errors['logits']['max_abs']:.2e} ({errors['logits']['range']:.4g})"
                          if "logits" in errors else "-")
                rows.append(f"| {name} | {row['artifact']} | {tol:g} | {errors['mean']['max_abs']:.2e} | "
                            f"{logits} | {'yes' if ok else 'NO'} |")
    emit("## Export errors per likelihood (`python bench/export_errors.py`)\n\n" + "\n".join(rows), args.out)


if __name__ == "__main__":
    main()
