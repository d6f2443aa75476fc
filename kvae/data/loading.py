"""Loading a dataset: in memory (`load_arrays`) or with the train split streamed
from disk (`load_streamed`), behind one entry point, `load`; and `read_inputs`,
every input of a file or folder to score or encode."""

from pathlib import Path

import numpy as np

from kvae.data.checks import check, labels_array, pixel_scale, to_unit, with_channel
from kvae.data.dataset import Dataset
from kvae.data.errors import DataError
from kvae.data.named import NAMES, find_binarized_mnist, find_mnist_like
from kvae.data.readers import read_image_folder, read_npz
from kvae.data.sequential import INFO, MANIFEST, TFDSSource, TFRecordSource, find_prepared
from kvae.data import subset
from kvae.data.sources import open_source
from kvae.data.subset import Subset, scale_of
from kvae.data.splits import check_split_sizes, heldout_cap, split_off, stream_splits
from kvae.extras import require

__all__ = ["load", "load_arrays", "load_streamed", "must_stream", "read_inputs"]


def load(name, data_dir=None, download=False, validation_fraction=0.1, seed=0, stream=False, unit=None,
         threshold=False):
    """The one way to get a dataset: a `Dataset` of train / validation / test splits.

    In memory (`load_arrays`), unless `stream` is set or the data can only be
    streamed (a `.npy` file, a folder written by `kvae data prepare`, prepared
    TFDS data): then the train split is read from disk a batch at a time
    (`load_streamed`) and only the held-out splits are in memory. Either way the
    splits are the draws of `kvae.data.splits` (the same examples, streamed or
    not, for a `.npy`/`.npz`/image folder), pixels are scaled by what they are,
    and what was done is in `Dataset.notes`.

    Args:
        name: str, one of `NAMES`, a `.npz` or `.npy` file, a folder of images, a
            folder written by `kvae data prepare`, or prepared TFDS data.
        data_dir: str or None, where named data is looked for first.
        download: bool, let keras.datasets / TFDS download when nothing is found.
        validation_fraction: float in (0, 1), the share of training data held out.
        seed: int, seeds the splits.
        stream: bool, read the training split from disk.
        unit: str or None, streamed only: what needs pixels in [0, 1] (checked as read, named in errors).
        threshold: bool, streamed only: binarise at 0.5 as read.

    Returns:
        Dataset.

    Raises:
        DataError: data that cannot be used, naming the file.
        DataNotFoundError: a named dataset that no offline source holds.

    Example:
        >>> ds = load("digits")
        >>> ds.input_shape, ds.num_classes, len(ds.test[0])
        ((8, 8, 1), 10, 359)
    """
    if stream or must_stream(name):
        return load_streamed(name, validation_fraction, seed, unit=unit, threshold=threshold, data_dir=data_dir)
    return load_arrays(name, data_dir=data_dir, download=download, validation_fraction=validation_fraction, seed=seed)


def must_stream(name):
    """Whether `name` can only be streamed: a `.npy`, a prepared folder, or the directory of prepared TFDS data.

    Args:
        name: str or Path.

    Returns:
        bool.
    """
    path = Path(str(name)).expanduser()
    return path.suffix == ".npy" or (path / MANIFEST).is_file() or (path / INFO).is_file()


