"""Cost of the importance-sampled log-likelihood (kvae.evaluate.log_likelihood).

1. Time of k=1000 on the 10,000 Fashion-MNIST test images (binarised at 0.5)
   for the 784-400-20 MLP VAE (trained 1 epoch: cost does not depend on the
   weights). Goal: <= 3 minutes on this 2-core machine.
2. Peak memory (max RSS of a fresh process) for k=100 and k=5000 on 500
   images: samples are drawn `chunk` (100) at a time, so it must not grow with k.

    python bench/eval_cost.py [--out bench/RESULTS.md]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _model_and_data():
    import keras

    import kvae

    ds = kvae.data.load("fashion_mnist")
    train = kvae.data.binarize(ds.train[0][:20000], "threshold")
    test = kvae.data.binarize(ds.test[0], "threshold")
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=20, encoder=kvae.networks.mlp([400]),
                     decoder=kvae.networks.mlp([400]))
    model.compile(optimizer="adam")
    model.fit(train, epochs=1, batch_size=128, verbose=0)
    return model, test


def child(k, n):
    from kvae import evaluate

    model, test = _model_and_data()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    ll = evaluate.log_likelihood(model, test[:n], k=k)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"k": k, "n": n, "seconds": seconds, "mean_log_likelihood": float(ll.mean()),
                      "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    results = []
    for k, n in [(1000, 10000), (100, 500), (5000, 500)]:
        out = subprocess.run([sys.executable, __file__, "--child", str(k), str(n)], capture_output=True, text=True)
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = results[-1]
        print(f"k={k:5d} n={n:6d}: {r['seconds']:7.1f} s, log p(x) {r['mean_log_likelihood']:.2f}, "
              f"max RSS {r['rss_peak_mb']:.0f} MB (before evaluating {r['rss_before_mb']:.0f} MB)", flush=True)
    big, small, huge = results
    text = "\n".join([
        "Command: `.venv/bin/python bench/eval_cost.py`. Each line is a fresh process.", "",
        "| k | test images | time (s) | mean log p(x) (nats) | max RSS (MB) | RSS before evaluating (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['k']} | {r['n']} | {r['seconds']:.1f} | {r['mean_log_likelihood']:.2f} | {r['rss_peak_mb']:.0f} | "
          f"{r['rss_before_mb']:.0f} |" for r in results],
        "",
        f"k=1000 on 10,000 images: {big['seconds'] / 60:.2f} min (goal <= 3 min). Peak RSS k=5000 / k=100: "
        f"{huge['rss_peak_mb'] / small['rss_peak_mb']:.3f}.",
    ])
    emit(text, args.out)


if __name__ == "__main__":
    main()
