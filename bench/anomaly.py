"""How well each kvae.anomaly score separates out-of-distribution inputs from
the data a VAE was trained on: AUROC and the false-positive rate at 95% true
positives, with the extra cost of each score per image.

The model is the `make demo` recipe (MLP, latent 16, Bernoulli likelihood,
dynamic binarisation, Adam 1e-3, batch 128) trained on Fashion-MNIST's
training split; the background model of the likelihood ratio is the same
recipe on inputs with 20% of pixels replaced by noise (`--perturb 0.2`).
Every input is statically binarised (one seeded Bernoulli draw), as kvae
prepares test inputs. Pairs (in-distribution: Fashion-MNIST test images):

    digits     scikit-learn's 8x8 digits, resized to 20x20 and centred in 28x28 (as MNIST is)
    noise      uniform pixels
    constant   all-black and all-white images (half each)
    inverted   1 - x of Fashion-MNIST test images

and one-class-out: a model (and background) per class, trained on the other
nine classes; the held-out class is the anomaly. Typicality's entropy and
calibration use the validation split (never the test images). complexity
is -log p(x) (k=100) minus the context coder's length (the default for binary
inputs), complexity(png) the same with PNG lengths, complexity(elbo) the
elbo score minus the context coder's length (what `kvae export --scorer`
runs on a device).

    python bench/anomaly.py [--epochs 10] [--ooc-epochs 5] [--n 1000] [--out bench/RESULTS.md]
"""

import argparse
import json
import os
import time

import numpy as np

from report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SCORES = {  # column: (registry name, options)
    "nll": ("nll", {"k": 100}),
    "elbo": ("elbo", {}),
    "complexity": ("complexity", {"k": 100}),
    "complexity(png)": ("complexity", {"k": 100, "compressor": "png"}),
    "complexity(elbo)": ("complexity", {"base": "elbo"}),
    "likelihood_ratio": ("likelihood_ratio", {"k": 100}),
    "likelihood_regret": ("likelihood_regret", {"steps": 50}),
    "typicality": ("typicality", {"k": 100}),
}


def train(x, epochs, perturb=0.0, seed=0):
    import keras

    import kvae

    keras.utils.set_random_seed(seed)
    model = kvae.VAE(input_shape=x.shape[1:], latent_dim=16)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    ds = kvae.data.pipeline(x, batch_size=128, seed=seed, dynamic_binarize=True, perturb=perturb)
    model.fit(ds, epochs=epochs, verbose=0)
    return model


def digits_28():
    from PIL import Image
    from sklearn.datasets import load_digits

    out = []
    for im in load_digits().images / 16.0:
        small = Image.fromarray((im * 255).astype(np.uint8)).resize((20, 20), Image.BILINEAR)
        canvas = np.zeros((28, 28), np.float32)
        canvas[4:24, 4:24] = np.asarray(small) / 255.0
        out.append(canvas)
    return np.stack(out)[..., None]


