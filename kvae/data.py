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

Over 350 lines for now: the readers of every source share the checks and the
pixel scaling that follow them; the readers move to their own module when
streaming sources arrive (issue 13).
"""

import gzip
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvae.extras import require

__all__ = ["NAMES", "BINARIZE", "ENV_DATA_DIR", "DataError", "DataNotFoundError", "Dataset", "read_npz",
           "read_image_folder", "read_amat", "pixel_scale", "labels_array", "check", "check_shape",
           "check_label_range", "check_for_model", "split_validation", "load", "read_inputs", "binarize",
           "pipeline"]

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
    """Train / validation / test splits of one dataset, pixels in [0, 1].

    Args:
        name: str; source: str, where it was found (a path or a loader).
        train, validation, test: (x float32 [N, *input_shape], labels int32 [N] or None).
        num_classes: int or None; notes: list of str (scaling, splits made).
        test_is_validation: bool, True when there is no test split and the
        validation split stands in for it (binarised MNIST without its test file).
    """

    name: str
    source: str
    train: tuple
    validation: tuple
    test: tuple
    num_classes: int = None
    notes: list = field(default_factory=list)
    test_is_validation: bool = False

    @property
    def input_shape(self):
        return tuple(self.validation[0].shape[1:])  # always in memory (train may stream)

    def summary(self):
        sizes = ", ".join(f"{k} {len(getattr(self, k)[0])}" for k in ("train", "validation", "test"))
        notes = "".join(f"; {n}" for n in self.notes)
        return f"{self.name} {self.input_shape} from {self.source}: {sizes}{notes}"


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
    """A user's arrays from a `.npz` file.

    Args:
        path: str or Path holding x_train[, y_train], x_test[, y_test] (or x[, y]).

    Returns:
        dict of the arrays found, under those keys; DataError naming the file otherwise.
    """
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
    sub-folders get the sub-folder's (sorted) index as their label.

    Args:
        path: str or Path of a folder.

    Returns:
        (x uint8 [N, H, W, C], labels int32 [N] or None, class names list);
        DataError naming the first unreadable or differently sized file.
    """
    pil = require("PIL.Image", "data", "Reading image folders")
    Image, UnidentifiedImageError = pil, pil.UnidentifiedImageError

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
    None if it is not prepared there (and download is off) or TFDS is not installed."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        if download:
            require("tensorflow_datasets", "data", f"Downloading {name}")
        return None

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

        try:
            (xtr, ytr), (xte, yte) = getattr(keras.datasets, name).load_data()
        except Exception as e:  # noqa: BLE001 - urllib, http and file errors all mean "not downloaded"
            raise DataNotFoundError(f"No {name} data found offline, and the download failed "
                                    f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
                                    f"Put the files into ${ENV_DATA_DIR}/{name}/ (or --data-dir).") from None
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


