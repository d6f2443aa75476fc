"""`kvae train | recipes | evaluate | sample | reconstruct | export | info` and the latent
tools `interpolate | traverse | latent-map | anomalies | inpaint | denoise`.

Only wiring: arguments in, calls into kvae.runs, kvae.rundir, kvae.latent
and kvae.plots, one-line errors out (exit code 2 for bad input, no traceback).
Over 350 lines for one reason: the argument table of twelve commands.
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

import kvae

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130  # FAILED: NaN loss, or an export that failed its check


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(text):
    """An integer (range checks happen where the value is used, with their own message)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _parser():
    from kvae import __version__
    from kvae.config import TrainConfig

    D = TrainConfig()  # the defaults live there, so explicit flags are known (None = not given)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and converter messages (also KVAE_VERBOSE=1)")
    p = _Parser(prog="kvae", description="Variational autoencoders for Keras 3.", parents=[common])
    p.add_argument("--version", action="version", version=f"kvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, **kwargs):  # every command takes --verbose
        return sub.add_parser(name, parents=[common], **kwargs)

    t = add("train", help="train a VAE into a run directory")
    t.add_argument("--recipe", help="train a documented recipe (model, optimiser, schedule, final k=5000 "
                                    "evaluation): see `kvae recipes`; then only --dataset, --data-dir, --epochs, "
                                    "--time-limit, --seed, --eval-k and the runtime flags may be given")
    t.add_argument("--dataset", help=f"fashion_mnist, mnist, binarized_mnist, digits, a .npz file or an image "
                                     f"folder (default {D.dataset})")
    t.add_argument("--data-dir", help="look here first for datasets (also $KVAE_DATA_DIR)")
    t.add_argument("--download", action="store_true", default=None,
                   help="allow downloading when not found offline")
    t.add_argument("--stream", action="store_true", default=None,
                   help="read the training split from disk a batch at a time (data larger than memory; "
                        "always so for a .npy file and a folder written by `kvae data prepare`); with a "
                        "dataset name, its prepared TFDS data (--data-dir, $TFDS_DATA_DIR, ~/tensorflow_datasets)")
    t.add_argument("--out", help="run directory to create")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue this run from its last finished epoch (only --epochs, --time-limit, --data-dir and "
                        "--download may change)")
    t.add_argument("--force", action="store_true",
                   help="replace an existing run in --out (deleted only after the new run's data and "
                        "model have been checked)")
    t.add_argument("--epochs", type=_int, help=f"epochs in total (default {D.epochs})")
    t.add_argument("--network", choices=["mlp", "conv"], help=f"(default {D.network})")
    t.add_argument("--latent-dim", type=_int, help=f"(default {D.latent_dim})")
    t.add_argument("--likelihood", help="bernoulli (default), continuous_bernoulli, gaussian, gaussian_learned")
    t.add_argument("--posterior", help="diagonal (default), full_covariance, iaf, hierarchical (with --prior "
                                       "hierarchical_vamp) or power_spherical (with --prior spherical_uniform)")
    t.add_argument("--prior", help="standard_normal (default), mixture, vamp, vamp_base (the VampPrior with "
                                   "--posterior iaf), hierarchical_vamp or spherical_uniform")
    t.add_argument("--beta", type=float, help=f"(default {D.beta})")
    t.add_argument("--objective", help="elbo (default), iwae, or dreg (the iwae bound with doubly "
                                       "reparameterised gradients)")
    t.add_argument("--num-samples", type=_int, help=f"samples of z per example (k for iwae; default {D.num_samples})")
    t.add_argument("--free-bits", type=float, help="per-dimension KL floor in nats (default 0: off)")
    t.add_argument("--kl-warmup", type=_int, help="epochs of KL warm-up (default 0: off)")
    t.add_argument("--kl-schedule", help="linear (default) or cyclical (cycle length --kl-warmup)")
    t.add_argument("--capacity-gamma", type=float,
                   help="> 0: loss = reconstruction + gamma |KL - C| (Burgess et al. 2018; default 0)")
    t.add_argument("--max-capacity", type=float,
                   help=f"C rises linearly to this (nats) over --kl-warmup epochs, or half the epochs "
                        f"(default {D.max_capacity})")
    t.add_argument("--conditional", action="store_true", default=None, help="condition on the dataset's labels")
    t.add_argument("--binarize", help="none, threshold, static or dynamic (default: dynamic for Bernoulli likelihoods)")
    t.add_argument("--perturb", type=float, help="share of training pixels replaced by noise, for the background "
                   "model of `kvae anomalies --score likelihood_ratio` (default 0: off; Ren et al. use 0.1-0.3)")
    t.add_argument("--batch-size", type=_int, help=f"(default {D.batch_size})")
    t.add_argument("--lr", type=float, dest="learning_rate", help=f"Adam's learning rate (default {D.learning_rate})")
    t.add_argument("--mixed-precision", help="none (default), mixed_float16 (GPU) or mixed_bfloat16")
    t.add_argument("--strategy", help="none (default), mirrored or multiworker (reads TF_CONFIG)")
    t.add_argument("--steps-per-execution", type=_int, help=f"(default {D.steps_per_execution})")
    t.add_argument("--seed", type=_int, help=f"(default {D.seed})")
    t.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="no new epoch after this many minutes of training, summed over --resume (default 0: no limit)")
    t.add_argument("--lr-decay", help="none (default) or cosine: the learning rate falls to 0 by the end "
                   "of the run, over --epochs or over --time-limit if that ends it first")
    t.add_argument("--eval-k", type=_int, help="importance samples of the final test log p(x) in summary.json "
                                               "(default 0: ELBO only; recipes 5000)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    add("recipes", help="the training recipes, their published anchors and kvae's measured figures")

    d = add("data", help="data tools: `kvae data prepare SRC --out DIR` writes TFRecord shards")
    d.add_argument("action", choices=["prepare"])
    d.add_argument("source", help="a .npy or uncompressed .npz file, or a folder of images")
    d.add_argument("--out", required=True, help="folder to create (must not exist)")
    d.add_argument("--seed", type=_int, default=0, help="seeds the validation and test splits, as `kvae train "
                   "--seed` would (default 0)")
    d.add_argument("--shard-mb", type=_int, default=64, help="megabytes per shard (default 64)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    sc = add("score", help="stream a dataset through a run's model: per-example scores to Parquet or .npy shards")
    sc.add_argument("run_dir")
    sc.add_argument("--data", required=True, help="a .npy or .npz file, an image folder, a folder written by "
                    "`kvae data prepare` (streamed), or a dataset name (its test split)")
    sc.add_argument("--out", required=True, help="FILE.parquet, or a folder to create for .npy shards")
    sc.add_argument("--score", default="elbo", help="comma-separated scores from kvae.anomaly that need no "
                    "reference: elbo (default), nll (importance sampled, --k), complexity, ...")
    sc.add_argument("--k", type=_int, default=100, help="importance samples for nll (default 100)")
    sc.add_argument("--batch-size", type=_int, default=1024)
    sc.add_argument("--quiet", action="store_true", help="no progress bar")

    e = add("evaluate", help="test-set metrics of a run")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--k", type=_int, default=100,
                   help="importance samples for log p(x) (0: ELBO only; 1 to 100000; a progress bar shows)")
    e.add_argument("--seed", type=_int, default=0)

    s = add("sample", help="a grid of samples from the prior")
    s.add_argument("run_dir")
    s.add_argument("--n", type=_int, default=64)
    s.add_argument("--seed", type=_int, default=0)
    s.add_argument("--label", type=_int, default=None, help="class to draw (conditional runs)")
    s.add_argument("--out", default="samples.png")

    r = add("reconstruct", help="test inputs next to their reconstructions")
    r.add_argument("run_dir")
    r.add_argument("--n", type=_int, default=16)
    r.add_argument("--out", default="reconstructions.png")

    x = add("export", help="export the decoder: SavedModel, TFLite, ONNX, each verified")
    x.add_argument("source", help="a run directory or a .keras file")
    x.add_argument("--format", default="savedmodel,tflite,onnx", help="comma-separated: savedmodel,tflite,onnx")
    x.add_argument("--tflite-variants",
                   help="comma-separated, from float32,float16,dynamic_int8,int8 (default: all four; "
                        "float32 for a continuous Bernoulli decoder)")
    x.add_argument("--out", required=True, help="directory to create")
    x.add_argument("--force", action="store_true", help="replace an existing --out")
    x.add_argument("--model-name", default="kvae", help="TF Serving model name (savedmodel/NAME/VERSION)")
    x.add_argument("--version", type=_int, default=1, dest="model_version")
    x.add_argument("--scorer", action="store_true", help="also export the anomaly scorer (x -> -ELBO at the "
                   "posterior mode, the 'elbo' score) to tflite and onnx; export/score.py runs it on a device")
    x.add_argument("--fpr", type=float, default=None, help="with --scorer and a run directory: a threshold at "
                   "this false-positive rate on the run's validation split, stored for the device runner")

    li = add("interpolate", help="decoded interpolations between pairs of test images")
    li.add_argument("run_dir")
    li.add_argument("--method", default="linear", help="linear or spherical")
    li.add_argument("--steps", type=_int, default=10)
    li.add_argument("--pairs", type=_int, default=4)
    li.add_argument("--out", default="interpolation.png")
    lt = add("traverse", help="vary each latent dimension around z = 0")
    lt.add_argument("run_dir")
    lt.add_argument("--dims", type=_int, nargs="*", default=None, help="latent indices (default all)")
    lt.add_argument("--out", default="traversal.png")
    lm = add("latent-map", help="decoded grid over the 2-D latent space (latent_dim = 2)")
    lm.add_argument("run_dir")
    lm.add_argument("--n", type=_int, default=15)
    lm.add_argument("--out", default="latent_map.png")
    la = add("anomalies", help="anomaly scores of test images (or --data): the most and least anomalous, "
                               "and a threshold calibrated on the validation split (--fpr)")
    la.add_argument("run_dir")
    la.add_argument("--score", default="complexity", help="complexity (default), nll, elbo, likelihood_ratio, "
                    "likelihood_regret or typicality: what each assumes and costs is in kvae.anomaly")
    la.add_argument("--k", type=_int, default=None,
                    help="importance samples of nll, complexity, likelihood_ratio, typicality (default 100)")
    la.add_argument("--background", help="the background model of likelihood_ratio: a run directory or "
                    ".keras file trained with --perturb")
    la.add_argument("--data", help="score these inputs instead of the run's test split: a .npy or .npz file, "
                    "a folder of images, or a dataset name")
    la.add_argument("--fpr", type=float, default=None, help="set a threshold at this false-positive rate on "
                    "the run's validation split and flag the inputs above it (e.g. 0.05)")
    la.add_argument("--n", type=_int, default=16)
    la.add_argument("--out", default="anomalies.png")
    lp = add("inpaint", help="fill the masked half of test images")
    lp.add_argument("run_dir")
    lp.add_argument("--n", type=_int, default=8)
    lp.add_argument("--missing", default="bottom", help="bottom (lower half) or random (half of the pixels)")
    lp.add_argument("--out", default="inpainting.png")
    ld = add("denoise", help="reconstruct test images with flipped or noisy pixels")
    ld.add_argument("run_dir")
    ld.add_argument("--n", type=_int, default=8)
    ld.add_argument("--noise", type=float, default=0.1, help="share of pixels replaced by noise")
    ld.add_argument("--out", default="denoising.png")

    i = add("info", help="what a run directory holds")
    i.add_argument("run_dir")
    return p


def _table(rows):
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def cmd_train(args):
    from kvae import runs
    from kvae.config import RunError, TrainConfig

    if args.resume and args.out:
        raise RunError("use either --resume RUN_DIR or --out RUN_DIR, not both")
    if not args.resume and not args.out:
        raise RunError("--out RUN_DIR is required (or --resume RUN_DIR)")
    given = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__
             if getattr(args, k, None) is not None}
    run_dir = Path(args.resume or args.out)
    verbose = 0 if args.quiet else 1
    if args.resume:
        if args.force:
            raise RunError("--force does not apply to --resume (nothing is replaced)")
        summary = runs.resume(run_dir, given, verbose=verbose)
    else:
        if given.get("recipe"):
            from kvae import recipes

            cfg = recipes.get(given["recipe"]).config(**given)
        else:
            cfg = TrainConfig(**given)
        summary = runs.train(cfg, run_dir, force=args.force, verbose=verbose)
    if summary.get("worker"):  # a non-chief worker of a multi-worker run: the chief wrote run_dir
        print(f"\nkvae: this worker trained {summary['epochs_done']} epochs in {summary['train_seconds']:.0f} s "
              f"in step with the chief, which wrote {run_dir}; final weights sha256 {summary['weights_sha256']}")
        return 0
    images = sorted((run_dir / "images").glob("samples_epoch_*.png"))
    print(f"\nkvae: trained {summary['epochs_done']} epochs in {summary['train_seconds']:.0f} s")
    ll = ([(f"test log p(x) (k={summary['test_k']})", f"{summary['test_log_likelihood']:.2f}")]
          if "test_log_likelihood" in summary else [])
    print(_table(ll + [("test ELBO (nats)", f"{summary['test_elbo']:.2f}"),
                  ("active units", f"{summary['test_active_units']} of {summary['test_latent_dim']}"),
                  ("test bits/dim", f"{summary['test_bits_per_dim']:.4f}"),
                  ("run directory", run_dir),
                  ("samples", images[-1] if images else "-"),
                  ("reconstructions", str(images[-1]).replace("samples_", "reconstructions_") if images else "-"),
                  ("curves", run_dir / "curves.png"),
                  ("TensorBoard", f"tensorboard --logdir {run_dir / 'tensorboard'}")]))
    return 0


