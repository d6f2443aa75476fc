"""Training throughput: kvae (`model.fit`) against a PyTorch reference.

The model in both: the 784-400-20 MLP VAE of Kingma and Welling (ReLU; `--hidden
400,400` for two hidden layers), a diagonal Gaussian posterior, a Bernoulli likelihood on binarised 28x28 images,
analytic KL to N(0, I), one reparameterised sample, Adam(1e-3), batch 128.

Both drop the last partial batch. kvae runs with its defaults (`compile()` uses XLA
on a single device and 32 steps per execution, run as one XLA program: kvae.fused.MAX_BYTES)
and with one XLA program per step (Keras's own loop, the
default before; `--runs` adds `kvae-tuned`: the defaults + one TF inter-op thread).
Each run is a fresh process (so neither framework's thread pools disturb the
other); runs are interleaved in rounds and the ratio is the median of per-round
ratios, because this shared VM's speed drifts by up to 2x over minutes. Data: Fashion-MNIST
binarised at 0.5 if the Debian files are present, else random binary images of
the same shape (throughput does not depend on pixel values). Each reports
images/s per epoch; the first epoch is warm-up (tracing, allocation) and the
median of the rest is reported.

    python bench/throughput.py [--epochs 4] [--n 20480] [--rounds 3] [--hidden 400] [--runs torch,kvae,kvae-per-step]
                               [--out bench/RESULTS.md]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from report import emit

BATCH, LATENT = 128, 20
RUNS = ["torch", "kvae", "kvae-per-step"]
LABELS = {
    "torch": "PyTorch reference (eager, `torch.set_num_threads(cores)`)",
    "kvae": "kvae `fit`, default `compile(optimizer=\"adam\")` (XLA, 32 steps per execution in one program)",
    "kvae-per-step": "kvae `fit`, the defaults but one XLA program per step (`kvae.fused.MAX_BYTES = 0`)",
    "kvae-tuned": "kvae `fit`, the defaults + 1 TF inter-op thread",
}
FASHION_DIR = "/usr/share/datasets/fashion-mnist"


def load_data(n):
    path = os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")
    if os.path.exists(path):
        import gzip

        with gzip.open(path) as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        x, source = (images[:n] / 255.0 > 0.5).astype("float32"), "Fashion-MNIST (Debian), binarised at 0.5"
    else:
        rng = np.random.default_rng(0)
        x, source = (rng.uniform(size=(n, 28, 28)) > 0.5).astype("float32"), "random binary 28x28"
    return x, source


def run_kvae(x, epochs, variant, hidden):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    if variant == "kvae-tuned":  # one inter-op thread leaves both cores to the (XLA) step's intra-op pool
        tf.config.threading.set_inter_op_parallelism_threads(1)

    import kvae
    import kvae.fused

    if variant == "kvae-per-step":
        kvae.fused.MAX_BYTES = 0

    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(28, 28, 1), latent_dim=LATENT, encoder=kvae.networks.mlp(hidden),
                     decoder=kvae.networks.mlp(hidden[::-1]), likelihood="bernoulli")
    # the default run is the README quickstart's `compile(optimizer="adam")` (Adam's default rate is 1e-3)
    model.compile(optimizer="adam")
    # kvae's own pipeline: shuffles indices (as the reference's randperm does).
    ds = kvae.data.pipeline(x[..., None], batch_size=BATCH, seed=0, drop_remainder=True)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    history = model.fit(ds, epochs=epochs, verbose=0, callbacks=[Timer()])
    return times, float(history.history["loss"][-1])


def run_torch(x, epochs, hidden):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())

    def mlp(sizes):
        layers = []
        for a, b in zip(sizes[:-2], sizes[1:-1]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = mlp([784, *hidden, 2 * LATENT])
            self.dec = mlp([LATENT, *hidden[::-1], 784])

        def forward(self, xb):
            mean, log_var = self.enc(xb).chunk(2, dim=-1)
            log_var = log_var.clamp(-12.0, 8.0)
            z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
            logits = self.dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="none").sum(-1)
            kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)
            return (rec + kl).mean()

    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = torch.from_numpy(x.reshape(len(x), -1))
    times, loss = [], None
    for _ in range(epochs):
        t = time.perf_counter()
        for idx in torch.randperm(len(data))[: len(data) // BATCH * BATCH].split(BATCH):
            opt.zero_grad(set_to_none=True)
            loss = model(data[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t)
    return times, float(loss)


def child(args):
    x, source = load_data(args.n)
    if args.child == "torch":
        times, loss = run_torch(x, args.epochs, args.hidden)
    else:
        times, loss = run_kvae(x, args.epochs, args.child, args.hidden)
    images = len(x) // BATCH * BATCH  # both sides drop the last partial batch
    rates = [images / t for t in times[1:]]  # drop the warm-up epoch
    print(json.dumps({"name": args.child, "images_per_s": statistics.median(rates),
                      "epochs": rates, "final_loss": loss, "source": source}))


def _run_child(name, args):
    cmd = [sys.executable, __file__, "--child", name, "--epochs", str(args.epochs), "--n", str(args.n),
           "--hidden", ",".join(map(str, args.hidden))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run, the first is warm-up")
    parser.add_argument("--n", type=int, default=20480, help="training images")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all runs")
    parser.add_argument("--hidden", default=[400], type=lambda t: [int(u) for u in t.split(",")],
                        help="hidden widths, e.g. 400 or 400,400 (default 400)")
    parser.add_argument("--out", default=None, help="append a results section to this markdown file")
    parser.add_argument("--runs", default=RUNS, type=lambda t: t.split(","),
                        help=f"which runs, in each round's order, torch first (default {','.join(RUNS)}; also "
                             "kvae-tuned)")
    parser.add_argument("--child", choices=list(LABELS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = [r for r in args.runs if r not in LABELS]
    if unknown or args.runs[:1] != ["torch"]:
        parser.error(f"--runs: {unknown[0]!r} is not one of {', '.join(LABELS)}" if unknown
                     else "--runs must start with torch (the ratios are to it)")
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is warm-up)")
    if args.n < BATCH:
        parser.error(f"--n must be >= the batch size {BATCH}")
    if args.child:
        return child(args)
    runs = args.runs
    rates = {name: [] for name in runs}
    for r in range(args.rounds):
        for name in runs:
            res = _run_child(name, args)
            rates[name].append(res["images_per_s"])
            print(f"round {r + 1}: {name:10s} {res['images_per_s']:8.0f} images/s "
                  f"(epochs {', '.join(f'{e:.0f}' for e in res['epochs'])}; final loss {res['final_loss']:.1f})",
                  flush=True)
    source = res["source"]
    lines = [
        f"MLP 784-{'-'.join(map(str, args.hidden))}-{LATENT}. Data: {source}, n={args.n}, batch {BATCH}; each run "
        f"{args.epochs} epochs, first dropped, median epoch; {args.rounds} interleaved rounds "
        f"(every round: {'; '.join(f'{n} ' + ', '.join(f'{v:.0f}' for v in rates[n]) for n in runs)}). Command: "
        f"`python bench/throughput.py --epochs {args.epochs} --n {args.n} --rounds {args.rounds} "
        f"--hidden {','.join(map(str, args.hidden))} --runs {','.join(runs)}`",
        "",
        "| run | images/s (median of rounds) | ratio to PyTorch (median of per-round ratios) |",
        "| --- | ---: | ---: |",
    ]
    for name in runs:
        ratio = statistics.median(a / b for a, b in zip(rates[name], rates["torch"]))
        lines.append(f"| {LABELS[name]} | {statistics.median(rates[name]):.0f} | {ratio:.2f} |")
    if {"kvae", "kvae-per-step"} <= set(runs):
        gain = [a / b for a, b in zip(rates["kvae"], rates["kvae-per-step"])]
        lines += ["", f"One XLA program per execution against one per step, per round: "
                      f"{', '.join(f'{g:.2f}' for g in gain)} (median {statistics.median(gain):.2f}x)."]
    text = "\n".join(lines)
    emit(text, args.out)


if __name__ == "__main__":
    main()
