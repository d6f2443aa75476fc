"""Run kvae's recipes (kvae.recipes) on statically binarised MNIST and record
what they reach: the validation NLL (k = 5000, the published valid split,
which also selects the model), training and evaluation minutes, epochs,
peak memory, and the commit. Each recipe is exactly `kvae train --recipe NAME`;
a killed run continues where it stopped when this script is started again
with the same arguments (it resumes the run directory).

    python bench/recipes.py --data-dir ../shared/data [--recipes vae,vamp] [--time-limit MINUTES] [--seed N]
        [--out runs/recipes] [--record]

Appends one JSON line per finished recipe to OUT/results.jsonl and prints the
row for bench/RESULTS.md; with --record it also writes the figure into
kvae/recipes_measured.json, which `kvae recipes` shows. Run it alone on the machine: the time limit is wall
time, and anything else running costs epochs.
"""

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak_rss_mb():
    """This process's VmHWM (ru_maxrss would carry a parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run(name, args, out):
    from kvae import rundir, recipes, runs

    run_dir = out / name
    # the recipe's own limit (vae_10min), else --time-limit (the budget: 150 minutes)
    limit = args.time_limit if args.time_limit is not None else (
        recipes.get(name).settings.get("time_limit") or 150.0)
    given = dict(dataset="binarized_mnist", data_dir=args.data_dir, time_limit=limit, eval_k=args.k)
    if args.epochs:
        given["epochs"] = args.epochs
    if args.seed is not None:  # another seed of the same recipe: its run-to-run spread
        given["seed"] = args.seed
    start = time.perf_counter()
    if rundir.is_run(run_dir) and not (run_dir / "summary.json").is_file():
        print(f"{name}: resuming {run_dir}", flush=True)
        summary = runs.resume(run_dir, {"time_limit": limit}, verbose=2)
    else:
        summary = runs.train(recipes.get(name).config(**given), run_dir, force=args.force, verbose=2)
    total = time.perf_counter() - start
    state = json.loads((run_dir / "state.json").read_text())
    return dict(recipe=name, valid_nll=-summary["test_log_likelihood"], k=summary["test_k"],
                valid_elbo=summary["test_elbo"], active_units=summary["test_active_units"],
                train_minutes=summary["train_seconds"] / 60, eval_minutes=summary["eval_seconds"] / 60,
                minutes_in_this_call=total / 60,
                epochs=summary["epochs_done"], best_epoch=state.get("best_epoch"), peak_rss_mb=_peak_rss_mb(),
                time_limit=limit, seed=json.loads((run_dir / "config.json").read_text())["train"]["seed"],
                commit=_commit(), goal=recipes.get(name).goal_text())


def record(row):
    """Write a finished recipe's figure into kvae's measured-figures file (atomically)."""
    from kvae import files, recipes

    table = json.loads(recipes.MEASURED_FILE.read_text()) if recipes.MEASURED_FILE.is_file() else {"recipes": {}}
    table["recipes"][row["recipe"]] = dict(
        nll=round(row["valid_nll"], 2), minutes=round(row["train_minutes"], 1), epochs=row["epochs"],
        where=f"best epoch {row['best_epoch']}; valid split, k={row['k']}, which also selected; seed {row['seed']}; "
              f"commit {row['commit']}")
    files.write_json(recipes.MEASURED_FILE, table)


def main():
    from kvae import recipes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", required=True, help="holds binarized_mnist/ (train and valid .amat)")
    parser.add_argument("--recipes", default="vae_10min,vae,vamp,vamp_gaussian,iwae50,iwae50_gaussian,iaf,hvae_vamp")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="minutes of training per recipe (default: the recipe's own, else 150)")
    parser.add_argument("--epochs", type=int, default=0, help="cap on epochs (0: the recipe's)")
    parser.add_argument("--seed", type=int, default=None, help="the runs' seed (default: the recipe's, 0)")
    parser.add_argument("--k", type=int, default=5000, help="importance samples of the final evaluation")
    parser.add_argument("--out", default="runs/recipes")
    parser.add_argument("--force", action="store_true", help="replace finished runs in --out")
    parser.add_argument("--record", action="store_true", help="write each finished recipe's figure into "
                        "kvae/recipes_measured.json, which `kvae recipes` shows (not for pilots)")
    args = parser.parse_args()
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in recipes.RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {unknown[0]!r}; choose from {', '.join(recipes.names())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        row = run(name, args, out)
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if args.record:
            record(row)
        print(f"| {name} | {row['valid_nll']:.2f} | {row['goal']} | {row['train_minutes']:.1f} | {row['eval_minutes']:.1f} | "
              f"{row['epochs']} (best {row['best_epoch']}) | {row['peak_rss_mb']:.0f} | {row['commit']} |", flush=True)


if __name__ == "__main__":
    main()