def cmd_recipes(args):
    from kvae import recipes

    for name in recipes.names():
        _, summary, published, goal, measured = recipes.get(name).row()
        print(f"{name}\n" + _table([("model", summary), ("published (test NLL)", published),
                                     ("kvae goal (valid NLL)", goal), ("kvae measured", measured)]))
    print("\ntrain one: kvae train --recipe NAME --dataset binarized_mnist --data-dir DIR --out RUN")
    return 0


def cmd_data(args):
    from kvae import data as kdata

    if args.shard_mb < 1:
        raise ValueError(f"--shard-mb must be >= 1, got {args.shard_mb}")
    m = kdata.prepare(args.source, args.out, seed=args.seed, shard_bytes=args.shard_mb << 20,
                        verbose=0 if args.quiet else 1)
    rows = [(split, f"{info['examples']} examples in {len(info['shards'])} shards")
            for split, info in m["splits"].items()]
    print(_table(rows + [("shape", f"{tuple(m['shape'])} {m['dtype']}"), ("folder", args.out),
                         ("train on it", f"kvae train --dataset {args.out} --out RUN")]))
    return 0


def cmd_score(args):
    from kvae import anomaly, rundir, runs, scoring
    from kvae import data as kdata

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    names = [n.strip() for n in args.score.split(",") if n.strip()]
    scorers = [anomaly.get(n, **({"k": args.k} if "k" in anomaly.parameters(n) else {})) for n in names]
    cfg = rundir.load_config(args.run_dir)
    model = kvae.load_model(args.run_dir)
    if kdata.is_streamable(args.data):
        data, labels, binarize, where = runs.stream_inputs(cfg, args.data, model.data_shape)
    else:
        data, labels, where = runs.prepare_inputs(cfg, args.data, model.data_shape)
        binarize = False
    info = scoring.score(model, data, args.out, scores=scorers, labels=labels, batch_size=args.batch_size,
                         binarize=binarize, seed=cfg.seed + 2, verbose=0 if args.quiet else 1)
    print(_table([("rows", info["rows"]), ("columns", ", ".join(info["columns"])), ("from", where),
                  ("written to", f"{args.out} ({info['format']})")]))
    return 0


