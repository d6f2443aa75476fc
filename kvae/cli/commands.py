"""One function per `kvae` command: the parsed flags in, one library call, a
printed table out. What a command does lives in the library (kvae.runs,
kvae.rundir, kvae.exporters, kvae.latent, kvae.plots), callable from Python
with the same behaviour; nothing here imports TensorFlow at module level."""

from pathlib import Path

import numpy as np

import kvae

__all__ = ["COMMANDS"]


def _table(rows):
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _fmt(v):
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _wrote(path):
    print(f"wrote {path}")
    return 0


def cmd_train(args):
    from kvae import recipes, runs
    from kvae.config import RunError, TrainConfig

    if args.resume and args.out:
        raise RunError("use either --resume RUN_DIR or --out RUN_DIR, not both")
    if not args.resume and not args.out:
        raise RunError("--out RUN_DIR is required (or --resume RUN_DIR)")
    given = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    run_dir = Path(args.resume or args.out)
    verbose = 0 if args.quiet else 1
    more = given.pop("epochs") if isinstance(given.get("epochs"), str) else None  # '+N'
    if more and not args.resume:
        raise RunError(f"--epochs {more} adds epochs to a --resume; a new run takes a total")
    if args.resume:
        if args.force or args.config:
            raise RunError(f"{'--force' if args.force else '--config'} does not apply to --resume")
        summary = runs.resume(run_dir, given, verbose=verbose, more_epochs=int(more[1:]) if more else None)
    elif args.config:
        cfg, model_config = runs.config_from_file(args.config, given)
        summary = runs.train(cfg, run_dir, force=args.force, verbose=verbose, model_config=model_config)
    else:
        cfg = recipes.get(given["recipe"]).config(**given) if given.get("recipe") else TrainConfig(**given)
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


def cmd_parts(args):
    from kvae import registry

    for kind in registry.KINDS:
        print(f"{kind}: {', '.join(registry.names(kind))}")
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
    from kvae import anomaly, runs

    scores = anomaly.from_options(args.score, k=args.k, background=args.background)
    info = runs.score_table(args.run_dir, args.data, args.out, scores, batch_size=args.batch_size,
                            verbose=0 if args.quiet else 1)
    print(_table([("rows", info["rows"]), ("columns", ", ".join(info["columns"])), ("from", info["inputs"]),
                  ("written to", f"{args.out} ({info['format']})")]))
    return 0


def cmd_anomalies(args):
    from kvae import anomaly, files, plots, runs

    if args.fpr is not None and not 0 < args.fpr < 1:
        raise ValueError(f"--fpr must be in (0, 1), got {args.fpr}")
    (score,) = anomaly.from_options([args.score], k=args.k, background=args.background)
    result, x = runs.anomaly_report(args.run_dir, score, data=args.data, fpr=args.fpr, n=args.n,
                                    verbose=0 if args.quiet else 1)
    most, least = result["most_anomalous"], result["least_anomalous"]
    plots.save_grid(np.concatenate([x[most], x[least]]), args.out, columns=len(most),
                    title=f"top: {len(most)} most anomalous of {result['inputs']} ({score.name}); "
                          f"bottom: {len(least)} least")
    path = Path(args.out).with_suffix(".json")
    files.write_json(path, result)
    scores = np.asarray(result["scores"])
    line = f"{score.name}: median {np.median(scores):.2f}, max {scores.max():.2f} (input {int(np.argmax(scores))})"
    if "threshold" in result:
        t = result["threshold"]
        line += (f"; threshold {t['value']:.2f} (fpr {t['fpr']:g} on {t['heldin_n']} validation images): "
                 f"{len(result['flagged'])} of {len(scores)} flagged")
    print(f"{line}; scores in {path}")
    return _wrote(args.out)


def cmd_evaluate(args):
    from kvae import files, runs
    from kvae.config import RunError

    if not 0 <= args.k <= 100_000:
        raise RunError(f"--k must be between 0 and 100000, got {args.k}")
    result = runs.evaluate(args.run_dir, which=args.checkpoint, k=args.k, seed=args.seed, verbose=int(args.k > 0))
    files.write_json(Path(args.run_dir) / "evaluation.json", result)
    shown = [(k, _fmt(v)) for k, v in result.items() if not isinstance(v, list)]
    if "test_kl_per_dim" in result:
        shown.append(("test_kl_per_dim", " ".join(f"{v:.2f}" for v in result["test_kl_per_dim"])))
    print(_table(shown))
    print(f"written to {Path(args.run_dir) / 'evaluation.json'}")
    return 0


