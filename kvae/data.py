"""Named datasets found offline, user data, binarisation, and tf.data pipelines.

A named set resolves, without a network, from (in order):
  1. a data directory: the `data_dir` argument, else $KVAE_DATA_DIR;
  2. the Keras cache, $KERAS_HOME/datasets (default ~/.keras/datasets);
  3. TFDS prepared data (`tfds.load(..., download=False)`) in `data_dir` or
     $TFDS_DATA_DIR (default ~/tensorflow_datasets);
  4. Debian's `dataset-fashion-mnist` files in /usr/share/datasets/fashion-mnist.
With `download=True` (where a network exists) keras.datasets or TFDS may then
download. If nothing is found, `DataNotFoundError` says what to install or
which files to put where.

Pixels are scaled to [0, 1]. Every split comes as float32 arrays of shape
[N, H, W, C] (or [N, D] for vector data), with int labels or None.
"""

import gzip
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAMES = ("fashion_mnist", "mnist", "binarized_mnist", "digits")
BINARIZE = ("none", "threshold", "static", "dynamic")
ENV_DATA_DIR = "KVAE_DATA_DIR"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
AMAT_FILES = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}


class DataError(ValueError):
    """Data that exists but cannot be used (corrupt, inconsistent, unknown)."""


class DataNotFoundError(FileNotFoundError):
    """A named dataset that no offline source holds."""


@dataclass
class Dataset:
    """Train / validation / test splits of one dataset, pixels in [0, 1]."""

    name: str
    source: str
    train: tuple
    validation: tuple
    test: tuple
    num_classes: int = None
    notes: list = field(default_factory=list)

    @property
    def input_shape(self):
        return tuple(self.train[0].shape[1:])

    def summary(self):
        sizes = ", ".join(f"{k} {len(getattr(self, k)[0])}" for k in ("train", "validation", "test"))
        return f"{self.name} {self.input_shape} from {self.source}: {sizes}"


# --------------------------------------------------------------- file formats
def _read_idx(path):
    """An IDX file (the MNIST format), gzipped or not, as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        dims = raw[3]
        shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
        return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    except (OSError, ValueError, IndexError, EOFError) as e:
        raise DataError(f"Cannot read the IDX file {path}: {e}") from None


def _idx_pair(folder, split):
    images, labels = (folder / f for f in IDX_FILES[split])
    x = _read_idx(images)
    y = _read_idx(labels).astype("int32")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels.")
    return x, y


def _idx_folder(folder):
    """(train, test) from a folder of the four MNIST-format files, or None."""
    folder = Path(folder)
    if all((folder / f).exists() for pair in IDX_FILES.values() for f in pair):
        return _idx_pair(folder, "train"), _idx_pair(folder, "test")
    return None


def read_npz(path):
    """A user's arrays: keys x_train[, y_train], x_test[, y_test], or x[, y]."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"Cannot read {path} as a .npz file: {e}") from None
    if "x_train" in arrays:
        train = (arrays["x_train"], arrays.get("y_train"))
        test = (arrays["x_test"], arrays.get("y_test")) if "x_test" in arrays else None
        return train, test
    if "x" in arrays:
        return (arrays["x"], arrays.get("y")), None
    raise DataError(f"{path} holds {sorted(arrays)}; kvae needs 'x_train' (and 'x_test') or 'x'.")


