"""The `kvae` argument parser: the flags of every command. Only parsing: no
TensorFlow is imported here, so `kvae --help` is fast."""

import argparse

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "integer", "build_parser"]

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130  # FAILED: NaN loss, or an export that failed its check


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class KeyValue(argparse.Action):
    """`--objective-option floor=2` (repeatable) into a dict; the value read as JSON, else kept as text."""

    def __call__(self, parser, namespace, value, option_string=None):
        import json

        key, sep, text = value.partition("=")
        if not sep or not key:
            parser.error(f"{option_string} takes KEY=VALUE, got {value!r}")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), key: parsed})


def epochs_arg(text):
    """--epochs: a total (an int), or '+N' (N more, on resume), kept as the text '+N'.

    Args:
        text: str.

    Returns:
        int, or str '+N'.
    """
    if text.startswith("+"):
        if not text[1:].isdigit() or int(text[1:]) < 1:
            raise argparse.ArgumentTypeError(f"expected a total or +N (N >= 1 more epochs), got {text!r}")
        return text
    return integer(text)


def integer(text):
    """An integer flag (range checks happen where the value is used, with their own message).

    Args:
        text: str.

    Returns:
        int.
    """
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser():
    """The `kvae` argument parser: every command and its flags (defaults from `kvae.config.TrainConfig`).

    Returns:
        argparse.ArgumentParser.
    """
    from kvae import __version__
    from kvae.config import TrainConfig

    D = TrainConfig()  # the defaults live there, so explicit flags are known (None = not given)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and converter messages (also KVAE_VERBOSE=1)")
    p = Parser(prog="kvae", description="Variational autoencoders for Keras 3.", parents=[common])
    p.add_argument("--version", action="version", version=f"kvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, parents=(), **kwargs):  # every command takes --verbose
        return sub.add_parser(name, parents=[common, *parents], **kwargs)

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
    t.add_argument("--config", metavar="RUN/config.json", help="train a new run as a run's config.json records "
                   "it: its settings and its model, every part with its options (then only --dataset, --data-dir, "
                   "--download, --epochs, --time-limit, --seed, --eval-k and the runtime flags may be given)")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue this run from its last finished epoch (only --epochs, --time-limit, --data-dir and "
                        "--download may change)")
    t.add_argument("--force", action="store_true",
                   help="replace an existing run in --out (deleted only after the new run's data and "
                        "model have been checked)")
    t.add_argument("--epochs", type=epochs_arg, help=f"epochs in total (default {D.epochs}); with --resume, +N "
                   "for N more than the run has done")
    t.add_argument("--network", help=f"a registered network: mlp or conv (default {D.network}; `kvae parts`)")
    t.add_argument("--latent-dim", type=integer, help=f"(default {D.latent_dim})")
    t.add_argument("--likelihood", help=f"a registered likelihood (default {D.likelihood}; `kvae parts` lists them)")
    t.add_argument("--posterior", help=f"a registered posterior (default {D.posterior}; `kvae parts` lists them and "
                                       "what each is compatible with)")
    t.add_argument("--prior", help=f"a registered prior (default {D.prior}; `kvae parts`)")
    for kind in ("likelihood", "posterior", "prior", "objective"):
        t.add_argument(f"--{kind}-option", dest=f"{kind}_options", action=KeyValue, metavar="KEY=VALUE",
                       help=f"an option of the {kind} (repeatable; VALUE read as JSON, else text)")
    t.add_argument("--beta", type=float, help=f"(default {D.beta})")
    t.add_argument("--objective", help=f"a registered objective: elbo, iwae, dreg, ... (default {D.objective}; "
                                       "`kvae parts`)")
    t.add_argument("--num-samples", type=integer, help=f"samples of z per example (k for iwae; default {D.num_samples})")
    t.add_argument("--free-bits", type=float, help="per-dimension KL floor in nats (default 0: off)")
    t.add_argument("--kl-warmup", type=integer, help="epochs of KL warm-up (default 0: off)")
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
    t.add_argument("--batch-size", type=integer, help=f"(default {D.batch_size})")
    t.add_argument("--lr", type=float, dest="learning_rate", help=f"Adam's learning rate (default {D.learning_rate})")
    t.add_argument("--mixed-precision", help="none (default), mixed_float16 (GPU) or mixed_bfloat16")
    t.add_argument("--strategy", help="none (default), mirrored or multiworker (reads TF_CONFIG)")
    t.add_argument("--steps-per-execution", type=integer, help=f"(default {D.steps_per_execution})")
    t.add_argument("--seed", type=integer, help=f"(default {D.seed})")
    t.add_argument("--time-limit", type=float, metavar="MINUTES",
                   help="no new epoch after this many minutes of training, summed over --resume (default 0: no limit)")
    t.add_argument("--lr-decay", help="none (default) or cosine: the learning rate falls to 0 by the end "
                   "of the run, over --epochs or over --time-limit if that ends it first")
    t.add_argument("--eval-k", type=integer, help="importance samples of the final test log p(x) in summary.json "
                                               "(default 0: ELBO only; recipes 5000)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    add("recipes", help="the training recipes, their published anchors and kvae's measured figures")

    d = add("data", help="data tools: `kvae data prepare SRC --out DIR` writes TFRecord shards")
    d.add_argument("action", choices=["prepare"])
    d.add_argument("source", help="a .npy or uncompressed .npz file, or a folder of images")
    d.add_argument("--out", required=True, help="folder to create (must not exist)")
    d.add_argument("--seed", type=integer, default=0, help="seeds the validation and test splits, as `kvae train "
                   "--seed` would (default 0)")
    d.add_argument("--shard-mb", type=integer, default=64, help="megabytes per shard (default 64)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")

    scoring = argparse.ArgumentParser(add_help=False)  # `score` and `anomalies`: one set of options
    scoring.add_argument("run_dir")
    scoring.add_argument("--k", type=integer, default=None,
                         help="importance samples of nll, complexity, likelihood_ratio, typicality (default 100)")
    scoring.add_argument("--background", help="the background model of likelihood_ratio: a run directory or "
                         ".keras file trained with --perturb")
    scoring.add_argument("--quiet", action="store_true", help="no progress bar")
    sc = add("score", parents=[scoring],
             help="stream a dataset through a run's model: per-example scores to Parquet or .npy shards")
    sc.add_argument("--data", required=True, help="a .npy or .npz file, an image folder, a folder written by "
                    "`kvae data prepare` (streamed), or a dataset name (its test split)")
    sc.add_argument("--out", required=True, help="FILE.parquet, or a folder to create for .npy shards")
    sc.add_argument("--score", default="elbo", help="comma-separated scores from kvae.anomaly that need no "
                    "reference: elbo (default), nll (importance sampled, --k), complexity, ...")
    sc.add_argument("--batch-size", type=integer, default=1024)

    e = add("evaluate", help="test-set metrics of a run")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="best", choices=["best", "last"])
    e.add_argument("--k", type=integer, default=100,
                   help="importance samples for log p(x) (0: ELBO only; 1 to 100000; a progress bar shows)")
    e.add_argument("--seed", type=integer, default=0)

    s = add("sample", help="a grid of samples from the prior")
    s.add_argument("run_dir")
    s.add_argument("--n", type=integer, default=64)
    s.add_argument("--seed", type=integer, default=0)
    s.add_argument("--label", type=integer, default=None, help="class to draw (conditional runs)")
    s.add_argument("--out", default="samples.png")

    r = add("reconstruct", help="test inputs next to their reconstructions")
    r.add_argument("run_dir")
    r.add_argument("--n", type=integer, default=16)
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
    x.add_argument("--version", type=integer, default=1, dest="model_version")
    x.add_argument("--scorer", action="store_true", help="also export the anomaly scorer (x -> -ELBO at the "
                   "posterior mode, the 'elbo' score) to tflite and onnx; export/score.py runs it on a device")
    x.add_argument("--fpr", type=float, default=None, help="with --scorer and a run directory: a threshold at "
                   "this false-positive rate on the run's validation split, stored for the device runner")

    li = add("interpolate", help="decoded interpolations between pairs of test images")
    li.add_argument("run_dir")
    li.add_argument("--method", default="linear", help="linear or spherical")
    li.add_argument("--steps", type=integer, default=10)
    li.add_argument("--pairs", type=integer, default=4)
    li.add_argument("--out", default="interpolation.png")
    lt = add("traverse", help="vary each latent dimension around z = 0")
    lt.add_argument("run_dir")
    lt.add_argument("--dims", type=integer, nargs="*", default=None, help="latent indices (default all)")
    lt.add_argument("--out", default="traversal.png")
    lm = add("latent-map", help="decoded grid over the 2-D latent space (latent_dim = 2)")
    lm.add_argument("run_dir")
    lm.add_argument("--n", type=integer, default=15)
    lm.add_argument("--out", default="latent_map.png")
    la = add("anomalies", parents=[scoring], help="the anomaly report of one score: the most and least anomalous "
             "test images (or --data) and a threshold calibrated on the validation split (--fpr)")
    la.add_argument("--score", default="complexity", help="complexity (default), nll, elbo, likelihood_ratio, "
                    "likelihood_regret or typicality: what each assumes and costs is in kvae.anomaly")
    la.add_argument("--data", help="score these inputs instead of the run's test split: a .npy or .npz file, "
                    "a folder of images, or a dataset name")
    la.add_argument("--fpr", type=float, default=None, help="set a threshold at this false-positive rate on "
                    "the run's validation split and flag the inputs above it (e.g. 0.05)")
    la.add_argument("--n", type=integer, default=16)
    la.add_argument("--out", default="anomalies.png")
    lp = add("inpaint", help="fill the masked half of test images")
    lp.add_argument("run_dir")
    lp.add_argument("--n", type=integer, default=8)
    lp.add_argument("--missing", default="bottom", help="bottom (lower half) or random (half of the pixels)")
    lp.add_argument("--out", default="inpainting.png")
    ld = add("denoise", help="reconstruct test images with flipped or noisy pixels")
    ld.add_argument("run_dir")
    ld.add_argument("--n", type=integer, default=8)
    ld.add_argument("--noise", type=float, default=0.1, help="share of pixels replaced by noise")
    ld.add_argument("--out", default="denoising.png")

    i = add("info", help="what a run directory holds")
    i.add_argument("run_dir")
    add("parts", help="the registered parts (likelihoods, posteriors, priors, networks, objectives, scores)")
    return p
