"""Sequential sources: TFRecord shards written by `kvae data prepare`
(`TFRecordSource`) and prepared TensorFlow Datasets data (`TFDSSource`), both
read in order and shuffled by (seed, epoch) through one base, `SequentialSource`.

TFDS is read offline from what `tfds.load(..., download=True)` or `tfds
build` left on disk (`--data-dir`, `$TFDS_DATA_DIR`, `~/tensorflow_datasets`),
through `tfds.builder_from_directory`, so the dataset's builder code is not
needed.

Example:
    >>> find_prepared("surely_not_a_prepared_dataset.npy", None) is None
    True
"""

import json
import os
from pathlib import Path

import numpy as np

from kvae.data.errors import DataError
from kvae.data.splits import block_shuffle, epoch_key
from kvae.extras import require

__all__ = ["SequentialSource", "TFRecordSource", "TFDSSource", "find_prepared", "MANIFEST", "INFO"]


#: the manifest of a folder written by `kvae data prepare`
MANIFEST = "kvae-data.json"
#: the file that marks a directory of prepared TFDS data
INFO = "dataset_info.json"


class SequentialSource:
    """Examples read in order, never by index (TFRecord shards, TFDS record files):
    what `kvae.data.pipeline` streams from when it cannot gather by position.

    An epoch's order is a function of (seed, epoch): `records(key, shuffle)`
    gives one pass (a subclass may reorder its files by `key`), and each block
    of `buffer` consecutive records is permuted by a draw from (key, block)
    (`kvae.data.splits.block_shuffle`), so memory is bounded by one block.

    Attributes: `where` (str, for messages), `n`, `shape` (one example,
    without a channel axis for grey images), `dtype` (as stored), `has_labels`,
    `files` (the record files), `manifest` (dict: `divisor`, the pixel scale;
    `binary`, whether the pixels are 0/1; `labels`; `num_classes`).
    """

    where, n, shape, dtype, has_labels, files, manifest = "the data", 0, (), np.dtype("uint8"), False, (), {}

    def __len__(self):
        return self.n

    def records(self, key, shuffle):
        """One pass: a tf.data.Dataset of (pixels [*shape] in the stored dtype, label
        int32 or -1, the example's int64 position in its split).

        Args:
            key: int64 scalar tensor (`kvae.data.splits.epoch_key`); shuffle: bool.

        Returns:
            tf.data.Dataset.
        """
        raise NotImplementedError

    def dataset(self, seed=0, epoch=None, shuffle=True, buffer=10_000):
        """Every record once, as `records`, in the order of (seed, epoch) when shuffling.

        Args:
            seed: int; epoch: int64 tf.Variable (read when each pass starts) or None;
            shuffle: bool; buffer: records per shuffled block.

        Returns:
            tf.data.Dataset.
        """
        import tensorflow as tf

        def one_pass(_):
            key = epoch_key(seed, epoch)
            ds = self.records(key, shuffle)
            return block_shuffle(ds, key, buffer) if shuffle else ds

        return tf.data.Dataset.from_tensors(0).flat_map(one_pass)


class TFRecordSource(SequentialSource):
    """One split of a folder written by `kvae data prepare`: TFRecord shards
    of raw pixels (and labels), described by `kvae-data.json`.

    Reading is sequential; `dataset(seed, epoch)` visits the shards in an
    order drawn from (seed, epoch) and permutes each block of `buffer`
    consecutive records by a draw from (seed, epoch, block), so an epoch's
    order is a function of (seed, epoch) and memory is bounded by one block.
    Opening checks every shard's length against the manifest (a truncated
    shard is named before the first step); a record that fails its checksum
    mid-shard stops training with TensorFlow's DataLossError.

    Args:
        path: the prepared folder; split: 'train', 'validation' or 'test'.
    """

    def __init__(self, path, split="train"):
        self.path = Path(path)
        try:
            self.manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"Cannot read {self.path / MANIFEST}: {e}") from None
        if split not in self.manifest["splits"]:
            raise DataError(f"{self.path} has no {split} split (it has {', '.join(self.manifest['splits'])}).")
        info = self.manifest["splits"][split]
        self.where = f"{self.path} ({split})"
        self.shape, self.dtype = tuple(self.manifest["shape"]), np.dtype(self.manifest["dtype"])
        self.n, self.has_labels = int(info["examples"]), bool(self.manifest.get("labels"))
        self.files = [self.path / s["file"] for s in info["shards"]]
        for shard, f in zip(info["shards"], self.files):
            size = f.stat().st_size if f.exists() else None
            if size != shard["bytes"]:
                what = "is missing" if size is None else f"has {size} bytes but {MANIFEST} says {shard['bytes']}"
                raise DataError(f"The shard {f} {what}: the prepared data is damaged; prepare it again.")

    def records(self, key, shuffle):
        """One pass over the shards (in an order drawn from `key` when shuffling)."""
        import tensorflow as tf

        files = tf.constant([str(f) for f in self.files])
        shape, dtype = self.shape, tf.as_dtype(self.dtype)
        features = {"x": tf.io.FixedLenFeature([], tf.string), "y": tf.io.FixedLenFeature([], tf.int64, -1),
                    "i": tf.io.FixedLenFeature([], tf.int64)}

        def parse(record):
            ex = tf.io.parse_single_example(record, features)
            return tf.reshape(tf.io.decode_raw(ex["x"], dtype), shape), tf.cast(ex["y"], tf.int32), ex["i"]

        order = tf.range(len(self.files), dtype=tf.int64)
        if shuffle:
            order = tf.map_fn(lambda i: tf.random.experimental.index_shuffle(
                i, tf.stack([key, tf.constant(7, tf.int64)]), len(self.files) - 1), order)
        return tf.data.TFRecordDataset(tf.gather(files, order)).map(parse)


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


class TFDSSource(SequentialSource):
    """One (sliced) split of prepared TFDS image data, read sequentially; the
    `SequentialSource` that `kvae.data.pipeline` reads.

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

    def records(self, key, shuffle):
        """One pass over the split in TFDS's order; with divisor 1 (0/1 pixels) an
        integer pixel above 1 stops the run naming the dataset and the example."""
        import tensorflow as tf

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

        return self.builder.as_dataset(split=self.split, shuffle_files=False).enumerate().map(convert)

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
