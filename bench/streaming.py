"""Training and scoring from data larger than memory (issue 13).

1. Writes a uint8 .npy of generated 28x28 images (Fashion-MNIST's training
   images, each shifted by a random offset and randomly mirrored; random
   images if the Debian files are absent): 5,200,000 images, 4.08 GB.
2. Peak RSS of one full training epoch streamed from it (`kvae.data`,
   `.npy` read by rows), MLP VAE, batch 128, in a fresh process.
3. Throughput, disk against memory, MLP and conv VAEs: one fresh process per
   network alternates rounds of `--steps` training steps streamed from the
   file (random rows over all of it) and from an in-memory array of 300,000
   images (the in-memory pipeline), after a warm-up of each; every round is
   reported and the ratio is the median of per-round ratios.
4. Scoring (`kvae.scoring.score`, ELBO and posterior means to Parquet) of
   100,000, 300,000 and 1,000,000 images of the file, each in a fresh
   process: images/s and peak RSS.

    python bench/streaming.py [--dir /tmp/kvae-stream] [--images 5500000] [--rounds 3] [--out bench/RESULTS.md]

Run it alone on the machine. The file is removed at the end unless --keep.
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

from report import emit

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
MEMORY_IMAGES = 300_000


def make_file(path, n):
    import gzip

    if os.path.exists(FASHION):
        with gzip.open(FASHION) as f:
            base = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    else:
        base = (np.random.default_rng(0).uniform(size=(60_000, 28, 28)) * 255).astype(np.uint8)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 28, 28))
    rng = np.random.default_rng(1)
    for start in range(0, n, len(base)):
        k = min(len(base), n - start)
        dy, dx = rng.integers(-3, 4, size=2)
        block = np.roll(base[:k], (dy, dx), axis=(1, 2))
        out[start:start + k] = block[:, :, ::-1] if rng.uniform() < 0.5 else block
    out.flush()
    del out


def _peak_mb():
    """This process's peak resident memory (VmHWM: per address space, reset by exec;
    ru_maxrss carried the peak of an earlier child into later ones here)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model(network):
    import keras

    import kvae

    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=16, encoder=network, decoder=network)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=32)
    return model