def read_amat(path):
    """One split of Larochelle's binarised MNIST, [N, 28, 28] uint8 0/1, from
    either form published under the same name: the original whitespace-separated
    text, or a MATLAB file holding a uint8 array `X` of shape [N, 784].

    Args:
        path: str or Path.

    Returns:
        uint8 [N, 28, 28] with values 0 and 1.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            matlab = f.read(6) == b"MATLAB"
        if matlab:
            x = require("scipy.io", "data", "Reading MATLAB .amat files").loadmat(path)["X"]
        else:
            x = np.loadtxt(path, dtype="float32")
        x = np.asarray(x).reshape(-1, 28, 28)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"Cannot read {path} as binarised MNIST (text or MATLAB .amat): {e}") from None
    if x.size and not np.all((x == 0) | (x == 1)):
        raise DataError(f"{path} should hold only 0 and 1, but holds values in [{x.min():g}, {x.max():g}].")
    return x.astype("uint8")


def _find_binarized_mnist(data_dir, download):
    dirs = [d for d in (data_dir, os.environ.get(ENV_DATA_DIR)) if d]
    looked = []
    for d in dirs:
        folder = Path(d) / "binarized_mnist"
        missing = [AMAT_FILES[s] for s in ("train", "valid") if not (folder / AMAT_FILES[s]).is_file()]
        if not missing:
            splits = {s: read_amat(folder / f) for s, f in AMAT_FILES.items() if (folder / f).is_file()}
            return splits, str(folder)
        looked.append(f"{folder} lacks {' and '.join(missing)}")
    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    splits = ("train", "validation", "test")
    prepared = _tfds_load("binarized_mnist", tfds_dir, splits)
    if prepared is None and download:
        prepared = _tfds_load("binarized_mnist", tfds_dir, splits, download=True)
    if prepared:
        return {"train": prepared["train"][0], "valid": prepared["validation"][0],
                "test": prepared["test"][0]}, "TFDS prepared data"
    looked.append(f"no TFDS binarized_mnist prepared in {tfds_dir or 'its default directory'}")
    raise DataNotFoundError(
        f"No binarized_mnist data found offline ({'; '.join(looked)}). Put "
        f"{', '.join(AMAT_FILES.values())} (Larochelle's split; test optional) into "
        f"${ENV_DATA_DIR}/binarized_mnist/ (or pass --data-dir), prepare TFDS's binarized_mnist, "
        "or allow a download with --download."
    )


# ------------------------------------------------------------------ loading
def pixel_scale(arrays, where):
    """How to bring pixel arrays to [0, 1], decided from their VALUES (all
    splits together), never from the dtype alone: integers in {0, 1} (binary
    images stored as uint8, e.g. TFDS's binarized_mnist) are kept, integers in
    0..255 are divided by 255, floats are kept (the model checks their range).

    Args:
        arrays: the splits' pixel arrays (None entries are skipped).
        where: str, names the data in messages.

    Returns:
        (divisor float, note str or None); DataError for integers outside
        0..255 or for integer and float splits mixed.

    Example:
        >>> pixel_scale([np.array([0, 1], np.uint8)], "x")[0], pixel_scale([np.array([0, 200], np.uint8)], "x")[0]
        (1.0, 255.0)
    """
    arrays = [np.asarray(a) for a in arrays if a is not None]
    integer = [np.issubdtype(a.dtype, np.integer) or a.dtype == bool for a in arrays]
    if any(integer) and not all(integer):
        raise DataError(f"{where}: some splits hold integer pixels and others floats "
                        f"({', '.join(str(a.dtype) for a in arrays)}); give every split the same scale.")
    if not arrays or not all(integer):
        return 1.0, None
    lo = min(int(a.min(initial=0)) for a in arrays)
    hi = max(int(a.max(initial=0)) for a in arrays)
    if lo < 0 or hi > 255:
        raise DataError(f"{where}: integer pixels must lie in 0..255 (or be 0/1), found values in [{lo}, {hi}].")
    if hi <= 1:
        return 1.0, "integer pixels with values 0/1: kept as 0/1 (not divided by 255)"
    return 255.0, "integer pixels 0..255: divided by 255"


def _to_unit(x, divisor):
    return (np.asarray(x).astype("float32") / divisor) if divisor != 1 else np.asarray(x).astype("float32")


def labels_array(y, n, where):
    """Labels as int32 [n], or None: refuses a length that differs from the
    images', non-integer values (2.5; a float 3.0 is accepted) and negatives.

    Args:
        y: array [n] or [n, 1], or None; n: int, the number of images;
        where: str, names the data in the message.

    Returns:
        int32 [n] or None.
    """
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim != 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise DataError(f"{where}: labels must be one integer per example, got an array of shape {y.shape}.")
    y = y.reshape(-1)
    if len(y) != n:
        raise DataError(f"{where}: {n} examples but {len(y)} labels.")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating) or y.dtype == bool):
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}.")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{where}: labels must be integers; label {i} is {y[i]!r}.")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"{where}: labels must be >= 0; label {i} is {y[i]}.")
    return y.astype("int32")


def check(x, y=None, *, input_shape=None, unit_interval=None, num_classes=None, where="the data"):
    """Raise DataError naming the problem if arrays cannot train a model.

    Checks the WHOLE arrays: per-example shape (if `input_shape`), numeric
    dtype, NaN/Inf, values in [0, 1] (if `unit_interval` names what needs
    them, e.g. "the bernoulli likelihood"), and labels (if `num_classes`:
    present, one per example, integers in [0, num_classes)).

    Args:
        x: array [N, *input_shape].
        y: labels [N] or None.
        input_shape: tuple or None.
        unit_interval: str or None, what needs values in [0, 1].
        num_classes: int or None (None: labels are not needed, not checked).
        where: how to name the data in the message, e.g. "the test split".

    Example:
        >>> import numpy as np
        >>> check(np.zeros((2, 3)), unit_interval="the bernoulli likelihood")
        >>> check(np.full((2, 3), 255.0), unit_interval="the bernoulli likelihood", where="x")
        Traceback (most recent call last):
        ...
        kvae.data.DataError: x: The bernoulli likelihood needs values in [0, 1]; they range over [255, 255]. Scale them (e.g. x / 255).
    """
    x = np.asarray(x)
    if input_shape is not None:
        check_shape(x.shape, input_shape, where)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: Inputs must be numeric, got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x)
        if not finite.all():
            i = int(np.argmin(finite.reshape(len(x), -1).all(axis=1))) if x.ndim > 1 else int(np.argmin(finite))
            raise DataError(f"{where}: {int((~finite).sum())} NaN or Inf values (the first in example {i}).")
    if unit_interval and x.size and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{where}: {unit_interval[0].upper()}{unit_interval[1:]} needs values in [0, 1]; they "
                        f"range over [{x.min():g}, {x.max():g}]. Scale them (e.g. x / 255).")
    if num_classes is not None:
        if y is None:
            raise DataError(f"{where}: This VAE is conditional (num_classes={num_classes}): pass labels, "
                            "e.g. fit on (x, labels).")
        y = labels_array(y, len(x), where)
        if y.size and y.max() >= num_classes:
            i = int(np.argmax(y))
            raise DataError(f"{where}: Labels must be integers in [0, {num_classes}); label {i} is {y[i]}.")


def check_shape(shape, input_shape, where=None):
    """Raise DataError if a batch's `shape` [N, ...] does not hold examples of
    `input_shape` (the one shape check: the model's forward pass uses it too).

    Args:
        shape: the batch's shape; input_shape: one example's shape;
        where: str or None, names the data in the message.

    Example:
        >>> check_shape((5, 8, 8, 1), (8, 8, 1))
        >>> check_shape((5, 64), (8, 8, 1))
        Traceback (most recent call last):
        ...
        kvae.data.DataError: Input shape (64,) (per example) does not match the model's input_shape (8, 8, 1).
    """
    got = tuple(shape[1:])
    if got != tuple(input_shape):
        prefix = f"{where}: " if where else ""
        raise DataError(f"{prefix}Input shape {got} (per example) does not match the model's input_shape "
                        f"{tuple(input_shape)}.")


def check_label_range(labels, num_classes):
    """Raise DataError unless every label is an integer in [0, num_classes).

    Args:
        labels: int array [N]; num_classes: int.

    Example:
        >>> check_label_range([0, 9], 10)
        >>> check_label_range([3, 10], 10)
        Traceback (most recent call last):
        ...
        kvae.data.DataError: Labels must be integers in [0, 10); got values in [3, 10].
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"Labels must be integers in [0, {num_classes}); got values in "
                        f"[{labels.min()}, {labels.max()}].")


def check_for_model(model, x, y=None, where="the inputs"):
    """Raise DataError naming the problem if data cannot train or evaluate
    `model`: `check` with the model's shape, likelihood range and classes.

    Args:
        model: a `kvae.VAE`.
        x: array [N, *input_shape], or a `tf.data.Dataset` (checked by its
            first batch); generators and PyDatasets are not checked here (the
            step checks shapes when it traces).
        y: labels [N] or None.
        where: how to name the data in the message.

    Returns:
        None; raises DataError (a ValueError) naming the first problem.
    """
    import keras
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        first = next(iter(x.take(1)), None)
        if first is None:
            raise DataError("The dataset is empty.")
        x, y, _ = keras.utils.unpack_x_y_sample_weight(first)
        where = f"{where} (first batch of the dataset)"
    if x is None or not hasattr(x, "shape"):
        return
    unit = f"the {model.likelihood.name} likelihood" if model.likelihood.unit_interval else None
    check(np.asarray(x), None if y is None else np.asarray(y), input_shape=model.data_shape,
          unit_interval=unit, num_classes=model.num_classes, where=where)


def split_validation(validation_data):
    """Split Keras's `validation_data` argument.

    Args:
        validation_data: x, (x,), (x, labels) or a tf.data.Dataset.

    Returns:
        (x, labels or None).
    """
    if isinstance(validation_data, (tuple, list)):
        return validation_data[0], (validation_data[1] if len(validation_data) > 1 else None)
    return validation_data, None


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

    Pixels are scaled by what they are (see `pixel_scale`), and what was done
    is recorded in `Dataset.notes`. Labels are checked (one per example,
    integers >= 0) in every split.

    Args:
        name: 'fashion_mnist', 'mnist', 'binarized_mnist', 'digits', or a path
            to a `.npz` file or a folder of images.
        data_dir: where to look first (else $KVAE_DATA_DIR).
        download: allow keras.datasets / TFDS to download when nothing is found.
        validation_fraction: share of the training set held out for validation
            (binarized_mnist has its own validation split, which is also the test
            split when the test file is absent).
        seed: seeds the validation (and, for user data, test) split.

    Returns:
        Dataset with float32 splits [N, H, W, C] (or [N, D]) and int32 labels or None.
    """
    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    path = Path(str(name)).expanduser()
    num_classes = None
    notes = []
    if name == "digits":
        d = require("sklearn.datasets", "data", "The digits dataset").load_digits()
        x, y = (d.images / 16.0).astype("float32")[..., None], d.target.astype("int32")
        (train, test) = _split_off(x, y, 0.2, seed)
        source, num_classes = "scikit-learn (bundled)", 10
    elif name in ("fashion_mnist", "mnist"):
        train, test, source = _find_mnist_like(name, data_dir, download)
        num_classes = 10
    elif name == "binarized_mnist":
        splits, source = _find_binarized_mnist(data_dir, download)
        divisor, note = pixel_scale(splits.values(), source)
        notes += [note] if note else []
        split = {k: _with_channel(_to_unit(v, divisor)) for k, v in splits.items()}
        # the published protocol: train on all of train, select on valid; without the (withheld)
        # test file the figure is reported on valid too, so the model is the one a test run trains
        train, validation = (split["train"], None), (split["valid"], None)
        test = (split["test"], None) if "test" in split else validation
        if "test" not in split:
            notes.append("no test split: the published valid split selects the model and is reported as "
                         "the test split")
        return Dataset(name, source, train=train, validation=validation, test=test, notes=notes,
                       test_is_validation="test" not in split)
    elif path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"No such file: {path}")
        train, test = read_npz(path)
        if test is None:
            train = (train[0], labels_array(train[1], len(train[0]), f"{path} (y)"))
            train, test = _split_off(*train, 0.1, seed + 1)
        source = str(path)
    elif path.is_dir():
        train, test = _split_off(*read_image_folder(path), 0.1, seed + 1)
        source = f"images in {path}"
    else:
        raise DataError(
            f"Unknown dataset {name!r}: use one of {', '.join(NAMES)}, a .npz file, or a folder of images."
        )
    divisor, note = pixel_scale([train[0], test[0]], source)
    notes += [note] if note else []
    x = _with_channel(_to_unit(train[0], divisor))
    y = labels_array(train[1], len(x), f"{source} (training labels)")
    y_test = labels_array(test[1], len(test[0]), f"{source} (test labels)")
    if y is not None:
        num_classes = num_classes or int(max(y.max(initial=0), y_test.max(initial=0) if y_test is not None else 0)) + 1
    train, validation = _split_off(x, y, validation_fraction, seed)
    test = (_with_channel(_to_unit(test[0], divisor)), y_test)
    if test[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"Train examples have shape {train[0].shape[1:]} but test examples {test[0].shape[1:]}.")
    return Dataset(str(name), source, train, validation, test, num_classes=num_classes, notes=notes)


def read_inputs(source, data_dir=None):
    """Every input of `source`, to score or encode (not to train on).

    Args:
        source: a `.npy` file (the array), a `.npz` file ('x', else 'x_train'
            then 'x_test'), a folder of images (all of them, sub-folders as
            labels), or a dataset name (its test split).
        data_dir: where named datasets are looked for first.

    Returns:
        (x float32 [N, ...] scaled to [0, 1] by `pixel_scale`, with a channel
        axis for images; labels int32 [N] or None; a description of the source).
    """
    path = Path(str(source)).expanduser()
    if str(source) in NAMES:
        ds = load(str(source), data_dir=data_dir)
        return ds.test[0], ds.test[1], f"{ds.source}, test split"
    if path.suffix == ".npy":
        try:
            x, y = np.load(path, allow_pickle=False), None
        except (OSError, ValueError) as e:
            raise DataError(f"Cannot read {path} as a .npy array: {e}") from None
    elif path.suffix == ".npz":
        if not path.is_file():
            raise DataError(f"No such file: {path}")
        (x, y), test = read_npz(path)
        if test is not None:
            x = np.concatenate([x, test[0]])
            y = None if y is None or test[1] is None else np.concatenate([y, test[1]])
    elif path.is_dir():
        x, y = read_image_folder(path)
    else:
        raise DataError(f"Cannot read inputs from {source!r}: give a .npy or .npz file, a folder of images, "
                        f"or one of {', '.join(NAMES)}.")
    if np.asarray(x).ndim < 2 or not len(x):
        raise DataError(f"{path} holds no inputs (shape {np.shape(x)}).")
    divisor, _ = pixel_scale([x], str(path))
    x = _with_channel(_to_unit(x, divisor))
    return x, labels_array(y, len(x), f"{path} (labels)"), str(path)


# -------------------------------------------------------------- binarisation
def binarize(x, mode, seed=0):
    """Binarise pixels in [0, 1].

    Args:
        x: float array in [0, 1].
        mode: 'threshold' (x > 0.5), 'static' (one fixed Bernoulli(x) draw,
            seeded), 'none' or 'dynamic' (x unchanged; `pipeline` draws per batch).
        seed: int.

    Returns:
        float32 array like x.

    Example:
        >>> binarize(np.array([0.2, 0.7]), "threshold")
        array([0., 1.], dtype=float32)
    """
    if mode not in BINARIZE:
        raise DataError(f"Unknown binarisation {mode!r}: choose one of {', '.join(BINARIZE)}.")
    if mode == "threshold":
        return (x > 0.5).astype("float32")
    if mode == "static":
        return (np.random.default_rng(seed).uniform(size=x.shape) < x).astype("float32")
    return x


def pipeline(x, y=None, batch_size=128, shuffle=True, seed=0, dynamic_binarize=False,
             drop_remainder=False, epoch=None, perturb=0.0, shard=None):
    """A tf.data pipeline of batches of x (or (x, y)).

    Shuffles indices (not images) and gathers each batch from one in-memory
    tensor, or reads it from disk when x is a `kvae.sources.Subset` (pixels
    stay in their stored dtype until the batch is formed); optionally draws a
    new Bernoulli(x) binarisation of every batch ('dynamic' binarisation).
    tf.data runs on a private one-thread pool with autotune off, which leaves
    the cores to the training step (bench/RESULTS.md).

    With `epoch` (an int64 `tf.Variable` that `kvae.callbacks.SetEpoch` keeps
    at the current epoch) the order and the binarisation draws are a function
    of (seed, epoch) alone, so a run resumed at epoch k sees exactly the data
    an uninterrupted run would. Without it, tf.data reshuffles every pass. A
    Subset is read in the same order with the same draws as the same array in
    memory. A `kvae.sources.TFRecordSource` (sequential) is shuffled by shard
    order and a bounded buffer, both drawn from (seed, epoch).

    `perturb` > 0 replaces that share of the pixels of every batch, drawn
    anew each epoch, by noise: uniform in [0, 1] before a dynamic
    binarisation (which makes it a fair coin), a random 0/1 on data that is
    already binary, uniform otherwise (Ren et al. 2019's background model).

    `shard=(index, count)` is one worker's part of a multi-worker run: the
    batches are the global batches of `batch_size` (whole ones only), and this
    pipeline yields rows [index * b, (index + 1) * b) of each, b = batch_size
    / count. An array or Subset reads only those rows; a TFRecordSource reads
    every record and keeps its rows. Noise is drawn for the global batch and
    sliced, so the workers' parts together are exactly the batch one device
    would see.

    Args:
        x: float32 [N, ...], a kvae.sources.Subset or a kvae.sources.TFRecordSource;
        y: int [N] or None (a TFRecordSource brings its own labels: pass True to use them);
        batch_size: int >= 1; shuffle: bool; seed: int; dynamic_binarize: bool;
        drop_remainder: bool; epoch: int64 tf.Variable or None;
        perturb: float in [0, 1), share of pixels replaced by noise;
        shard: (index, count) or None.

    Returns:
        tf.data.Dataset of x batches (or (x, y) batches).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}.")
    if not 0 <= perturb < 1:
        raise DataError(f"perturb must be in [0, 1), got {perturb}.")
    index, count = shard or (0, 1)
    if count < 1 or not 0 <= index < count or batch_size % count:
        raise DataError(f"batch size {batch_size} cannot be split into {count} equal parts "
                        f"(part {index}): use a multiple of {count}.")
    lo, hi = index * (batch_size // count), (index + 1) * (batch_size // count)
    drop_remainder = drop_remainder or count > 1
    seed64 = tf.constant(seed, tf.int64)
    if hasattr(x, "files") and hasattr(x, "manifest"):  # a prepared TFRecord split: sequential
        divisor = float(x.manifest.get("divisor", 1.0))
        binary_data = bool(perturb) and not dynamic_binarize and x.manifest.get("binary", False)
        with_labels = y is not None and y is not False
        ds = x.dataset(seed, epoch, shuffle).batch(batch_size, drop_remainder=drop_remainder)
        channel = [1] if len(x.shape) == 2 else []

        def fetch(xb, yb, idx):  # -> this part's (pixels, labels, positions), first position
            first = idx[0]
            if count > 1:
                xb, yb, idx = xb[lo:hi], yb[lo:hi], idx[lo:hi]
            xb = tf.reshape(tf.cast(xb, tf.float32), [-1, *x.shape, *channel])
            return (xb / divisor if divisor != 1 else xb), yb, idx, first
        n = x.n
    else:
        n = len(x)
        labels = None if y is None else tf.constant(np.asarray(y, "int32"))
        if hasattr(x, "read") and hasattr(x, "indices"):  # a kvae.sources.Subset, read from disk
            shape = tuple(x.shape[1:])
            sample = x.read(np.arange(min(n, 1000))) if perturb and not dynamic_binarize else None
            binary_data = sample is not None and bool(np.isin(sample, (0, 1)).all())

            def read(idx):
                xb = tf.numpy_function(x.read, [idx], tf.float32, stateful=False)
                return tf.ensure_shape(xb, (None, *shape))
        else:
            binary_data = bool(perturb) and not dynamic_binarize and bool(np.isin(x, (0, 1)).all())
            images = tf.constant(x)
            read = (lambda idx: tf.gather(images, idx))
        with_labels = labels is not None
        ds = tf.data.Dataset.range(n)
        if shuffle and epoch is None:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if shuffle and epoch is not None:  # a batch of positions at a time: 10x faster than one by one
            ds = ds.map(lambda i: tf.random.experimental.index_shuffle(
                i, tf.stack([seed64, tf.cast(epoch.read_value(), tf.int64)]), n - 1))
        def fetch(positions):
            idx = positions[lo:hi] if count > 1 else positions  # only this part's rows are read
            return read(idx), tf.gather(labels, idx) if with_labels else None, idx, positions[0]

    def draw(xb, first, salt):  # uniform noise keyed by (seed, epoch, salt, first position of the global batch)
        shape = tf.shape(xb)
        if count > 1:  # drawn for the global batch, of which this part takes its rows
            shape = tf.concat([[batch_size], shape[1:]], 0)
        if epoch is None:
            noise = tf.random.uniform(shape, seed=seed + salt)
        else:
            key = tf.stack([seed64 * 1_000_003 + tf.cast(epoch.read_value(), tf.int64) + salt * 7_919, first])
            noise = tf.random.stateless_uniform(shape, seed=key)
        return noise[lo:hi] if count > 1 else noise

    def finish(*batch):
        xb, yb, _, first = fetch(*batch)
        if perturb:
            noise = draw(xb, first, 1)
            noise = tf.round(noise) if binary_data else noise
            xb = tf.where(draw(xb, first, 2) < perturb, noise, xb)
        if dynamic_binarize:
            xb = tf.cast(draw(xb, first, 0) < xb, tf.float32)
        return (xb, yb) if with_labels else xb

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return ds.map(finish).prefetch(1).with_options(options)