def read_image_folder(path):
    """All images below `path`, which must share one size. Images in
    sub-folders get the sub-folder's (sorted) index as their label."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}.")
    images, sizes = [], {}
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"Cannot read the image {f}: {e}") from None
        sizes.setdefault(images[-1].size, f)
    if len(sizes) > 1:
        (s1, f1), (s2, f2) = list(sizes.items())[:2]
        raise DataError(
            f"Images in {path} differ in size: {f1.name} is {s1[0]}x{s1[1]} but {f2.name} is "
            f"{s2[0]}x{s2[1]}. Resize them to one size first."
        )
    grey = all(im.mode in ("1", "L", "LA", "I", "I;16") for im in images)
    x = np.stack([np.asarray(im.convert("L" if grey else "RGB")) for im in images])
    folders = [f.parent.relative_to(path) for f in files]
    y = None
    if all(str(d) != "." for d in folders):
        classes = sorted({str(d) for d in folders})
        y = np.array([classes.index(str(d)) for d in folders], "int32")
    return x, y


# ------------------------------------------------------------------ sources
def _keras_cache():
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _tfds_load(name, data_dir, splits=("train", "test"), download=False):
    """Prepared TFDS data as {split: (images, labels or None)} numpy arrays, or
    None if it is not prepared there (and download is off)."""
    import tensorflow_datasets as tfds

    try:
        datasets = tfds.load(name, split=list(splits), data_dir=data_dir, download=download)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError):
        return None
    out = {}
    for split, ds in zip(splits, datasets):
        images, labels = [], []
        for batch in tfds.as_numpy(ds.batch(4096)):
            images.append(batch["image"])
            if "label" in batch:
                labels.append(batch["label"])
        out[split] = (np.concatenate(images), np.concatenate(labels) if labels else None)
    return out


def _from_npz_or_idx(folder, stem):
    for cand in (folder / f"{stem}.npz", folder / stem.replace("_", "-") / f"{stem}.npz"):
        if cand.is_file():
            train, test = read_npz(cand)
            if test is None:
                raise DataError(f"{cand} needs x_test as well as x_train.")
            return train, test, str(cand)
    for sub in (folder / stem, folder / stem.replace("_", "-")):
        found = _idx_folder(sub)
        if found:
            return (*found, str(sub))
    return None


def _find_mnist_like(name, data_dir, download):
    looked = []
    dirs = [d for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    for d in dirs:
        looked.append(f"{d}/{name}/ (the four *-ubyte.gz files) or {d}/{name}.npz")
        found = _from_npz_or_idx(Path(d), name)
        if found:
            return found
    cache = _keras_cache()
    if name == "mnist":
        looked.append(f"{cache}/mnist.npz")
        if (cache / "mnist.npz").is_file():
            train, test = read_npz(cache / "mnist.npz")
            return train, test, f"Keras cache {cache / 'mnist.npz'}"
    else:
        looked.append(f"{cache}/fashion-mnist/")
        found = _idx_folder(cache / "fashion-mnist")
        if found:
            return (*found, f"Keras cache {cache / 'fashion-mnist'}")
    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    looked.append(f"TFDS prepared data in {tfds_dir or '~/tensorflow_datasets'}")
    prepared = _tfds_load(name, tfds_dir)
    if prepared and "train" in prepared and "test" in prepared:
        return prepared["train"], prepared["test"], "TFDS prepared data"
    if name == "fashion_mnist":
        looked.append(str(DEBIAN_FASHION_MNIST))
        found = _idx_folder(DEBIAN_FASHION_MNIST)
        if found:
            return (*found, f"Debian dataset-fashion-mnist ({DEBIAN_FASHION_MNIST})")
    if download:
        import keras

        (xtr, ytr), (xte, yte) = getattr(keras.datasets, name).load_data()
        return (xtr, ytr), (xte, yte), "keras.datasets download"
    hint = (
        "Install Debian's package: sudo apt-get install dataset-fashion-mnist, or "
        if name == "fashion_mnist" else ""
    )
    raise DataNotFoundError(
        f"No {name} data found offline (looked in: {'; '.join(looked)}). {hint}put "
        f"{', '.join(f for pair in IDX_FILES.values() for f in pair)} into "
        f"${ENV_DATA_DIR}/{name}/ (or pass --data-dir), or allow a download with --download."
    )


def _find_binarized_mnist(data_dir, download):
    dirs = [d for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    for d in dirs:
        folder = Path(d) / "binarized_mnist"
        if all((folder / f).is_file() for f in AMAT_FILES.values()):
            splits = {}
            for split, f in AMAT_FILES.items():
                try:
                    splits[split] = np.loadtxt(folder / f, dtype="float32").reshape(-1, 28, 28)
                except ValueError as e:
                    raise DataError(f"Cannot read {folder / f}: {e}") from None
            return splits, str(folder)
    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    splits = ("train", "validation", "test")
    prepared = _tfds_load("binarized_mnist", tfds_dir, splits)
    if prepared is None and download:
        prepared = _tfds_load("binarized_mnist", tfds_dir, splits, download=True)
    if prepared:
        return {"train": prepared["train"][0], "valid": prepared["validation"][0],
                "test": prepared["test"][0]}, "TFDS prepared data"
    raise DataNotFoundError(
        "No binarized_mnist data found offline. Put "
        f"{', '.join(AMAT_FILES.values())} (Larochelle's split) into ${ENV_DATA_DIR}/binarized_mnist/ "
        "(or pass --data-dir), prepare TFDS's binarized_mnist, or allow a download with --download."
    )


# ------------------------------------------------------------------ loading
def _to_unit(x):
    """uint8 (or 0..255 ints) to float32 in [0, 1]; floats as they are."""
    x = np.asarray(x)
    if x.dtype == np.uint8 or (np.issubdtype(x.dtype, np.integer) and x.max(initial=0) > 1):
        return x.astype("float32") / 255.0
    return x.astype("float32")


def _with_channel(x):
    return x[..., None] if x.ndim == 3 else x


def _split_off(x, y, fraction, seed):
    """Split a seeded random `fraction` off (x, y)."""
    n = len(x)
    idx = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction))) if n > 1 else 0
    held, kept = idx[:k], idx[k:]
    pick = (lambda a, i: None if a is None else a[i])
    return (x[kept], pick(y, kept)), (x[held], pick(y, held))


def load(name, data_dir=None, download=False, validation_fraction=0.1, seed=0):
    """Load a named dataset, a `.npz` file or a folder of images, as a `Dataset`.

    Args:
        name: 'fashion_mnist', 'mnist', 'binarized_mnist', 'digits', or a path
            to a `.npz` file or a folder of images.
        data_dir: where to look first (else $KVAE_DATA_DIR).
        download: allow keras.datasets / TFDS to download when nothing is found.
        validation_fraction: share of the training set held out for validation
            (binarized_mnist has its own validation split).
        seed: seeds the validation (and, for user data, test) split.
    """
    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    path = Path(str(name)).expanduser()
    num_classes = None
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.images / 16.0).astype("float32")[..., None], d.target.astype("int32")
        (train, test) = _split_off(x, y, 0.2, seed)
        source, num_classes = "scikit-learn (bundled)", 10
    elif name in ("fashion_mnist", "mnist"):
        train, test, source = _find_mnist_like(name, data_dir, download)
        num_classes = 10
    elif name == "binarized_mnist":
        splits, source = _find_binarized_mnist(data_dir, download)
        return Dataset(
            name, source,
            train=(_with_channel(_to_unit(splits["train"])), None),
            validation=(_with_channel(_to_unit(splits["valid"])), None),
            test=(_with_channel(_to_unit(splits["test"])), None),
        )
    elif path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"No such file: {path}")
        train, test = read_npz(path)
        if test is None:
            train, test = _split_off(*train, 0.1, seed + 1)
        source = str(path)
    elif path.is_dir():
        train, test = _split_off(*read_image_folder(path), 0.1, seed + 1)
        source = f"images in {path}"
    else:
        raise DataError(
            f"Unknown dataset {name!r}: use one of {', '.join(NAMES)}, a .npz file, or a folder of images."
        )
    x, y = _with_channel(_to_unit(train[0])), train[1]
    if y is not None:
        y = np.asarray(y).astype("int32")
        num_classes = num_classes or int(y.max()) + 1
    train, validation = _split_off(x, y, validation_fraction, seed)
    test = (_with_channel(_to_unit(test[0])), None if test[1] is None else np.asarray(test[1]).astype("int32"))
    if test[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"Train examples have shape {train[0].shape[1:]} but test examples {test[0].shape[1:]}.")
    return Dataset(str(name), source, train, validation, test, num_classes=num_classes)


# -------------------------------------------------------------- binarisation
def binarize(x, mode, seed=0):
    """'threshold': x > 0.5; 'static': one fixed Bernoulli(x) draw (seeded);
    'none' and 'dynamic' return x unchanged ('dynamic' draws in `pipeline`)."""
    if mode not in BINARIZE:
        raise DataError(f"Unknown binarisation {mode!r}: choose one of {', '.join(BINARIZE)}.")
    if mode == "threshold":
        return (x > 0.5).astype("float32")
    if mode == "static":
        return (np.random.default_rng(seed).uniform(size=x.shape) < x).astype("float32")
    return x


def pipeline(x, y=None, batch_size=128, shuffle=True, seed=0, dynamic_binarize=False,
             drop_remainder=False, epoch=None):
    """A tf.data pipeline of batches of x (or (x, y)).

    Shuffles indices (not images) and gathers each batch from one in-memory
    tensor; optionally draws a new Bernoulli(x) binarisation of every batch
    ('dynamic' binarisation). tf.data runs on a private one-thread pool with
    autotune off, which leaves the cores to the training step (bench/RESULTS.md).

    With `epoch` (an int64 `tf.Variable` that `kvae.callbacks.SetEpoch` keeps
    at the current epoch) the order and the binarisation draws are a function
    of (seed, epoch) alone, so a run resumed at epoch k sees exactly the data
    an uninterrupted run would. Without it, tf.data reshuffles every pass.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}.")
    n = len(x)
    images = tf.constant(x)
    labels = None if y is None else tf.constant(np.asarray(y, "int32"))
    seed64 = tf.constant(seed, tf.int64)
    ds = tf.data.Dataset.range(n)
    if shuffle and epoch is not None:
        ds = ds.map(lambda i: tf.random.experimental.index_shuffle(
            i, tf.stack([seed64, tf.cast(epoch.read_value(), tf.int64)]), n - 1))
    elif shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def gather(idx):
        xb = tf.gather(images, idx)
        if dynamic_binarize:
            if epoch is not None:  # stateless: keyed by (seed, epoch, first index of the batch)
                key = tf.stack([seed64 * 1_000_003 + tf.cast(epoch.read_value(), tf.int64), idx[0]])
                u = tf.random.stateless_uniform(tf.shape(xb), seed=key)
            else:
                u = tf.random.uniform(tf.shape(xb), seed=seed)
            xb = tf.cast(u < xb, tf.float32)
        return xb if labels is None else (xb, tf.gather(labels, idx))

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return ds.map(gather).prefetch(1).with_options(options)