def cmd_evaluate(args):
    from kvae import files, rundir, runs

    if not 0 <= args.k <= 100_000:
        raise rundir.RunError(f"--k must be between 0 and 100000, got {args.k}")
    result = runs.evaluate(args.run_dir, which=args.checkpoint, k=args.k, seed=args.seed, verbose=int(args.k > 0))
    files.write_json(Path(args.run_dir) / "evaluation.json", result)
    shown = [(k, _fmt(v)) for k, v in result.items() if not isinstance(v, list)]
    if "test_kl_per_dim" in result:
        shown.append(("test_kl_per_dim", " ".join(f"{v:.2f}" for v in result["test_kl_per_dim"])))
    print(_table(shown))
    print(f"written to {Path(args.run_dir) / 'evaluation.json'}")
    return 0


def cmd_sample(args):
    from kvae import plots, rundir

    model = kvae.load_model(args.run_dir)
    if args.label is not None and not model.conditional:
        raise rundir.RunError("--label needs a conditional run (trained with --conditional)")
    labels = args.label
    if model.conditional and labels is None:
        labels = [i % model.num_classes for i in range(args.n)]
    images = model.sample(args.n, seed=args.seed, labels=labels).numpy()
    plots.save_grid(images, args.out, title=f"{args.n} prior samples, seed {args.seed}")
    print(f"wrote {args.out}")
    return 0