def child_epoch(path):
    """One full epoch streamed from `path`: seconds, images, peak RSS."""
    import tensorflow as tf

    from kvae import data

    src = data.open_source(path)
    subset = data.Subset(src, np.arange(src.n), 255.0)
    epoch = tf.Variable(0, dtype=tf.int64)
    ds = data.pipeline(subset, batch_size=128, seed=0, dynamic_binarize=True, epoch=epoch, drop_remainder=True)
    model = _model("mlp")
    start = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return {"seconds": time.perf_counter() - start, "images": src.n // 128 * 128, "peak_rss_mb": _peak_mb()}


def child_rates(path, network, steps, rounds):
    """Alternating rounds of `steps` steps from disk and from memory."""
    import tensorflow as tf

    from kvae import data

    src = data.open_source(path)
    subset = data.Subset(src, np.arange(src.n), 255.0)
    memory = (src.read(np.arange(MEMORY_IMAGES))[..., None] / np.float32(255)).astype(np.float32)
    epoch = tf.Variable(0, dtype=tf.int64)
    pipes = {"disk": data.pipeline(subset, batch_size=128, seed=0, dynamic_binarize=True, epoch=epoch),
             "memory": data.pipeline(memory, batch_size=128, seed=0, dynamic_binarize=True, epoch=epoch)}
    model = _model(network)
    for k in pipes:  # warm-up: tracing and the first reads
        model.fit(pipes[k].repeat(), steps_per_epoch=64, epochs=1, verbose=0)
    out = {"disk": [], "memory": []}
    for _ in range(rounds):
        for k in ("disk", "memory"):
            start = time.perf_counter()
            model.fit(pipes[k].repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
            out[k].append(steps * 128 / (time.perf_counter() - start))
    return out


def child_score(path, n):
    import kvae
    from kvae import data, scoring

    src = data.open_source(path)
    subset = data.Subset(src, np.arange(n), 255.0)
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=16)
    out = os.path.join(os.path.dirname(path), f"scores-{n}.parquet")
    start = time.perf_counter()
    info = scoring.score(model, subset, out, scores=["elbo"], batch_size=1024, binarize=True, verbose=0)
    seconds = time.perf_counter() - start
    os.remove(out)
    return {"n": n, "rows": info["rows"], "seconds": seconds, "per_s": n / seconds, "peak_rss_mb": _peak_mb()}


def _run_child(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True,
                         text=True, env=env)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", default="/tmp/kvae-stream")
    p.add_argument("--images", type=int, default=5_200_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1024, help="steps per round for the MLP (the conv: an eighth)")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs="*")
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "epoch":
            result = child_epoch(rest[0])
        elif kind == "rates":
            result = child_rates(rest[0], rest[1], int(rest[2]), int(rest[3]))
        else:
            result = child_score(rest[0], int(rest[1]))
        print(json.dumps(result))
        return
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "images.npy")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        make_file(path, args.images)
    size_gb = os.path.getsize(path) / 1e9
    print(f"data: {path}, {size_gb:.2f} GB ({time.perf_counter() - t0:.0f} s)", flush=True)
    epoch = _run_child("epoch", path)
    print("epoch", epoch, flush=True)
    rates = {net: _run_child("rates", path, net, args.steps if net == "mlp" else args.steps // 8, args.rounds)
             for net in ("mlp", "conv")}
    print("rates", rates, flush=True)
    scores = [_run_child("score", path, n) for n in (100_000, 300_000, 1_000_000) if n <= args.images]
    print("scores", scores, flush=True)
    lines = [f"## Data larger than memory: streaming and scoring (`python bench/streaming.py`, "
             f"{time.strftime('%Y-%m-%d')})", "",
             f"A uint8 `.npy` of {args.images:,} generated 28x28 images ({size_gb:.2f} GB on disk; Fashion-MNIST "
             "shifted and mirrored), read by rows with `kvae.data.NpySource`. Each measurement in a fresh "
             "process, nothing else running.", "",
             f"One full training epoch streamed from the file (MLP VAE, batch 128, dynamic binarisation): "
             f"{epoch['images']:,} images in {epoch['seconds']:.0f} s ({epoch['images'] / epoch['seconds']:,.0f} "
             f"images/s), **peak RSS {epoch['peak_rss_mb']:,.0f} MB** (goal < 1,500 MB).", "",
             f"Throughput, disk (random rows over the whole file) against memory (the in-memory pipeline over "
             f"{MEMORY_IMAGES:,} images), alternating rounds in one process, images/s:", "",
             "| network | round | disk | memory | disk / memory |", "|---|---|---|---|---|"]
    for net, r in rates.items():
        ratios = [d / m for d, m in zip(r["disk"], r["memory"])]
        for i, (d, m) in enumerate(zip(r["disk"], r["memory"])):
            lines.append(f"| {net} | {i + 1} | {d:,.0f} | {m:,.0f} | {d / m:.2f} |")
        lines.append(f"| {net} | **median** | {statistics.median(r['disk']):,.0f} | "
                     f"{statistics.median(r['memory']):,.0f} | **{statistics.median(ratios):.2f}** |")
    lines += ["", "Scoring (`kvae.scoring.score`: posterior means and the ELBO score to Parquet, batches of "
              "1,024, fixed binarisation), a fresh process per size:", "",
              "| images | seconds | images/s | peak RSS (MB) |", "|---|---|---|---|"]
    for s in scores:
        lines.append(f"| {s['n']:,} | {s['seconds']:.1f} | {s['per_s']:,.0f} | {s['peak_rss_mb']:,.0f} |")
    lines += ["", f"Wall time {(time.perf_counter() - t0) / 60:.1f} min."]
    emit("\n".join(lines), args.out)
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
