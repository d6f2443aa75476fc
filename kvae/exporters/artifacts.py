"""`export`: the model opened, every artifact written into a folder beside the
destination, each run by its own runtime against the Keras decoder, and the
folder renamed into place only when every check passed; the report."""

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from kvae import files
from kvae.exporters.base import FORMATS, TFLITE_VARIANTS, TOLERANCE, SCORER_TFLITE_VARIANTS, ExportError, VerificationError
from kvae.exporters.graphs import decode_outputs, scorer_function, scorer_outputs, scorer_problem
from kvae.exporters.onnx import run_onnx, write_onnx
from kvae.exporters.savedmodel import run_savedmodel_without_kvae, write_savedmodel, write_scorer_savedmodel
from kvae.exporters.tflite import run_tflite, write_tflite
from kvae.extras import require

#: what an export folder holds, and nothing else: what `--force` may replace
EXPORT_ENTRIES = ("savedmodel", "tflite", "onnx", "metadata.json", "report.json")

__all__ = ["EXPORT_ENTRIES", "refuse_foreign", "load_source", "default_tflite_variants", "export", "scorer_check_inputs", "format_report",
           "measure_latency", "artifact_size"]


def load_source(path):
    """The model to export and the metadata written beside it.

    Args:
        path: str or Path, a run directory or a `.keras` file (`kvae.load_model`).

    Returns:
        (kvae.VAE, dict: kvae version, latent_dim, input_shape, likelihood,
        outputs, num_classes, prior, int8 logit clip, training summary, source).

    Raises:
        ExportError naming the path if it cannot be loaded.
    """
    import kvae
    from kvae import saving

    path = Path(path)
    try:
        model, summary = saving.load_model(path), saving.read_summary(path) if path.is_dir() else {}
    except ValueError as e:
        raise ExportError(str(e)) from None
    metadata = {
        "kvae_version": kvae.__version__,
        "latent_dim": model.latent_dim,
        "input_shape": list(model.data_shape),
        "likelihood": model.likelihood.name,
        "outputs": ["mean"] + (["logits"] if model.likelihood.has_logits else []),
        "num_classes": model.num_classes,
        "prior": type(model.prior).__name__,
        "int8_logit_clip": model.likelihood.int8_logit_clip,  # the full-int8 decoder's logits
        "training_summary": summary,
        "source": str(path),
    }
    return model, metadata


