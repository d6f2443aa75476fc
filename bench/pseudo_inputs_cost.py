"""Cost of a training epoch of the hvae_vamp recipe's model against the number
of its VampPrior's pseudo-inputs (every step encodes all K of them, besides
the batch), as `kvae train --recipe hvae_vamp` compiles it: one model per K
in this process, each trained one epoch in turn on the same binarised MNIST
train images (the order rotating each round), after one untimed warm-up
epoch each. Prints every round's seconds and each K's ratio to the first K
given, per round and its median:

    python bench/pseudo_inputs_cost.py --data-dir ../shared/data [--k 500 250 1000] [--rounds 5] [--n 10000]
"""

import argparse
import dataclasses
import functools
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[500, 250, 1000],
                        help="numbers of pseudo-inputs; the first is the reference of the ratios")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()
    if len(set(args.k)) != len(args.k) or min(args.k) < 1:
        parser.error(f"--k: distinct numbers >= 1, got {args.k}")

    from kvae import data, recipes

    ds = data.load("binarized_mnist", data_dir=args.data_dir)
    x = ds.train[0][:args.n]
    recipe = recipes.get("hvae_vamp")
    cfg = recipe.config(dataset="binarized_mnist", data_dir=args.data_dir)
    models = {}
    for k in args.k:
        prior = functools.partial(recipes._hierarchical_vamp, num_pseudo_inputs=k)
        model, optimizer = dataclasses.replace(recipe, prior=prior).build_model(cfg, ds)
        assert model.prior.num_components == k
        model.compile(optimizer=optimizer)  # as kvae.runs: the default steps per execution
        model.fit(x, epochs=1, batch_size=cfg.batch_size, verbose=0)  # trace, compile, warm up
        models[k] = model
    ratios = {k: [] for k in args.k[1:]}
    for r in range(args.rounds):
        order = args.k[r % len(args.k):] + args.k[:r % len(args.k)]
        seconds = {}
        for k in order:
            start = time.perf_counter()
            models[k].fit(x, epochs=1, batch_size=cfg.batch_size, verbose=0)
            seconds[k] = time.perf_counter() - start
        for k in ratios:
            ratios[k].append(seconds[k] / seconds[args.k[0]])
        print(f"round {r + 1}: " + ", ".join(f"K={k} {seconds[k]:.2f} s" for k in args.k), flush=True)
    steps = -(-len(x) // cfg.batch_size)
    print(f"hvae_vamp, {len(x)} images ({steps} steps) an epoch; seconds per epoch / K={args.k[0]}'s:")
    for k, values in ratios.items():
        print(f"  K={k}: {', '.join(f'{v:.3f}' for v in values)}; median {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
