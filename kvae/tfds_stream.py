"""Prepared TensorFlow Datasets (TFDS) data, streamed: `kvae train --dataset
NAME --stream` (or the directory holding its `dataset_info.json`) reads the
TFDS shards a batch at a time instead of loading the splits into memory.

TFDS is read offline from what `tfds.load(..., download=True)` or `tfds
build` left on disk (`--data-dir`, `$TFDS_DATA_DIR`, `~/tensorflow_datasets`),
through `tfds.builder_from_directory`, so the dataset's builder code is not
needed. The reading is sequential (TFDS's own record files): an epoch's order
is a function of (seed, epoch) by permuting blocks of 10,000 records
(`kvae.sources.block_shuffle`), as for `kvae data prepare`'s folders. The
splits are TFDS's: validation is the last share of `train` (TFDS slicing),
test is `test` (or the share of `train` before validation if there is no
test split); held-out splits are capped as for the other streamed sources
and read into memory. These splits are not the draws that `kvae.data.load`
makes for the same data in memory, so streamed and in-memory runs of a TFDS
dataset do not see the same examples.

Example:
    >>> find_prepared("surely_not_a_prepared_dataset.npy", None) is None
    True
"""

import os
from pathlib import Path

import numpy as np

from kvae.data import DataError
from kvae.extras import require

__all__ = ["TFDSSource", "find_prepared", "load", "INFO"]

INFO = "dataset_info.json"


def _version(path):
    try:
        return tuple(int(p) for p in path.name.split("."))
    except ValueError:
        return ()


