"""How large an optimizer's steps are on a recipe's model (default hvae_vamp):
Adam at 5e-4 against Adamax at 1e-3 and 2e-3, without weight decay (the
gradient-driven step only). Each starts from the same weights (a run's
best.keras with --run, else the recipe's initialisation after one step) with fresh optimizer
state and the KL weight at 1, trains `--steps` batches of 100 on the same
binarised MNIST train images, and records the root mean square of each
step's change over all trainable weights for the last `--window` steps (the
moving averages of both optimizers have settled by then: Adamax's maximum
decays by 0.999 a step). Rounds use different shuffles. Prints every
round's RMS step per optimizer, its ratio to Adam's, and the medians:

    python bench/optimizer_steps.py --data-dir ../shared/data [--run RUN/hvae_vamp] [--rounds 3]
"""

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OPTIMIZERS = (("adam 5e-4", "Adam", 5e-4), ("adamax 1e-3", "Adamax", 1e-3), ("adamax 2e-3", "Adamax", 2e-3))


def rms_steps(model, x, steps, window, seed):
    """The RMS change of all trainable weights in one step, over the last `window` of `steps` steps."""
    import keras
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(x))
    batches = [x[order[(i * 100) % len(x):][:100]] for i in range(steps)]
    out = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch >= steps - window:
                self.before = [v.numpy() for v in model.trainable_variables]

        def on_train_batch_end(self, batch, logs=None):
            if batch >= steps - window:
                sq = sum(float(np.sum((v.numpy() - b) ** 2)) for v, b in zip(model.trainable_variables, self.before))
                out.append(sq)

    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    model.fit(np.concatenate(batches), batch_size=100, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    return (sum(out) / len(out) / count) ** 0.5


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--recipe", default="hvae_vamp")
    parser.add_argument("--run", default=None, help="a run directory whose best.keras gives the starting weights")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--window", type=int, default=200)
    args = parser.parse_args()
    if not 1 <= args.window <= args.steps:
        parser.error(f"--window must be in [1, --steps], got {args.window} with --steps {args.steps}")

    import keras

    import kvae
    from kvae import data, recipes

    ds = data.load("binarized_mnist", data_dir=args.data_dir)
    x = ds.train[0]
    recipe = recipes.get(args.recipe)
    cfg = recipe.config(dataset="binarized_mnist", data_dir=args.data_dir)
    start = kvae.load_model(args.run, "best").get_weights() if args.run else None
    sizes = {name: [] for name, _, _ in OPTIMIZERS}
    for r in range(args.rounds):
        for name, kind, lr in OPTIMIZERS:
            model, _ = recipe.build_model(cfg, ds)
            model.compile(optimizer=getattr(keras.optimizers, kind)(learning_rate=lr), steps_per_execution=1)
            model.fit(x[:100], batch_size=100, epochs=1, verbose=0)  # builds the weights and optimizer
            if start is not None:
                model.set_weights(start)
            for v in model.optimizer.variables:  # fresh state: the build step's moments and count go
                if v.name != "learning_rate":
                    v.assign(keras.ops.zeros_like(v))
            sizes[name].append(rms_steps(model, x, args.steps, args.window, seed=r))
        print(f"round {r + 1}: " + ", ".join(f"{n} {sizes[n][-1]:.3e}" for n, _, _ in OPTIMIZERS) + "; / Adam's: "
              + ", ".join(f"{n} {sizes[n][-1] / sizes['adam 5e-4'][-1]:.3f}" for n, _, _ in OPTIMIZERS[1:]),
              flush=True)
    print(f"{args.recipe}, {args.steps} steps from {'the run ' + args.run if args.run else 'the initialisation'}, "
          f"RMS step over the last {args.window}: medians " +
          ", ".join(f"{n} {statistics.median(sizes[n]):.3e}" for n, _, _ in OPTIMIZERS) + "; ratio to Adam's "
          + ", ".join(f"{n} {statistics.median(a / b for a, b in zip(sizes[n], sizes['adam 5e-4'])):.3f}"
                      for n, _, _ in OPTIMIZERS[1:]))


if __name__ == "__main__":
    main()