def measure_latency(fn, runs=200, warmup=20):
    """The latency of a call.

    Args:
        fn: a function of no arguments; runs: int, timed calls; warmup: int, untimed calls first.

    Returns:
        (p50, p99) milliseconds.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def artifact_size(path):
    """Bytes of a file, or of every file below a folder.

    Args:
        path: str or Path.

    Returns:
        int.
    """
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def default_tflite_variants(likelihood):
    """The TFLite variants written when none are named: the likelihood's own
    `tflite_variants` where it declares them, else all four.

    Args:
        likelihood: a `kvae.distributions.Likelihood`.

    Returns:
        tuple of variant names.
    """
    return tuple(likelihood.tflite_variants or TFLITE_VARIANTS)


def export(source, out_dir, formats=FORMATS, force=False, model_name="kvae", version=1,
           num_check=64, seed=0, tflite_variants=None, log=print, scorer=False, scorer_threshold=None):
    """Export the decoder of `source` (a run directory or `.keras` file) into
    `out_dir`, verify every artifact, and return the report (also written as
    report.json). `tflite_variants=None` writes `default_tflite_variants` of
    the model's likelihood: a quantised default that fails its conversion or check
    is left out and its report row says why (`not_written`), the rest are written.
    Any other failure (a format or variant the user named) raises, leaving nothing behind.

    Args:
        source: a run directory or `.keras` file; out_dir: the directory to create;
        formats: from FORMATS; force: replace out_dir; model_name, version: TF
        Serving's layout; num_check: latents drawn from the prior for the
        checks; seed: int; tflite_variants: from TFLITE_VARIANTS or None; log: print-like;
        scorer: also export the anomaly scorer (`scorer_outputs`: x -> -ELBO at the
        posterior mode) to the TFLite (float32, float16) and ONNX formats asked
        for, checked against `kvae.anomaly.NegativeELBO` on the model's own
        samples and on noise; scorer_threshold: dict {'binarize': mode, score
        name: {value, fpr, ...}} stored in metadata.json for the device runner
        (export/score.py), or None.

    Returns:
        dict: rows (one per artifact: errors, tolerance, size, latency), metadata.
    """
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"Unknown format(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(FORMATS)}.")
    out_dir = Path(out_dir)
    files.check_destination(out_dir, "--out")
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} exists; use --force to replace it, or another --out.")
    if out_dir.exists():
        refuse_foreign(out_dir)
    if int(version) < 1:
        raise ExportError(f"version must be >= 1, got {version}.")
    bad = [v for v in tflite_variants or () if v not in TFLITE_VARIANTS]
    if bad or ("tflite" in formats and tflite_variants is not None and not tuple(tflite_variants)):
        raise ExportError(f"Unknown TFLite variant(s) {', '.join(bad) or '(none)'}: choose from "
                          f"{', '.join(TFLITE_VARIANTS)}.")
    needed = {"tflite": ["ai_edge_litert.interpreter"], "onnx": ["tf2onnx", "onnx", "onnxruntime"]}
    for module in [m for f in formats for m in needed.get(f, [])]:
        require(module, "export", f"Exporting to {module.split('.')[0]}")
    if scorer and not {"tflite", "onnx"} & set(formats):
        raise ExportError("The scorer is exported to tflite and onnx: add one of them to --format.")
    model, metadata = load_source(source)
    if scorer:
        problem = scorer_problem(model)
        if problem:
            raise ExportError(f"Cannot export the scorer: {problem}.")
        metadata["scorer"] = {"score": "elbo", "inputs": {"x": [None, *model.data_shape]},
                              "outputs": ["score", "reconstruction", "kl"],
                              "formula": "score = KL(q(z|x) || p(z)) - log p(x | z = mode of q(z|x)), nats; "
                                         "higher is more anomalous; 'complexity' = score - ln 2 x the context "
                                         "coder's bits (kvae.anomaly.compressed_bits, in export/score.py)",
                              "thresholds": scorer_threshold}
    likelihood = model.likelihood
    # the quantised defaults may fail their check without failing the export; a variant named by the user may not
    optional = () if tflite_variants is not None else tuple(v for v in default_tflite_variants(likelihood)
                                                           if v != "float32")
    tflite_variants = tuple(default_tflite_variants(likelihood) if tflite_variants is None else tflite_variants)
    refused = [f"{v}: {likelihood.tflite_refuses[v]}" for v in tflite_variants if v in likelihood.tflite_refuses]
    if refused and "tflite" in formats:
        raise ExportError(f"TFLite {refused[0]}.")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for p in files.sweep(out_dir.parent):  # what a killed export left (its process is gone)
        log(f"removed {p.name}, left by a killed process")
    # Built in a hidden sibling directory, which replaces out_dir whole only if
    # every artifact passed its check; on any failure or interrupt it is removed.
    with files.atomic_path(out_dir, directory=True) as work:
        return export_into(model, metadata, work, formats, model_name, int(version), num_check, seed,
                            tflite_variants, log, scorer, optional)


def refuse_foreign(out_dir):
    """Raise ExportError unless `out_dir` is an export of kvae's holding nothing else (what `--force` replaces).

    Args:
        out_dir: Path, an existing path.

    Raises:
        ExportError naming a file that --force would delete.
    """
    if not out_dir.is_dir():
        raise ExportError(f"--force replaces an export folder, and --out {out_dir} is a file; nothing was deleted.")
    entries = sorted(out_dir.iterdir())
    if entries and not (out_dir / "metadata.json").is_file():
        raise ExportError(f"--force replaces a kvae export, and --out {out_dir} is not one (no metadata.json): it "
                          f"would delete {entries[0]}; nothing was deleted. Choose another --out.")
    foreign = [p for p in entries if p.name not in EXPORT_ENTRIES and not files.is_temp(p.name)]
    if foreign:
        raise ExportError(f"--force replaces only what kvae wrote in {out_dir}, and {foreign[0]} is not a kvae "
                          "file; nothing was deleted. Move it out, or choose another --out.")


def scorer_check_inputs(model, n, seed):
    """Inputs to check the scorer on: n // 2 of the model's own samples (z
    from the prior, x from p(x|z)) and the rest uniform noise (as a flagged
    input would be), both binary for a Bernoulli-type likelihood's binary data.

    Args:
        model: kvae.VAE; n: int; seed: int.

    Returns:
        (x float32 [n, *input_shape], labels int32 [n] or None).
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, model.num_classes, n).astype("int32") if model.conditional else None
    half = n // 2
    z = model.prior.distribution(model).sample(half, seed=tf.constant([seed, 2])).numpy()
    params = model.decode_params(z, None if labels is None else labels[:half])
    own = model.likelihood.distribution(params, len(model.data_shape)).sample(seed=tf.constant([seed, 3]))
    noise = rng.uniform(size=(n - half, *model.data_shape))
    if model.likelihood.unit_interval:
        noise = (noise < 0.5).astype("float32")
    return np.concatenate([own.numpy(), noise]).astype("float32"), labels


