"""Time of the final evaluation (importance-sampled log p(x), k=5000) of a
trained run, projected to the 10,000 images a recipe is evaluated on.

Evaluates the run's best model on the first --n images of the published
valid split (binarised MNIST, ../shared/data) and prints the seconds, the
projection to 10,000 images, and the mean log p(x) (so two code versions run
back to back can be compared for time and for the same numbers):

    python bench/eval_speed.py --run RUN_DIR --data-dir ../shared/data [--n 256] [--k 5000] [--save FILE.npy]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--k", type=int, default=5000)
    parser.add_argument("--save", help="write the per-image log p(x) here (.npy)")
    args = parser.parse_args()

    import numpy as np

    import kvae
    from kvae import data, evaluate

    x = data.load("binarized_mnist", data_dir=args.data_dir).test[0][:args.n]
    model = kvae.load_model(args.run, "best")
    # trace, compile and warm up outside the clock, at the timed batch shape (256 images a call)
    evaluate.log_likelihood(model, x[:256], k=100)
    start = time.perf_counter()
    ll = evaluate.log_likelihood(model, x, k=args.k)
    seconds = time.perf_counter() - start
    if args.save:
        np.save(args.save, ll)
    print(f"{args.run}: {len(x)} images, k={args.k}: {seconds:.1f} s, projected to "
          f"10,000 images {seconds * 10000 / len(x) / 60:.1f} min; mean log p(x) {ll.mean():.4f}")


if __name__ == "__main__":
    main()