def cmd_sample(args):
    from kvae import plots
    from kvae.config import RunError

    model = kvae.load_model(args.run_dir)
    if args.label is not None and not model.conditional:
        raise RunError("--label needs a conditional run (trained with --conditional)")
    labels = args.label
    if model.conditional and labels is None:
        labels = [i % model.num_classes for i in range(args.n)]
    images = model.sample(args.n, seed=args.seed, labels=labels).numpy()
    plots.save_grid(images, args.out, title=f"{args.n} prior samples, seed {args.seed}")
    return _wrote(args.out)


def cmd_reconstruct(args):
    from kvae import plots, runs

    model, x, y = runs.test_inputs(args.run_dir, args.n)
    plots.save_pairs(x, model.reconstruct(x, y).numpy(), args.out, title="test inputs (odd rows) and reconstructions")
    return _wrote(args.out)


def cmd_info(args):
    from kvae import rundir

    print(_table(rundir.describe(args.run_dir)))
    return 0


def cmd_export(args):
    from kvae import exporters, runs

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    print(f"exporting {args.source} -> {args.out} ({', '.join(formats)}); verifying each artifact:")
    variants = None if args.tflite_variants is None else [v.strip() for v in args.tflite_variants.split(",")
                                                            if v.strip()]
    if args.fpr is not None and not args.scorer:
        raise ValueError("--fpr sets the threshold of the exported scorer: add --scorer")
    threshold = None
    if args.scorer and args.fpr is not None:
        threshold = runs.scorer_thresholds(args.source, args.fpr)
        for name, t in threshold.items():
            if isinstance(t, dict):
                print(f"{name} threshold {t['value']:.3f} nats: fpr {t['heldin_fpr']:.4f} on {t['heldin_n']} "
                      "validation images")
    report = exporters.export(args.source, args.out, formats=formats, force=args.force,
                              model_name=args.model_name, version=args.model_version, tflite_variants=variants,
                              scorer=args.scorer, scorer_threshold=threshold)
    print(exporters.format_report(report))
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def cmd_interpolate(args):
    from kvae import latent, plots, runs

    model, x, y = runs.test_inputs(args.run_dir, 2 * args.pairs)
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
    plots.save_grid(latent.latent_map(model, args.n), args.out, columns=args.n, title="decoded z over [-3, 3]^2")
    return _wrote(args.out)


def cmd_inpaint(args):
    from kvae import latent, plots, runs

    if args.missing not in latent.MASKS:
        raise ValueError(f"--missing must be bottom or random, got {args.missing!r}")
    model, x, y = runs.test_inputs(args.run_dir, args.n)
    mask = latent.mask(x.shape, args.missing, seed=0)
    filled = latent.inpaint(model, x, mask, labels=y)
    shown = x * mask + 0.5 * (1 - mask)
    plots.save_grid(np.concatenate([x, shown, filled]), args.out, columns=len(x),
                    title="rows: original, with missing pixels (grey), inpainted")
    return _wrote(args.out)


def cmd_denoise(args):
    from kvae import latent, plots, runs

    if not 0 <= args.noise <= 1:
        raise ValueError(f"--noise must be in [0, 1], got {args.noise}")
    model, x, y = runs.test_inputs(args.run_dir, args.n)
    noisy = latent.corrupt(x, args.noise, seed=0)
    plots.save_grid(np.concatenate([x, noisy, latent.denoise(model, noisy, y)]), args.out, columns=len(x),
                    title=f"rows: original, {args.noise:.0%} of pixels replaced by noise, denoised")
    return _wrote(args.out)


COMMANDS = {"train": cmd_train, "export": cmd_export, "interpolate": cmd_interpolate, "traverse": cmd_traverse,
            "latent-map": cmd_latent_map, "anomalies": cmd_anomalies, "inpaint": cmd_inpaint,
            "denoise": cmd_denoise, "evaluate": cmd_evaluate, "sample": cmd_sample,
            "reconstruct": cmd_reconstruct, "info": cmd_info, "data": cmd_data,
            "score": cmd_score, "recipes": cmd_recipes, "parts": cmd_parts}