def cmd_reconstruct(args):
    from kvae import plots

    model, x, y = _run_model_and_test(args.run_dir, args.n)
    recon = model.reconstruct(x, y).numpy()
    plots.save_pairs(x, recon, args.out, title="test inputs (odd rows) and reconstructions")
    print(f"wrote {args.out}")
    return 0


def cmd_info(args):
    from kvae import rundir

    run_dir = Path(args.run_dir)
    cfg = rundir.load_config(run_dir)
    raw = json.loads((run_dir / rundir.CONFIG_FILE).read_text())
    state = rundir.read_state(run_dir)
    monitor = state.get("best_monitor", "val_loss")  # val_elbo is best when highest (older state.json: no best_mode)
    best, best_epoch = rundir.best_so_far(state, monitor, state.get("best_mode",
                                                                    "max" if monitor == "val_elbo" else "min"))
    rows = [("dataset", f"{cfg.dataset} {tuple(raw['data']['input_shape'])} from {raw['data']['source']}"),
            ("model", f"{cfg.network} encoder/decoder, latent_dim {cfg.latent_dim}, {cfg.likelihood} "
                      f"likelihood, {cfg.posterior} posterior, {cfg.prior} prior, beta {cfg.beta}"
                      + (", conditional" if cfg.conditional else "")),
            ("epochs", f"{state['epochs_done']} of {cfg.epochs} done"),
            (f"best {monitor}", "-" if best is None else f"{best:.3f} (epoch {best_epoch})")]
    if (run_dir / "summary.json").exists():
        s = json.loads((run_dir / "summary.json").read_text())
        rows.append(("test ELBO", f"{s['test_elbo']:.3f} nats ({s['train_seconds']:.0f} s of training)"))
    rows.append(("files", ", ".join(sorted(p.name for p in run_dir.iterdir()))))
    print(_table(rows))
    return 0


