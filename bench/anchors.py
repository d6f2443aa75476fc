"""kvae's recipes for the published statically binarised MNIST anchors.

Published test log-likelihoods (nats, k=5000 importance samples; DESIGN.md):
plain VAE 88.6 to 89.9, IWAE (k=50) 86.8 to 87.1, VampPrior 85.6. The recipes
follow the setup of Tomczak and Welling (2018), the VampPrior paper, with
kvae's own pieces (ReLU MLPs where the paper uses gated layers):

    network     MLP 784-300-300-40 encoder, 40-300-300-784 decoder (ReLU), Bernoulli pixels
    optimiser   Adam, learning rate 5e-4, batch 100
    schedule    up to 2000 epochs, early stopping on the validation ELBO (patience 50,
                best weights restored); linear KL warm-up over 100 epochs (ELBO models)
    vae         ELBO, one sample, N(0, I) prior
    iwae50      IWAE bound with k = 50 (no warm-up: beta does not enter the bound)
    vamp        ELBO, VampPrior with 500 pseudo-inputs
    evaluation  importance-sampled log p(x), k = 5000, on the 10,000 test images

Data: `binarized_mnist` (Larochelle's 50k/10k/10k split), found offline as
kvae.data finds it (`--data-dir DIR` with DIR/binarized_mnist/*.amat, or TFDS
prepared data). It is not on this project's machines (no network), so these
recipes have NOT been run to the anchors here; the test suite runs this script
for two epochs on a tiny stand-in of the same files. Training is resumable:
Keras's BackupAndRestore keeps the state in --out-dir, so a killed run continues
where it stopped when started again with the same arguments.

    python bench/anchors.py --data-dir DIR [--models vae,iwae50,vamp] [--epochs 2000] [--k 5000]
"""

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

LATENT, HIDDEN, BATCH, LR, WARMUP, PATIENCE, PSEUDO = 40, (300, 300), 100, 5e-4, 100, 50, 500
RECIPES = {
    "vae": dict(objective="elbo", num_samples=1, prior="standard_normal", warmup=WARMUP),
    "iwae50": dict(objective="iwae", num_samples=50, prior="standard_normal", warmup=0),
    "vamp": dict(objective="elbo", num_samples=1, prior="vamp", warmup=WARMUP),
}
ANCHORS = {"vae": "88.6 to 89.9", "iwae50": "86.8 to 87.1", "vamp": "85.6"}


def build(name):
    """The recipe's model, compiled, and its training callbacks."""
    import keras

    import kvae

    recipe = RECIPES[name]
    prior = (kvae.priors.VampPrior(LATENT, (28, 28, 1), num_pseudo_inputs=PSEUDO)
             if recipe["prior"] == "vamp" else recipe["prior"])
    model = kvae.VAE((28, 28, 1), LATENT, encoder=kvae.networks.mlp(HIDDEN),
                     decoder=kvae.networks.mlp(HIDDEN[::-1]), prior=prior,
                     objective=recipe["objective"], num_samples=recipe["num_samples"])
    model.compile(optimizer=keras.optimizers.Adam(LR))
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_elbo", mode="max", patience=PATIENCE,
                                               restore_best_weights=True)]
    if recipe["warmup"]:
        callbacks.append(kvae.callbacks.KLWarmup(recipe["warmup"]))
    return model, callbacks


def run(name, ds, epochs, k, out_dir):
    import keras

    from kvae import evaluate

    keras.utils.set_random_seed(0)
    model, callbacks = build(name)
    callbacks.append(keras.callbacks.BackupAndRestore(str(out_dir / f"{name}_backup")))
    start = time.perf_counter()
    history = model.fit(ds.train[0], validation_data=(ds.validation[0],), epochs=epochs, batch_size=BATCH,
                        callbacks=callbacks, verbose=2)
    train_s = time.perf_counter() - start
    model.save(out_dir / f"{name}.keras")
    ll = evaluate.log_likelihood(model, ds.test[0], k=k)
    summary = evaluate.summary(model, ds.test[0], k=0)
    return dict(model=name, epochs_run=len(history.history["loss"]), k=k, train_s=train_s,
                test_log_likelihood=float(ll.mean()), test_elbo=-summary["negative_elbo"],
                active_units=summary["active_units"], kl_weight_final=_kl_weight(model),
                anchor_nll=ANCHORS[name])


def _kl_weight(model):
    weight = getattr(model.objective, "kl_weight", None)  # IWAE has no KL weight
    return None if weight is None else float(weight.numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="holds binarized_mnist/ (else $KVAE_DATA_DIR, TFDS)")
    parser.add_argument("--models", default=",".join(RECIPES))
    parser.add_argument("--epochs", type=int, default=2000)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--out-dir", default="runs/anchors")
    args = parser.parse_args()
    models = args.models.split(",")
    if any(m not in RECIPES for m in models):
        parser.error(f"--models: choose from {', '.join(RECIPES)}")
    if args.epochs < 1 or args.k < 1:
        parser.error("--epochs and --k must be >= 1")
    import kvae

    try:
        ds = kvae.data.load("binarized_mnist", data_dir=args.data_dir)
    except (kvae.data.DataError, kvae.data.DataNotFoundError) as err:
        parser.exit(2, f"anchors: {err}\n")
    print(ds.summary(), flush=True)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in models:
        row = run(name, ds, args.epochs, args.k, out_dir)
        with open(out_dir / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        nll = -row["test_log_likelihood"]
        print(f"{name:7s} test NLL {nll:.2f} nats (k={args.k}; published {ANCHORS[name]}), "
              f"{row['epochs_run']} epochs, {row['train_s'] / 60:.1f} min"
              + ("" if math.isfinite(nll) else "  NOT FINITE"), flush=True)


if __name__ == "__main__":
    main()