def find_prepared(name, data_dir=None):
    """The directory of prepared TFDS data that `name` stands for, or None.

    Args:
        name: a directory holding dataset_info.json, or a TFDS name
        ('mnist', 'mnist/3.0.1') looked up under data_dir, $TFDS_DATA_DIR
        or ~/tensorflow_datasets (the newest version found).
        data_dir: str or None.

    Returns:
        Path or None (then `name` is not prepared TFDS data).
    """
    path = Path(str(name)).expanduser()
    if (path / INFO).is_file():
        return path
    if path.exists() or path.suffix or path.is_absolute():
        return None
    root = Path(data_dir or os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets").expanduser()
    found = sorted((p.parent for p in (root / str(name)).glob(f"**/{INFO}")), key=_version)
    return found[-1] if found else None


class TFDSSource:
    """One (sliced) split of prepared TFDS image data, read sequentially; the
    interface of `kvae.sources.TFRecordSource` (what `kvae.data.pipeline` reads).

    Args:
        directory: the prepared dataset's directory (dataset_info.json);
        split: a TFDS split, e.g. 'train[:54000]'; divisor: the pixel scale
        (decided by `load` from the first rows; 1: 0/1 pixels, checked as read;
        None: not known yet, not checked); where: the name for messages.
    """

    def __init__(self, directory, split, divisor=None, where=None):
        tfds = require("tensorflow_datasets", "data", "Streaming TFDS data")
        self.directory, self.split = Path(directory), split
        self.where = f"{where or directory} ({split})"
        try:
            self.builder = tfds.builder_from_directory(str(directory))
            info = self.builder.info
            self.n = int(info.splits[split].num_examples)
        except (ValueError, KeyError, OSError, AssertionError) as e:
            raise DataError(f"Cannot read prepared TFDS data {directory} ({split}): {e}") from None
        features = info.features
        if "image" not in features:
            raise DataError(f"{directory}: kvae streams TFDS image data (a feature 'image'); "
                            f"this dataset has {sorted(features.keys())}.")
        self.shape = tuple(features["image"].shape)
        if None in self.shape:
            raise DataError(f"{directory}: its images have no fixed shape ({self.shape}); kvae needs one shape.")
        self.shape = self.shape[:-1] if self.shape[-1] == 1 else self.shape
        self.dtype = np.dtype(features["image"].np_dtype)
        self.has_labels = "label" in features
        classes = getattr(features["label"], "num_classes", None) if self.has_labels else None
        self.manifest = {"divisor": float(divisor or 1), "binary": divisor == 1, "labels": self.has_labels,
                         "num_classes": classes}
        self.files = sorted(self.directory.glob("*.tfrecord*"))

    def __len__(self):
        return self.n

    def dataset(self, seed=0, epoch=None, shuffle=True, buffer=10_000):
        """(pixels [*shape] in the stored dtype, label int32 or -1, int64 position) as
        `kvae.sources.TFRecordSource.dataset`; with divisor 1 (0/1 pixels) an
        integer pixel above 1 stops the run naming the dataset and the example.

        Args:
            seed: int; epoch: int64 tf.Variable or None; shuffle: bool; buffer: block size.

        Returns:
            tf.data.Dataset.
        """
        import tensorflow as tf

        from kvae.sources import block_shuffle

        shape, labels, binary = self.shape, self.has_labels, self.manifest["binary"]
        message = (f"DataError: {self.where}: integer pixels above 1 where the first rows were all 0/1, "
                   "in the example at position")

        def convert(i, ex):
            x = tf.reshape(ex["image"], shape)
            if binary:
                with tf.control_dependencies([tf.debugging.Assert(tf.reduce_max(x) <= 1, [message, i])]):
                    x = tf.identity(x)
            y = tf.cast(ex["label"], tf.int32) if labels else tf.constant(-1, tf.int32)
            return x, y, i

        ds = self.builder.as_dataset(split=self.split, shuffle_files=False).enumerate().map(convert)
        if not shuffle:
            return ds

        def one_pass(_):  # the key is read when each pass starts
            key = tf.constant(seed, tf.int64) * 1_000_003 + (tf.cast(epoch.read_value(), tf.int64)
                                                            if epoch is not None else 0)
            return block_shuffle(ds, key, buffer)

        return tf.data.Dataset.from_tensors(0).flat_map(one_pass)

    def load(self, limit=None):
        """(pixels [n, *shape] raw, labels int32 or None) of the first `limit` examples, in order."""
        got = self.dataset(shuffle=False)
        got = got.take(limit) if limit else got
        xs, ys = [], []
        for x, y, _ in got.batch(4096).as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not xs:
            return np.zeros((0, *self.shape), self.dtype), None
        return np.concatenate(xs), (np.concatenate(ys) if self.has_labels else None)


def load(name, directory, validation_fraction=0.1, unit=None, threshold=False):
    """A `kvae.data.Dataset` whose train split streams from prepared TFDS data
    (validation: the last share of 'train'; test: 'test', both capped and in memory).

    Args:
        name: what the user gave; directory: `find_prepared(name)`;
        validation_fraction: float in (0, 1); unit: what needs values in [0, 1],
        or None; threshold: refused (prepare binary data, or binarise dynamically).

    Returns:
        kvae.data.Dataset.
    """
    from kvae.data import Dataset, check, pixel_scale
    from kvae.sources import SAMPLE_ROWS, _heldout_cap

    if threshold:
        raise DataError(f"{name}: --binarize threshold is not applied to streamed TFDS data; use --binarize "
                        "dynamic or none.")
    whole = TFDSSource(directory, "train", where=name)
    splits = whole.builder.info.splits
    cap = _heldout_cap(whole.shape)
    n = whole.n
    n_val = min(cap, max(1, round(n * validation_fraction)))
    if "test" in splits:
        test_split, n_test = f"test[:{min(cap, splits['test'].num_examples)}]", 0
    else:
        n_test = min(cap, max(1, round(n * 0.1)))
        test_split = f"train[{n - n_val - n_test}:{n - n_val}]"
    if n - n_val - n_test < 1:
        raise DataError(f"{directory}: {n} training examples are too few to hold out validation and test.")
    first = whole.load(min(n, SAMPLE_ROWS))[0]
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
