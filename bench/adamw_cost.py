"""Cost of an epoch with kvae.optimizers.AdamW (weight decay on the decoder's
kernels) against plain Adam, on a recipe's model (default vamp), as `kvae
train --recipe` compiles it: both models trained in this process, one epoch
each in turn on the same 10,000 binarised MNIST train images, after one
untimed warm-up epoch each. Prints every round's seconds and the ratio
AdamW / Adam per round and its median:

    python bench/adamw_cost.py --data-dir ../shared/data [--recipe vamp] [--rounds 5] [--n 10000]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--recipe", default="vamp")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()

    import keras

    from kvae import data, recipes
    from kvae.optimizers import AdamW

    ds = data.load("binarized_mnist", data_dir=args.data_dir)
    x = ds.train[0][:args.n]
    recipe = recipes.get(args.recipe)
    cfg = recipe.config(dataset="binarized_mnist", data_dir=args.data_dir)
    models = {}
    for name in ("adam", "adamw"):
        model, _ = recipe.build_model(cfg, ds)
        opt = (AdamW(learning_rate=cfg.learning_rate, weight_decay=0.1) if name == "adamw"
               else keras.optimizers.Adam(learning_rate=cfg.learning_rate))
        model.compile(optimizer=opt)  # as kvae.runs: the default steps per execution
        model.fit(x, epochs=1, batch_size=cfg.batch_size, verbose=0)  # trace, compile, warm up
        models[name] = model
    ratios = []
    for r in range(args.rounds):
        seconds = {}
        for name, model in (models.items() if r % 2 == 0 else reversed(models.items())):
            start = time.perf_counter()
            model.fit(x, epochs=1, batch_size=cfg.batch_size, verbose=0)
            seconds[name] = time.perf_counter() - start
        ratios.append(seconds["adamw"] / seconds["adam"])
        print(f"round {r + 1}: Adam {seconds['adam']:.2f} s, AdamW {seconds['adamw']:.2f} s, "
              f"AdamW / Adam {ratios[-1]:.3f}", flush=True)
    print(f"{args.recipe}, {len(x)} images an epoch: AdamW / Adam per round "
          f"{', '.join(f'{v:.3f}' for v in ratios)}; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