def load_arrays(name, data_dir=None, download=False, validation_fraction=0.1, seed=0):
    """A named dataset, a `.npz` file or a folder of images, in memory, as a `Dataset`.

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
        (train, test) = split_off(x, y, 0.2, seed)
        source, num_classes = "scikit-learn (bundled)", 10
    elif name in ("fashion_mnist", "mnist"):
        train, test, source = find_mnist_like(name, data_dir, download)
        num_classes = 10
    elif name == "binarized_mnist":
        splits, source = find_binarized_mnist(data_dir, download)
        divisor, note = pixel_scale(splits.values(), source)
        notes += [note] if note else []
        split = {k: with_channel(to_unit(v, divisor)) for k, v in splits.items()}
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
            train, test = split_off(*train, 0.1, seed + 1)
        source = str(path)
    elif path.is_dir():
        train, test = split_off(*read_image_folder(path), 0.1, seed + 1)
        source = f"images in {path}"
    else:
        raise DataError(
            f"Unknown dataset {name!r}: use one of {', '.join(NAMES)}, a .npz file, or a folder of images."
        )
    divisor, note = pixel_scale([train[0], test[0]], source)
    notes += [note] if note else []
    x = with_channel(to_unit(train[0], divisor))
    y = labels_array(train[1], len(x), f"{source} (training labels)")
    y_test = labels_array(test[1], len(test[0]), f"{source} (test labels)")
    if y is not None:
        num_classes = num_classes or int(max(y.max(initial=0), y_test.max(initial=0) if y_test is not None else 0)) + 1
    train, validation = split_off(x, y, validation_fraction, seed)
    test = (with_channel(to_unit(test[0], divisor)), y_test)
    check_split_sizes(source, len(train[0]), len(validation[0]), len(test[0]))
    if test[0].shape[1:] != train[0].shape[1:]:
        raise DataError(f"Train examples have shape {train[0].shape[1:]} but test examples {test[0].shape[1:]}.")
    return Dataset(str(name), source, train, validation, test, num_classes=num_classes, notes=notes)


def load_streamed(name, validation_fraction=0.1, seed=0, unit=None, threshold=False, data_dir=None):
    """A `kvae.data.Dataset` whose train split streams from disk.

    The train split is a `Subset` (or, for a prepared folder, its
    `TFRecordSource`); validation and test are read into memory (at most
    10,000 examples or 256 MB of float32 each). For a `.npy`, `.npz` or image
    folder the splits are the same draws `kvae.data.load` makes in memory
    (unless a cap applies). The first batch of the train split is read and
    checked here, before any training step.

    Args:
        name: a path `open_source` reads, or prepared TFDS data (`kvae.data.sequential.TFDSSource`:
        a dataset name or the directory holding its dataset_info.json);
        validation_fraction: float in (0, 1); seed: int; unit: what needs values
        in [0, 1], or None; threshold: binarise as `kvae.data.binarize(x,
        'threshold')` when read; data_dir: where prepared TFDS data lives.

    Returns:
        kvae.data.Dataset.
    """
    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    prepared = find_prepared(name, data_dir)
    if prepared is not None:
        return _load_tfds(name, prepared, validation_fraction, unit, threshold)
    src = open_source(name)
    notes = [f"streamed from disk ({type(src).__name__})"]
    if isinstance(src, TFRecordSource):
        m = src.manifest
        if unit and (m["min"] < 0 or m["max"] / m["divisor"] > 1):
            raise DataError(f"{src.path}: {unit[0].upper()}{unit[1:]} needs values in [0, 1]; the prepared data "
                            f"ranges over [{m['min']:g}, {m['max'] / m['divisor']:g}].")
        if threshold:
            raise DataError(f"{src.path}: --binarize threshold is not applied to prepared data; prepare binary "
                            "data, or use --binarize dynamic or none.")
        held = {}
        for split in ("validation", "test"):
            part = TFRecordSource(src.path, split)
            xs, ys = zip(*[(x, y) for x, y, _ in part.dataset(shuffle=False).batch(4096).as_numpy_iterator()])
            x = np.concatenate(xs).astype(np.float32) / m["divisor"]
            held[split] = (x[..., None] if x.ndim == 3 else x, np.concatenate(ys) if src.has_labels else None)
        notes += m.get("notes", [])
        return Dataset(str(name), f"{src.path} (prepared by kvae data prepare)",
                       train=(src, True if src.has_labels else None),
                       validation=held["validation"], test=held["test"], num_classes=m.get("num_classes"),
                       notes=notes)
    labels = labels_array(src.labels, src.n, f"{src.where} (labels)")
    divisor, note = scale_of(src)
    notes += [note] if note else []
    train, validation, test = (Subset(src, i, divisor, unit, threshold)
                               for i in stream_splits(src.n, src.shape, validation_fraction, seed))
    check_split_sizes(src.where, len(train), len(validation), len(test))
    train.read(np.arange(min(len(train), 256)))  # the first batch, checked before any step
    num_classes = int(labels.max()) + 1 if labels is not None else None
    out = Dataset(str(name), src.where, train=(train, train.labels),
                  validation=(validation.load(), validation.labels), test=(test.load(), test.labels),
                  num_classes=num_classes, notes=notes)
    for split in ("validation", "test"):
        check(*getattr(out, split), unit_interval=unit, where=f"{src.where}, {split} split")
    return out


def _load_tfds(name, directory, validation_fraction=0.1, unit=None, threshold=False):
    """A `kvae.data.Dataset` whose train split streams from prepared TFDS data
    (validation: the last share of 'train'; test: 'test', both capped and in memory).

    Args:
        name: what the user gave; directory: `find_prepared(name)`;
        validation_fraction: float in (0, 1); unit: what needs values in [0, 1],
        or None; threshold: refused (prepare binary data, or binarise dynamically).

    Returns:
        kvae.data.Dataset.
    """
    if threshold:
        raise DataError(f"{name}: --binarize threshold is not applied to streamed TFDS data; use --binarize "
                        "dynamic or none.")
    whole = TFDSSource(directory, "train", where=name)
    splits = whole.builder.info.splits
    cap = heldout_cap(whole.shape)
    n = whole.n
    n_val = min(cap, max(1, round(n * validation_fraction)))
    if "test" in splits:
        test_split, n_test = f"test[:{min(cap, splits['test'].num_examples)}]", 0
    else:
        n_test = min(cap, max(1, round(n * 0.1)))
        test_split = f"train[{n - n_val - n_test}:{n - n_val}]"
    if n - n_val - n_test < 1:
        raise DataError(f"{directory}: {n} training examples are too few to hold out validation and test.")
    first = whole.load(min(n, subset.SAMPLE_ROWS))[0]
    divisor, note = pixel_scale([first], str(directory))
    train = TFDSSource(directory, f"train[:{n - n_val - n_test}]", divisor, where=name)
    held = {}
    for split, spec in (("validation", f"train[{n - n_val}:]"), ("test", test_split)):
        x, y = TFDSSource(directory, spec, divisor, where=name).load()
        x = x.astype(np.float32) / np.float32(divisor)
        held[split] = (x[..., None] if x.ndim == 3 else x, y)
    notes = [f"streamed from prepared TFDS data ({directory})", *([note] if note else [])]
    out = Dataset(str(name), f"TFDS {directory}", train=(train, True if train.has_labels else None),
                  validation=held["validation"], test=held["test"], num_classes=train.manifest["num_classes"],
                  notes=notes)
    for split in ("validation", "test"):
        check(*getattr(out, split), unit_interval=unit, where=f"{directory}, {split} split")
    return out


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
        ds = load_arrays(str(source), data_dir=data_dir)
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
    x = with_channel(to_unit(x, divisor))
    return x, labels_array(y, len(x), f"{path} (labels)"), str(path)
