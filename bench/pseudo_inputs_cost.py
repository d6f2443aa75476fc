"""Cost of a training epoch of the hvae_vamp recipe's model against the number
of its VampPrior's pseudo-inputs (every step encodes all K of them, besides
the batch) and the batch size, as `kvae train --recipe hvae_vamp` compiles
it: one model per (K, batch size) in this process, each trained one epoch in
turn on the same binarised MNIST train images (the order rotating each
round), after one untimed warm-up epoch each. Prints every round's seconds
and each variant's ratio to the first (the first K with the first batch
size), per round and its median:

    python bench/pseudo_inputs_cost.py --data-dir ../shared/data [--k 500 250 1000] [--batch-size 100 50]
        [--rounds 5] [--n 10000]

--batch-size defaults to the recipe's.
"""

import argparse
import dataclasses
import functools
import itertools
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[500, 250, 1000],
                        help="numbers of pseudo-inputs; the first is the reference of the ratios")
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="batch sizes (default the recipe's); the first is the reference of the ratios")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=10000)
    args = parser.parse_args()
    if len(set(args.k)) != len(args.k) or min(args.k) < 1:
        parser.error(f"--k: distinct numbers >= 1, got {args.k}")
    if args.batch_size and (len(set(args.batch_size)) != len(args.batch_size) or min(args.batch_size) < 1):
        parser.error(f"--batch-size: distinct numbers >= 1, got {args.batch_size}")

    from kvae import data, recipes

    ds = data.load("binarized_mnist", data_dir=args.data_dir)
    x = ds.train[0][:args.n]
    recipe = recipes.get("hvae_vamp")
    cfg = recipe.config(dataset="binarized_mnist", data_dir=args.data_dir)
    variants = list(itertools.product(args.k, args.batch_size or [cfg.batch_size]))
    name = {v: f"K={v[0]} batch {v[1]}" for v in variants}
    models = {}
    for k, batch in variants:
        prior = functools.partial(recipes._hierarchical_vamp, num_pseudo_inputs=k)
        model, optimizer = dataclasses.replace(recipe, prior=prior).build_model(cfg, ds)
        assert model.prior.num_components == k
        model.compile(optimizer=optimizer)  # as kvae.runs: the default steps per execution
        model.fit(x, epochs=1, batch_size=batch, verbose=0)  # trace, compile, warm up
        models[k, batch] = model
    ratios = {v: [] for v in variants[1:]}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        seconds = {}
        for v in order:
            start = time.perf_counter()
            models[v].fit(x, epochs=1, batch_size=v[1], verbose=0)
            seconds[v] = time.perf_counter() - start
        for v in ratios:
            ratios[v].append(seconds[v] / seconds[variants[0]])
        print(f"round {r + 1}: " + ", ".join(f"{name[v]} {seconds[v]:.2f} s" for v in variants), flush=True)
    print(f"hvae_vamp, {len(x)} images an epoch; seconds per epoch / {name[variants[0]]}'s:")
    for v, values in ratios.items():
        print(f"  {name[v]}: {', '.join(f'{q:.3f}' for q in values)}; median {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