def cmd_export(args):
    from kvae import exporters

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    print(f"exporting {args.source} -> {args.out} ({', '.join(formats)}); verifying each artifact:")
    variants = None if args.tflite_variants is None else [v.strip() for v in args.tflite_variants.split(",")
                                                            if v.strip()]
    threshold = _scorer_threshold(args) if args.scorer else None
    if args.fpr is not None and not args.scorer:
        raise ValueError("--fpr sets the threshold of the exported scorer: add --scorer")
    report = exporters.export(args.source, args.out, formats=formats, force=args.force,
                              model_name=args.model_name, version=args.model_version, tflite_variants=variants,
                              scorer=args.scorer, scorer_threshold=threshold)
    print(exporters.format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def _scorer_threshold(args):
    """Thresholds for the exported scorer at --fpr on the run's validation split: for
    'elbo' and, for binary inputs, 'complexity' (elbo minus the context coder's length,
    which export/score.py computes on the device). None without --fpr."""
    from kvae import anomaly, rundir, runs

    if args.fpr is None:
        return None
    if not 0 < args.fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {args.fpr}")
    if not rundir.is_run(args.source):
        raise ValueError(f"--fpr calibrates on a run's validation split; {args.source} is not a run directory")
    cfg, model = rundir.load_config(args.source), kvae.load_model(args.source)
    x, y = runs.prepare_data(cfg).validation
    elbo = anomaly.NegativeELBO()(model, x, y if model.conditional else None)
    scores = {"elbo": elbo}
    if np.isin(x, (0, 1)).all():
        scores["complexity"] = elbo - anomaly.compressed_bits(x, "context") * np.log(2.0)
    out = {"binarize": "static" if cfg.binarization == "dynamic" else cfg.binarization}
    for name, values in scores.items():
        t = anomaly.calibrate(values, args.fpr)
        print(f"{name} threshold {t.value:.3f} nats: fpr {t.heldin_fpr:.4f} on {t.n} validation images")
        out[name] = {"value": t.value, "fpr": t.fpr, "heldin_fpr": t.heldin_fpr, "heldin_n": t.n,
                     "calibrated_on": "the run's validation split"}
    return out


def _run_model_and_test(run_dir, n=None):
    from kvae import rundir, runs

    cfg = rundir.load_config(run_dir)
    model = kvae.load_model(run_dir)
    ds = runs.prepare_data(cfg)
    x, y = ds.test
    y = y if model.conditional else None
    if n is not None:
        x, y = x[:n], (None if y is None else y[:n])
    return model, x, y


def _wrote(path):
    print(f"wrote {path}")
    return 0


def cmd_interpolate(args):
    from kvae import latent, plots

    model, x, y = _run_model_and_test(args.run_dir, 2 * args.pairs)
    rows = [latent.interpolate(model, x[2 * i], x[2 * i + 1], args.steps, args.method,
                                 None if y is None else y[2 * i]) for i in range(min(args.pairs, len(x) // 2))]
    plots.save_grid(np.concatenate(rows), args.out, columns=args.steps,
                    title=f"{args.method} interpolation between pairs of test images")
    return _wrote(args.out)


def cmd_traverse(args):
    from kvae import latent, plots

    model = kvae.load_model(args.run_dir)
    if model.conditional:
        raise ValueError("traverse draws no label: use an unconditional run")
    images = latent.traverse(model, args.dims)
    plots.save_grid(images.reshape((-1,) + images.shape[2:]), args.out, columns=images.shape[1],
                    title="one row per latent dimension, z_j from -3 to 3")
    return _wrote(args.out)


def cmd_latent_map(args):
    from kvae import latent, plots

    model = kvae.load_model(args.run_dir)
    plots.save_grid(latent.latent_map(model, args.n), args.out, columns=args.n,
                    title="decoded z over [-3, 3]^2")
    return _wrote(args.out)


def _anomaly_score(args):
    """The score the flags ask for, checked before any data is read."""
    from kvae import anomaly

    if args.fpr is not None and not 0 < args.fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {args.fpr}")
    if args.background is not None and args.score != "likelihood_ratio":
        raise ValueError(f"--background is the likelihood_ratio score's background model, not used by {args.score}")
    if args.score not in anomaly.names():
        raise ValueError(f"--score must be one of {', '.join(anomaly.names())}, got {args.score!r}")
    if args.k is not None and "k" not in anomaly.parameters(args.score):
        raise ValueError(f"--k is not used by the {args.score} score")
    return anomaly.get(args.score, k=args.k, background=args.background)


def cmd_anomalies(args):
    from kvae import anomaly, files, latent, plots, rundir, runs

    score = _anomaly_score(args)
    cfg, model = rundir.load_config(args.run_dir), kvae.load_model(args.run_dir)
    ds = runs.prepare_data(cfg)
    if args.data:
        x, y, where = runs.prepare_inputs(cfg, args.data, model.data_shape)
    else:
        (x, y), where = ds.test, "the test split"
    y = y if model.conditional else None
    heldin_x, heldin_y = ds.validation
    heldin_y = heldin_y if model.conditional else None
    threshold, half = None, len(heldin_x) // 2
    if score.needs_reference:  # fitted on one half of the validation split, calibrated on the other
        score.fit(model, heldin_x[:half], None if heldin_y is None else heldin_y[:half])
        heldin_x, heldin_y = heldin_x[half:], None if heldin_y is None else heldin_y[half:]
    scores = score(model, x, y, verbose=1)
    if args.fpr is not None:
        print(f"calibrating on {len(heldin_x)} validation images")
        threshold = anomaly.calibrate(score(model, heldin_x, heldin_y, verbose=1), args.fpr)
    most, least = latent.rank(scores, args.n)
    n = len(most)
    plots.save_grid(np.concatenate([x[most], x[least]]), args.out, columns=n,
                    title=f"top: {n} most anomalous of {where} ({score.name}); bottom: {n} least")
    path = Path(args.out).with_suffix(".json")
    result = {"score": score.name, "options": score.get_config(), "inputs": where,
              "scores": [float(v) for v in scores], "most_anomalous": [int(i) for i in most]}
    line = f"{score.name}: median {np.median(scores):.2f}, max {scores.max():.2f} (input {int(np.argmax(scores))})"
    if threshold is not None:
        flagged = np.flatnonzero(threshold.flag(scores))
        result["threshold"] = {"value": threshold.value, "fpr": threshold.fpr, "heldin_fpr": threshold.heldin_fpr,
                               "heldin_n": threshold.n, "calibrated_on": "the run's validation split"}
        result["flagged"] = [int(i) for i in flagged]
        line += (f"; threshold {threshold.value:.2f} (fpr {threshold.fpr:g} on {threshold.n} validation images): "
                 f"{len(flagged)} of {len(scores)} flagged")
    files.write_json(path, result)
    print(f"{line}; scores in {path}")
    return _wrote(args.out)


def cmd_inpaint(args):
    from kvae import latent, plots

    if args.missing not in latent.MASKS:
        raise ValueError(f"--missing must be bottom or random, got {args.missing!r}")
    model, x, y = _run_model_and_test(args.run_dir, args.n)
    mask = latent.mask(x.shape, args.missing, seed=0)
    filled = latent.inpaint(model, x, mask, labels=y)
    shown = x * mask + 0.5 * (1 - mask)
    plots.save_grid(np.concatenate([x, shown, filled]), args.out, columns=len(x),
                    title="rows: original, with missing pixels (grey), inpainted")
    return _wrote(args.out)


def cmd_denoise(args):
    from kvae import latent, plots

    if not 0 <= args.noise <= 1:
        raise ValueError(f"--noise must be in [0, 1], got {args.noise}")
    model, x, y = _run_model_and_test(args.run_dir, args.n)
    noisy = latent.corrupt(x, args.noise, seed=0)
    plots.save_grid(np.concatenate([x, noisy, latent.denoise(model, noisy, y)]), args.out, columns=len(x),
                    title=f"rows: original, {args.noise:.0%} of pixels replaced by noise, denoised")
    return _wrote(args.out)


COMMANDS = {"train": cmd_train, "export": cmd_export, "interpolate": cmd_interpolate, "traverse": cmd_traverse,
            "latent-map": cmd_latent_map, "anomalies": cmd_anomalies, "inpaint": cmd_inpaint,
            "denoise": cmd_denoise, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "info": cmd_info, "data": cmd_data,
            "score": cmd_score, "recipes": cmd_recipes}


#: TensorFlow's C++ start-up lines: absl prints them before it reads any setting,
#: so TF_CPP_MIN_LOG_LEVEL cannot hide them (e.g. "I0000 00:00:17.. 42 port.cc:153] oneDNN ...")
_CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                      r"[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\]|"
                      r"To enable the following instructions: .* rebuild TensorFlow)")


def _quiet_tensorflow():
    """Import TensorFlow with its C++ start-up lines filtered out, and quieten
    the converters' logging. Lines that are not start-up chatter pass through."""
    import logging
    import tempfile
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("tensorflow", "absl", "tf2onnx", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device start-up talks too
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        for line in capture.read().decode(errors="replace").splitlines():
            if line.strip() and not _CHATTER.match(line):
                print(line, file=sys.stderr)


def _os_error(e):
    what = e.strerror or str(e)
    where = f" ({e.filename})" if getattr(e, "filename", None) else ""
    return f"{what}{where}"


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command != "info" and not (args.verbose or os.environ.get("KVAE_VERBOSE") == "1"):
        _quiet_tensorflow()
    from kvae import config, data, exporters, extras, rundir

    try:
        return COMMANDS[args.command](args)
    except exporters.VerificationError as e:
        print(f"kvae {args.command}: verification failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except (config.RunError, data.DataError, data.DataNotFoundError, ValueError, extras.MissingExtraError) as e:
        print(f"kvae {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FloatingPointError as e:
        print(f"kvae {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # a full disk, a read-only or vanished directory: what the system said, and where
        print(f"kvae {args.command}: error: {_os_error(e)}; nothing half-written was left.", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" and rundir.is_run(args.resume or args.out):
            hint = f" Resume with: kvae train --resume {args.resume or args.out}"
        print(f"\nkvae {args.command}: interrupted.{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
