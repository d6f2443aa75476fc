"""Test log-likelihood of kvae's models beside PyTorch references of the same
architecture, trained for the same epochs on the same data.

Data: Fashion-MNIST (offline, via kvae.data), statically binarised (each pixel
drawn once from Bernoulli(intensity), seed 0), all 60,000 training images; the
test images binarised the same way. Models (latent 40, Adam 1e-3, batch 100):

    vae        MLP 784-300-300-40 (ReLU), ELBO with one sample
    iwae5      the same network, IWAE bound with k = 5
    iwae50     the same network, IWAE bound with k = 50
    vamp       the same network, ELBO, VampPrior with 500 pseudo-inputs
    conv       kvae's default conv body (2 stride-2 3x3 convs 32/64, dense 256), ELBO

Both sides estimate log p(x) by importance sampling with k samples from q(z|x)
(default k = 1000) in chunks of 100 with a log-sum-exp. Each run is its own
process; the per-run JSON lines go to --log as they finish (a crash loses one
run, not the table). Initialisation differs (Keras Glorot-uniform against
PyTorch's Kaiming-uniform) and so do the data order and noise draws.

    python bench/loglik.py [--epochs 5] [--k 1000] [--models vae,iwae5,...] [--out bench/RESULTS.md]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from report import emit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LATENT, HIDDEN, BATCH, LR, PSEUDO = 40, (300, 300), 100, 1e-3, 500
MODELS = {  # name: (network, objective, k for training, prior)
    "vae": ("mlp", "elbo", 1, "standard_normal"),
    "iwae5": ("mlp", "iwae", 5, "standard_normal"),
    "iwae50": ("mlp", "iwae", 50, "standard_normal"),
    "vamp": ("mlp", "elbo", 1, "vamp"),
    "conv": ("conv", "elbo", 1, "standard_normal"),
}


def prepare(path):
    """Static binarisation of Fashion-MNIST, written once to an .npz for every child."""
    import kvae

    ds = kvae.data.load("fashion_mnist")
    train = np.concatenate([ds.train[0], ds.validation[0]])
    np.savez_compressed(path, train=kvae.data.binarize(train, "static", seed=0).astype(np.uint8),
                        test=kvae.data.binarize(ds.test[0], "static", seed=1).astype(np.uint8))
    return ds.source


# --------------------------------------------------------------------- kvae
def run_kvae(name, train, test, epochs, k_eval):
    import keras
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)  # as `kvae train` does
    import kvae
    from kvae import evaluate

    network, objective, k, prior = MODELS[name]
    keras.utils.set_random_seed(0)
    if network == "mlp":
        enc, dec = kvae.networks.mlp(HIDDEN), kvae.networks.mlp(HIDDEN[::-1])
    else:
        enc = dec = kvae.networks.conv()
    if prior == "vamp":
        prior = kvae.priors.VampPrior(LATENT, (28, 28, 1), num_pseudo_inputs=PSEUDO)
    model = kvae.VAE((28, 28, 1), LATENT, encoder=enc, decoder=dec, prior=prior,
                     objective=objective, num_samples=k)
    model.compile(optimizer=keras.optimizers.Adam(LR), steps_per_execution=32)
    data = kvae.data.pipeline(train, batch_size=BATCH, seed=0)
    start = time.perf_counter()
    history = model.fit(data, epochs=epochs, verbose=0)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ll = evaluate.log_likelihood(model, test, k=k_eval, chunk=100, batch_size=250)
    elbo = -evaluate.summary(model, test, k=0)["negative_elbo"]
    return dict(train_s=train_s, eval_s=time.perf_counter() - start, log_likelihood=float(ll.mean()),
                elbo=elbo, final_train_loss=float(history.history["loss"][-1]))


# -------------------------------------------------------------------- torch
def run_torch(name, train, test, epochs, k_eval):
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    network, objective, k, prior = MODELS[name]
    if network == "mlp":
        encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, HIDDEN[0]), nn.ReLU(),
                                nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], 2 * LATENT))
        decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN[1]), nn.ReLU(), nn.Linear(HIDDEN[1], HIDDEN[0]),
                                nn.ReLU(), nn.Linear(HIDDEN[0], 784), nn.Unflatten(1, (1, 28, 28)))
    else:  # the mirror of kvae.networks.Conv() in NCHW
        encoder = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(),
                                nn.Flatten(), nn.Linear(7 * 7 * 64, 256), nn.ReLU(), nn.Linear(256, 2 * LATENT))
        decoder = nn.Sequential(nn.Linear(LATENT, 256), nn.ReLU(), nn.Linear(256, 7 * 7 * 64), nn.ReLU(),
                                nn.Unflatten(1, (64, 7, 7)),
                                nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn.ReLU(),
                                nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn.ReLU(),
                                nn.Conv2d(32, 1, 3, 1, 1))
    modules = nn.ModuleList([encoder, decoder])
    pseudo = nn.Parameter(0.5 * torch.randn(PSEUDO, 1, 28, 28)) if prior == "vamp" else None
    params = list(modules.parameters()) + ([pseudo] if pseudo is not None else [])
    log2pi = math.log(2 * math.pi)

    def gaussian_log_prob(z, mean, log_var):  # diagonal Gaussian, summed over the last axis
        return -0.5 * (log2pi + log_var + (z - mean) ** 2 / log_var.exp()).sum(-1)

    def encode(x):
        mean, log_var = encoder(x).chunk(2, dim=-1)
        return mean, log_var.clamp(-12.0, 8.0)

    def log_prior(z):  # z [k, B, d]
        if pseudo is None:
            return gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        m, lv = encode(torch.sigmoid(pseudo))  # [K, d]
        lp = gaussian_log_prob(z.unsqueeze(-2), m, lv)  # [k, B, K]
        return torch.logsumexp(lp, -1) - math.log(PSEUDO)

    def log_weights(x, n):  # log p(x|z) + log p(z) - log q(z|x), [n, B]
        mean, log_var = encode(x)
        z = mean + (0.5 * log_var).exp() * torch.randn((n,) + mean.shape)
        logits = decoder(z.reshape(-1, LATENT)).reshape((n, len(x), -1))
        target = x.reshape(1, len(x), -1).expand_as(logits)
        log_px = -nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        return log_px, log_prior(z), gaussian_log_prob(z, mean, log_var), mean, log_var

    def loss_fn(x):
        log_px, log_pz, log_qz, mean, log_var = log_weights(x, k)
        if objective == "iwae":
            return -(torch.logsumexp(log_px + log_pz - log_qz, 0) - math.log(k)).mean()
        if pseudo is None:  # analytic KL, as kvae uses where TFP has it
            kl = 0.5 * (mean ** 2 + log_var.exp() - 1.0 - log_var).sum(-1)
            return -(log_px.mean(0) - kl).mean()
        return -(log_px + log_pz - log_qz).mean()

    x_train = torch.from_numpy(train.transpose(0, 3, 1, 2).astype(np.float32))
    opt = torch.optim.Adam(params, lr=LR)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_train)).split(BATCH):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(x_train[idx])
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    x_test = torch.from_numpy(test.transpose(0, 3, 1, 2).astype(np.float32))
    ll, elbo = [], []
    with torch.no_grad():
        for xb in x_test.split(250):
            total = None
            for first in range(0, k_eval, 100):
                log_px, log_pz, log_qz, _, _ = log_weights(xb, min(100, k_eval - first))
                part = torch.logsumexp(log_px + log_pz - log_qz, 0)
                total = part if total is None else torch.logaddexp(total, part)
            ll.append(total - math.log(k_eval))
            log_px, log_pz, log_qz, _, _ = log_weights(xb, 1)
            elbo.append((log_px + log_pz - log_qz)[0])
    return dict(train_s=train_s, eval_s=time.perf_counter() - start, log_likelihood=float(torch.cat(ll).mean()),
                elbo=float(torch.cat(elbo).mean()), final_train_loss=float(loss))


# ------------------------------------------------------------------- driver
def child(args):
    data = np.load(args.data)
    n_test = args.conv_test if MODELS[args.model][0] == "conv" else len(data["test"])
    train, test = data["train"].astype(np.float32), data["test"][:n_test].astype(np.float32)
    run = run_torch if args.side == "torch" else run_kvae
    result = run(args.model, train, test, args.epochs, args.k)
    print(json.dumps(dict(model=args.model, side=args.side, epochs=args.epochs, k=args.k,
                          test_images=len(test), **result)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the test log-likelihood")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--conv-test", type=int, default=2000, help="test images for the (slow) conv model")
    parser.add_argument("--data", default="runs/bench_loglik/data.npz")
    parser.add_argument("--log", default="runs/bench_loglik/runs.jsonl")
    parser.add_argument("--out", default=None, help="append the table to this markdown file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown or args.epochs < 1 or args.k < 1:
        parser.error(f"unknown models {unknown}" if unknown else "--epochs and --k must be >= 1")
    os.makedirs(os.path.dirname(args.log) or ".", exist_ok=True)
    source = prepare(args.data)
    rows = []
    for name in models:
        for side in ("kvae", "torch"):
            cmd = [sys.executable, __file__, "--child", "--model", name, "--side", side, "--data", args.data,
                   "--epochs", str(args.epochs), "--k", str(args.k), "--conv-test", str(args.conv_test)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{name}/{side} failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name:7s} {side:6s} log p(x) {row['log_likelihood']:9.2f}  ELBO {row['elbo']:9.2f}  "
                  f"train {row['train_s']:7.1f} s  eval {row['eval_s']:6.1f} s", flush=True)
    lines = [
        f"Data: {source}, statically binarised; 60,000 training images; {args.epochs} epochs, batch {BATCH}, "
        f"Adam {LR:g}, latent {LATENT}. Test log p(x) with k={args.k} importance samples (nats, mean over "
        f"the test images shown). Command: `python bench/loglik.py --epochs {args.epochs} --k {args.k}`",
        "",
        "| model | test images | kvae log p(x) | PyTorch log p(x) | kvae ELBO | PyTorch ELBO "
        "| kvae train s | PyTorch train s | time ratio kvae/PyTorch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in models:
        a, b = [next(r for r in rows if r["model"] == name and r["side"] == s) for s in ("kvae", "torch")]
        lines.append(f"| {name} | {a['test_images']} | {a['log_likelihood']:.2f} | {b['log_likelihood']:.2f} | "
                     f"{a['elbo']:.2f} | {b['elbo']:.2f} | {a['train_s']:.0f} | {b['train_s']:.0f} | "
                     f"{a['train_s'] / b['train_s']:.2f} |")
    text = "\n".join(lines)
    emit(text, args.out)


if __name__ == "__main__":
    main()