def export_into(model, metadata, work, formats, model_name, version, num_check, seed, tflite_variants, log,
                scorer=False, optional=()):
    """Write and verify every artifact into `work`; the report. A TFLite variant in `optional` (the
    quantised ones the user did not name) that fails its conversion or check is left out, and the
    report says why, instead of failing the whole export."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    # Checked where the decoder will run: at draws from the model's prior.
    z = model.prior.distribution(model).sample(num_check, seed=tf.constant([seed, 1])).numpy()
    labels = rng.integers(0, model.num_classes, num_check).astype("int32") if model.conditional else None
    reference = {k: v.numpy() for k, v in decode_outputs(model, z, labels).items()}
    clip = model.likelihood.int8_logit_clip
    clipped = {k: v.numpy() for k, v in decode_outputs(model, z, labels, clip_logits=clip).items()}
    keras_p50, keras_p99 = measure_latency(lambda: model.decode(z[:1], None if labels is None else labels[:1]))
    rows = [{"artifact": "keras model.decode (eager)", "size_bytes": None, "max_abs_error": 0.0,
             "mean_abs_error": 0.0, "p50_ms": keras_p50, "p99_ms": keras_p99, "tolerance": None}]

    def check(name, path, outputs, latency, expected=None):
        expected = expected or (clipped if name == "tflite_int8" else reference)
        errors = {}
        for key, want in expected.items():
            if key not in outputs:
                raise VerificationError(f"{name} has no output {key!r} (it has {', '.join(sorted(outputs))}).")
            err = np.abs(np.asarray(outputs[key]).reshape(want.shape) - want)
            errors[key] = (float(err.max()), float(err.mean()), max(1.0, float(np.abs(want).max())))
        main = "mean" if "mean" in errors else "score"
        row = {"artifact": name, "path": str(path.relative_to(work)), "size_bytes": artifact_size(path),
               "max_abs_error": errors[main][0], "mean_abs_error": errors[main][1],
               "errors": {k: {"max_abs": e[0], "mean_abs": e[1], "range": e[2]} for k, e in errors.items()},
               "p50_ms": latency[0], "p99_ms": latency[1], "tolerance": TOLERANCE[name]}
        rows.append(row)
        for key, (worst, _, scale) in errors.items():
            if not worst <= TOLERANCE[name] * scale:
                raise VerificationError(f"{name} does not match the Keras decoder: max abs error on {key!r} "
                                        f"{worst:.2e} > {TOLERANCE[name]:g} x range {scale:.3g}.")
        shown = "  ".join(f"{k} {e[0]:.1e}" for k, e in errors.items())
        log(f"  {name:22s} ok  max err {shown}  {row['size_bytes'] / 1e6:7.3f} MB  p50 {row['p50_ms']:.3f} ms")

    (work / "metadata.json").write_text(json.dumps(metadata, indent=2))
    if "savedmodel" in formats:
        path = work / "savedmodel" / model_name / str(version)
        write_savedmodel(model, path, metadata)
        outputs, latency = run_savedmodel_without_kvae(path, z, labels, scratch=work)
        check("savedmodel", path, outputs, latency)
    if "tflite" in formats:
        (work / "tflite").mkdir()
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            write_savedmodel(model, Path(tmp) / "decoder", metadata, decoder_only=True)
            if "int8" in tflite_variants and clip is not None:
                write_savedmodel(model, Path(tmp) / "decoder_clipped", metadata, decoder_only=True,
                                  clip_logits=clip)
            for variant in tflite_variants:
                path = work / "tflite" / f"decoder_{variant}.tflite"
                source = Path(tmp) / ("decoder_clipped" if variant == "int8" and clip is not None else "decoder")
                try:
                    write_tflite(source, path, variant, model)
                    outputs, one = run_tflite(path, z, labels)
                    check(f"tflite_{variant}", path, outputs, measure_latency(one))
                except VerificationError as e:
                    if variant not in optional:
                        raise
                    path.unlink(missing_ok=True)
                    rows[:] = [r for r in rows if r["artifact"] != f"tflite_{variant}"]
                    rows.append({"artifact": f"tflite_{variant}", "not_written": str(e)})
                    log(f"  {'tflite_' + variant:22s} NOT WRITTEN (a default, not asked for by name): {e}")
    if "onnx" in formats:
        (work / "onnx").mkdir()
        path = work / "onnx" / "decoder.onnx"
        write_onnx(model, path)
        outputs, one = run_onnx(path, z, labels)
        check("onnx", path, outputs, measure_latency(one))
    if scorer:
        export_scorer(model, work, formats, num_check, seed, check)
    report = {"checked_on": f"{num_check} latents drawn from the prior ({type(model.prior).__name__}), seed {seed}", "rows": rows, "metadata": metadata}
    (work / "report.json").write_text(json.dumps(report, indent=2))
    return report


def export_scorer(model, work, formats, num_check, seed, check):
    """Write and verify the scorer's artifacts into `work`."""
    from kvae import anomaly

    x, labels = scorer_check_inputs(model, num_check, seed)
    inputs = {"x": x, "labels": labels}
    expected = {k: v.numpy() for k, v in scorer_outputs(model, x, labels).items()}
    # The Keras score by another road (TFP's densities and KL), so the exported math is checked too.
    keras_score = anomaly.NegativeELBO()(model, x, labels)
    if not np.allclose(expected["score"], keras_score, rtol=1e-5, atol=1e-3):
        raise VerificationError(f"The scorer graph does not match kvae.anomaly.NegativeELBO: max abs difference "
                                f"{np.abs(expected['score'] - keras_score).max():.2e}.")
    expected["score"] = keras_score
    if "tflite" in formats:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            write_scorer_savedmodel(model, Path(tmp) / "scorer")
            for variant in SCORER_TFLITE_VARIANTS:
                path = work / "tflite" / f"scorer_{variant}.tflite"
                write_tflite(Path(tmp) / "scorer", path, variant, model, signature="score")
                outputs, one = run_tflite(path, None, signature="score", inputs=inputs)
                check(f"scorer_tflite_{variant}", path, outputs, measure_latency(one), expected)
    if "onnx" in formats:
        path = work / "onnx" / "scorer.onnx"
        write_onnx(model, path, scorer_function(model))
        outputs, one = run_onnx(path, None, inputs=inputs)
        check("scorer_onnx", path, outputs, measure_latency(one), expected)


def format_report(report):
    """The report of `export` as a table to print.

    Args:
        report: dict returned by `export`.

    Returns:
        str.
    """
    lines = [f"{'artifact':24s} {'size MB':>9s} {'max err':>9s} {'mean err':>9s} {'p50 ms':>8s} {'p99 ms':>8s}"]
    for r in report["rows"]:
        if "not_written" in r:
            lines.append(f"{r['artifact']:24s} not written: {r['not_written']}")
            continue
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1e6:.3f}"
        lines.append(f"{r['artifact']:24s} {size:>9s} {r['max_abs_error']:9.1e} {r['mean_abs_error']:9.1e} "
                     f"{r['p50_ms']:8.3f} {r['p99_ms']:8.3f}")
    return "\n".join(lines)