def score_all(model, background, heldin, inliers, outliers):
    """{column: (inlier scores, {pair: outlier scores}, seconds per image)}."""
    from kvae import anomaly

    out = {}
    for column, (name, options) in SCORES.items():
        if name == "likelihood_ratio":
            options = dict(options, background=background)
        score = anomaly.get(name, **options)
        if score.needs_reference:
            score.fit(model, heldin)
        score(model, inliers[:256])  # traced once before it is timed
        t = time.perf_counter()
        s_in = score(model, inliers)
        per_image = (time.perf_counter() - t) / len(inliers)
        out[column] = (s_in, {pair: score(model, x) for pair, x in outliers.items()}, per_image)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--ooc-epochs", type=int, default=5)
    p.add_argument("--n", type=int, default=1000, help="images per set")
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="one-class-out classes ('' to skip)")
    p.add_argument("--log", default="/tmp/kvae_anomaly_bench.jsonl")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import kvae
    from kvae import anomaly
    from kvae.data import binarize

    started = time.time()
    ds = kvae.data.load("fashion_mnist")
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = ds.train, ds.validation, ds.test
    rng = np.random.default_rng(0)
    n = args.n
    static = lambda x, seed: binarize(x, "static", seed)  # noqa: E731
    inliers, heldin = static(x_test[:n], 1), static(x_val[:n], 2)
    digits = digits_28()
    outliers = {
        "digits": static(digits[rng.permutation(len(digits))[:n]], 3),
        "noise": static(rng.uniform(size=(n, 28, 28, 1)).astype(np.float32), 4),
        "constant": np.concatenate([np.zeros((n // 2, 28, 28, 1)), np.ones((n - n // 2, 28, 28, 1))]).astype(
            np.float32),
        "inverted": static(1.0 - x_test[n:2 * n], 5),
    }
    log = open(args.log, "a")
    t = time.time()
    model = train(x_train, args.epochs)
    background = train(x_train, args.epochs, perturb=0.2)
    train_s = time.time() - t
    results = score_all(model, background, heldin, inliers, outliers)
    far = {}
    for column, (s_in, s_out, per_image) in results.items():
        far[column] = {pair: (anomaly.auroc(s_in, s), anomaly.fpr_at_tpr(s_in, s)) for pair, s in s_out.items()}
        far[column]["ms"] = per_image * 1e3
        log.write(json.dumps({"far": column, **{k: v for k, v in far[column].items()}}) + "\n")
        log.flush()
    pairs = list(outliers)
    lines = [f"## Anomaly scores: AUROC on far out-of-distribution pairs (`python bench/anomaly.py`, "
             f"{time.strftime('%Y-%m-%d')})", "",
             f"Model: the `make demo` recipe trained {args.epochs} epochs on Fashion-MNIST's training split "
             f"(background model: the same with --perturb 0.2), {train_s:.0f} s for both. {n} Fashion-MNIST test "
             f"images against {n} of each pair; AUROC (FPR at 95% TPR in brackets); ms = cost per image of the "
             "score on this 2-core machine (batches of 256, after one traced batch).", "",
             "| score | " + " | ".join(pairs) + " | ms/image |", "|---" * (len(pairs) + 2) + "|"]
    for column, row in far.items():
        lines.append(f"| {column} | " + " | ".join(f"{row[p][0]:.3f} ({row[p][1]:.2f})" for p in pairs)
                     + f" | {row['ms']:.2f} |")

    classes = [int(c) for c in args.classes.split(",") if c.strip()]
    if classes:
        ooc = {column: [] for column in SCORES}
        for c in classes:
            keep_train, keep_val = y_train != c, y_val != c
            m = train(x_train[keep_train], args.ooc_epochs, seed=c)
            bg = train(x_train[keep_train], args.ooc_epochs, perturb=0.2, seed=c)
            ins = static(x_test[y_test != c][:n], 10 + c)
            outs = {"held-out class": static(x_test[y_test == c][:n], 20 + c)}
            res = score_all(m, bg, static(x_val[keep_val][:n], 30 + c), ins, outs)
            for column, (s_in, s_out, _) in res.items():
                ooc[column].append(anomaly.auroc(s_in, s_out["held-out class"]))
            log.write(json.dumps({"class": c, **{k: v[-1] for k, v in ooc.items()}}) + "\n")
            log.flush()
            print(f"class {c}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in ooc.items()), flush=True)
        lines += ["", f"One-class-out on Fashion-MNIST (a model and a background per class, {args.ooc_epochs} "
                  f"epochs on the other nine classes; up to {n} test images of the nine against those of the "
                  "held-out class): AUROC per held-out class.", "",
                  "| score | " + " | ".join(str(c) for c in classes) + " | mean |",
                  "|---" * (len(classes) + 2) + "|"]
        for column, values in ooc.items():
            lines.append(f"| {column} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")
    lines += ["", f"Wall time {(time.time() - started) / 60:.1f} min, nothing else running."]
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
