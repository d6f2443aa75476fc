"""Streaming sources: data read from disk a batch at a time, never whole.

A `Source` holds `n` examples of one `shape` and reads any of them by index:
`read(indices)` returns their raw pixels (uint8 stays uint8) as numpy. Only
the indices, the labels and one batch live in memory, so data may be far
larger than RAM. `kvae.data.pipeline` turns a `Subset` (a source and the
indices of one split) into batches, converting pixels to float32 only when a
batch is formed, in the same order and with the same noise draws as the
in-memory pipeline: the same data streamed or in memory trains the same
weights (tests/test_sources.py).

Sources:
  - `NpySource`: a `.npy` file, or an array stored (not compressed) in a
    `.npz`, read row by row with `os.pread` at the offsets its header gives.
    (A memory map would read the same bytes, but every page it touches counts
    in the process's resident memory, and one epoch touches all of them.)
  - `ImageFolderSource`: every image below a folder (sub-folders as labels),
    decoded with Pillow when its batch is read.
  - `TFRecordSource`: shards written by `prepare` (`kvae data prepare`):
    sequential, so shuffled by shard order and a bounded buffer.

Checks: what the headers tell (shape, dtype, size, every shard's length)
is checked when the source opens; pixels are checked as each batch is read
(NaN/Inf, range, a changed image size), and a failure names the file (and
the row). `open_source` picks the source for a path.

Over 350 lines: four readers, the split draws that must match kvae.data's,
and `prepare`, which writes what `TFRecordSource` reads, are kept together.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(24, dtype=np.uint8).reshape(4, 2, 3))
    >>> src = NpySource(path)
    >>> src.n, src.shape, src.read([3, 0])[:, 0, 0].tolist()
    (4, (2, 3), [18, 0])
"""

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from kvae.data import IMAGE_SUFFIXES, DataError
from kvae.extras import require

__all__ = ["Source", "ArraySource", "NpySource", "ImageFolderSource", "TFRecordSource", "Subset",
           "open_source", "is_streamable", "split_indices", "scale_of", "load", "prepare", "as_data_error", "block_shuffle",
           "MANIFEST", "SAMPLE_ROWS"]

MANIFEST = "kvae-data.json"
SAMPLE_ROWS = 10_000  # rows read up front to decide the pixel scale
MAX_HELDOUT = 10_000  # examples per held-out split of a streamed source ...
HELDOUT_FLOATS = 1 << 26  # ... and at most 256 MB of float32 each (they are kept in memory)


class Source:
    """Examples of one shape, read by index.

    Attributes: `where` (str, names the data in messages), `n`, `shape` (one
    example, without a batch axis), `dtype`, `labels` (int32 [n] or None),
    `classes` (names of the labels or None).
    """

    where, n, shape, dtype, labels, classes = "the data", 0, (), np.dtype("uint8"), None, None

    def read(self, indices):
        """The examples at `indices`.

        Args:
            indices: int array [B], each in [0, n).

        Returns:
            numpy [B, *shape] of `dtype`.
        """
        raise NotImplementedError

    def name_of(self, index):
        """Where example `index` lives, for messages.

        Args:
            index: int.

        Returns:
            str.
        """
        return self.where


class ArraySource(Source):
    """An in-memory array as a source (for tests and small data).

    Args:
        x: array [N, ...]; y: labels [N] or None; where: str.
    """

    def __init__(self, x, y=None, where="the array"):
        self.x, self.where = np.asarray(x), where
        self.n, self.shape, self.dtype = len(self.x), tuple(self.x.shape[1:]), self.x.dtype
        self.labels = None if y is None else np.asarray(y, "int32")

    def read(self, indices):
        return self.x[np.asarray(indices)]


def _npy_header(f, where):
    """(shape, dtype) from an open .npy stream positioned at its magic string."""
    try:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(f)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"Cannot read {where} as a .npy array: {e}") from None
    if fortran and len(shape) > 1:
        raise DataError(f"{where} is stored in Fortran order; save it with np.save(np.ascontiguousarray(x)).")
    if dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == bool):
        raise DataError(f"{where}: Inputs must be numeric, got dtype {dtype}.")
    if len(shape) < 2 or not shape[0]:
        raise DataError(f"{where} holds no examples (shape {shape}).")
    return tuple(shape), dtype


class NpySource(Source):
    """A `.npy` file, or one array of an uncompressed `.npz`, read by rows.

    Args:
        path: str or Path. member: the array's name in a `.npz` (e.g. 'x').
        labels: int array [N] or None (labels are small: read whole).
    """

    def __init__(self, path, member=None, labels=None):
        self.path = Path(path)
        self.where = f"{self.path}" + (f" ({member})" if member else "")
        try:
            with open(self.path, "rb") as f:
                if member is None:
                    (self.n, *shape), self.dtype = _npy_header(f, self.where)
                    self.offset = f.tell()
                else:
                    info = zipfile.ZipFile(f).getinfo(f"{member}.npy")
                    if info.compress_type != zipfile.ZIP_STORED:
                        raise DataError(f"{self.where} is compressed (np.savez_compressed), so it cannot be read "
                                        "by rows: save it with np.savez or np.save, or convert it once with "
                                        "`kvae data prepare`.")
                    f.seek(info.header_offset + 26)
                    name_len, extra_len = np.frombuffer(f.read(4), "<u2")
                    f.seek(info.header_offset + 30 + int(name_len) + int(extra_len))
                    (self.n, *shape), self.dtype = _npy_header(f, self.where)
                    self.offset = f.tell()
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"Cannot read {self.where}: {e}") from None
        self.shape = tuple(shape)
        self.row = int(np.prod(self.shape)) * self.dtype.itemsize
        need = self.offset + self.n * self.row
        size = self.path.stat().st_size
        if size < need:
            raise DataError(f"{self.where} is truncated: its header promises {self.n} examples of shape "
                            f"{self.shape} ({need} bytes) but the file has {size} bytes.")
        self.labels = None if labels is None else np.asarray(labels)
        self._fd = None

    def read(self, indices):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        indices = np.asarray(indices, np.int64)
        out = bytearray(len(indices) * self.row)
        view = memoryview(out)
        for j, i in enumerate(indices):  # pread: no shared file position, safe from tf.data's threads
            chunk = os.pread(self._fd, self.row, self.offset + int(i) * self.row)
            if len(chunk) != self.row:
                raise DataError(f"{self.where}: example {i} could not be read (the file shrank?).")
            view[j * self.row:(j + 1) * self.row] = chunk
        return np.frombuffer(out, self.dtype).reshape((len(indices), *self.shape))

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_fd"} | {"_fd": None}

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


_GREY = ("1", "L", "LA", "I", "I;16")  # as kvae.data.read_image_folder


class ImageFolderSource(Source):
    """Every image below a folder, decoded a batch at a time.

    The first image (in sorted order) sets the shape: its size, and one
    channel if it is greyscale, else three. An image of another size or
    channel count, or one that cannot be decoded, raises DataError naming it
    when its batch is read. Images in sub-folders get the sub-folder's
    (sorted) index as their label.

    Args:
        path: str or Path of a folder.
    """

    def __init__(self, path):
        self.image = require("PIL.Image", "data", "Reading image folders")
        self.path = Path(path)
        self.where = f"images in {self.path}"
        self.files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise DataError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {self.path}.")
        try:
            with self.image.open(self.files[0]) as im:  # reads the header only
                w, h = im.size
                self.mode = "L" if im.mode in _GREY else "RGB"
        except (self.image.UnidentifiedImageError, OSError) as e:
            raise DataError(f"Cannot read the image {self.files[0]}: {e}") from None
        self.n, self.dtype = len(self.files), np.dtype("uint8")
        self.shape = (h, w) if self.mode == "L" else (h, w, 3)
        folders = [str(f.parent.relative_to(self.path)) for f in self.files]
        if all(d != "." for d in folders):
            self.classes = sorted(set(folders))
            self.labels = np.searchsorted(self.classes, folders).astype("int32")

    def name_of(self, index):
        return str(self.files[index])

    def read(self, indices):
        out = np.empty((len(indices), *self.shape), np.uint8)
        for j, i in enumerate(np.asarray(indices)):
            f = self.files[int(i)]
            try:
                with self.image.open(f) as im:
                    grey = im.mode in _GREY
                    if (im.size[1], im.size[0]) != self.shape[:2] or grey != (self.mode == "L"):
                        got = f"{im.size[0]}x{im.size[1]} {'greyscale' if grey else 'colour'}"
                        first = f"{self.shape[1]}x{self.shape[0]} {'greyscale' if self.mode == 'L' else 'colour'}"
                        raise DataError(f"{f} is {got} but the folder's first image ({self.files[0].name}) "
                                        f"is {first}: every image must have one size and channel count.")
                    out[j] = np.asarray(im.convert(self.mode))
            except (self.image.UnidentifiedImageError, OSError, SyntaxError) as e:
                raise DataError(f"Cannot read the image {f}: {e}") from None
        return out

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "image"}

    def __setstate__(self, state):
        self.__dict__.update(state, image=require("PIL.Image", "data", "Reading image folders"))


class TFRecordSource:
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

    def __len__(self):
        return self.n

    def dataset(self, seed=0, epoch=None, shuffle=True, buffer=10_000):
        """A tf.data.Dataset of (pixels [*shape] in the stored dtype, label int32 or -1,
        the example's int64 position in its split).

        Args:
            seed: int; epoch: int64 tf.Variable or None; shuffle: bool;
            buffer: examples in the shuffle buffer.

        Returns:
            tf.data.Dataset.
        """
        import tensorflow as tf

        files = tf.constant([str(f) for f in self.files])
        shape, dtype = self.shape, tf.as_dtype(self.dtype)
        features = {"x": tf.io.FixedLenFeature([], tf.string), "y": tf.io.FixedLenFeature([], tf.int64, -1),
                    "i": tf.io.FixedLenFeature([], tf.int64)}

        def parse(record):
            ex = tf.io.parse_single_example(record, features)
            return tf.reshape(tf.io.decode_raw(ex["x"], dtype), shape), tf.cast(ex["y"], tf.int32), ex["i"]

        def one_pass(_):
            key = tf.constant(seed, tf.int64) * 1_000_003 + (tf.cast(epoch.read_value(), tf.int64)
                                                            if epoch is not None else 0)
            order = tf.range(len(self.files), dtype=tf.int64)
            if shuffle:
                order = tf.map_fn(lambda i: tf.random.experimental.index_shuffle(
                    i, tf.stack([key, tf.constant(7, tf.int64)]), len(self.files) - 1), order)
            ds = tf.data.TFRecordDataset(tf.gather(files, order)).map(parse)
            return block_shuffle(ds, key, buffer) if shuffle else ds

        return tf.data.Dataset.from_tensors(0).flat_map(one_pass)


def block_shuffle(ds, key, buffer):
    """A bounded, stateless shuffle of a sequential dataset of tuples: each
    block of `buffer` consecutive elements is permuted by a draw from (key, block).

    Args:
        ds: tf.data.Dataset of tuples of tensors; key: int64 scalar tensor; buffer: int.

    Returns:
        tf.data.Dataset.
    """
    import tensorflow as tf

    blocks = ds.batch(buffer).enumerate().map(lambda b, block: tuple(
        tf.gather(t, tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(block[0])[0]), seed=tf.stack([key, b]))) for t in block))
    return blocks.unbatch()


def is_streamable(name):
    """Whether `name` is a path that `open_source` can stream.

    Args:
        name: a dataset name or path.

    Returns:
        bool.
    """
    path = Path(str(name)).expanduser()
    return path.suffix in (".npy", ".npz") or path.is_dir()


def open_source(name):
    """The streaming source for a path: a prepared TFRecord folder (returns
    the `TFRecordSource` of its train split), an image folder, a `.npy`, or
    an uncompressed `.npz` (its 'x' or 'x_train' array; 'x_test' is not
    streamed: the held-out splits come from the one array).

    Args:
        name: str or Path.

    Returns:
        a Source or TFRecordSource.
    """
    path = Path(str(name)).expanduser()
    if path.is_dir():
        return TFRecordSource(path) if (path / MANIFEST).exists() else ImageFolderSource(path)
    if not path.is_file():
        raise DataError(f"No such file or folder: {path}")
    if path.suffix == ".npy":
        return NpySource(path)
    if path.suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                names = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"Cannot read {path} as a .npz file: {e}") from None
        x = "x" if "x" in names else "x_train" if "x_train" in names else None
        if x is None:
            raise DataError(f"{path} holds {sorted(names)}; kvae needs 'x_train' or 'x'.")
        y = {"x": "y", "x_train": "y_train"}[x]
        labels = None
        if y in names:
            with np.load(path, allow_pickle=False) as f:
                labels = f[y]
        return NpySource(path, member=x, labels=labels)
    raise DataError(f"Cannot stream {path}: give a .npy or .npz file, an image folder, or a folder written "
                    "by `kvae data prepare`.")


def split_indices(n, fraction, seed, cap=None):
    """Seeded held-out indices, the same draw as `kvae.data.load` makes in memory.

    Args:
        n: examples; fraction: share held out; seed: int; cap: at most this many held out.

    Returns:
        (kept int64 [n - k], held int64 [k]), each in the order of the draw.
    """
    idx = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction))) if n > 1 else 0
    k = min(k, cap) if cap else k
    return idx[k:], idx[:k]


class Subset:
    """The examples of `source` at `indices` (one split), scaled to [0, 1] as they are read.

    Args:
        source: a Source; indices: int array; divisor: the pixel scale
        (`kvae.data.pixel_scale`); unit: what needs values in [0, 1], or None;
        threshold: binarise (x > 0.5) after the checks.
    """

    def __init__(self, source, indices, divisor=1.0, unit=None, threshold=False):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.divisor, self.unit, self.threshold = float(divisor), unit, threshold
        channel = (1,) if len(source.shape) == 2 else ()
        self.shape = (len(self.indices), *source.shape, *channel)

    def __len__(self):
        return len(self.indices)

    @property
    def labels(self):
        """int32 labels of the split's examples, or None."""
        return None if self.source.labels is None else self.source.labels[self.indices]

    def read(self, positions):
        """float32 [B, *shape[1:]] of the examples at `positions` (0..len-1), checked.

        Args:
            positions: int array.

        Returns:
            numpy float32.
        """
        index = self.indices[np.asarray(positions, np.int64)]
        raw = self.source.read(index)
        x = raw.astype(np.float32)
        if self.divisor != 1:
            x /= self.divisor
        x = x.reshape((len(index), *self.shape[1:]))
        flat = x.reshape(len(x), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if self.unit:
            bad |= (flat.min(axis=1) < 0) | (flat.max(axis=1) > 1)
        if bad.any():
            j = int(np.argmax(bad))
            row = flat[j]
            what = ("holds NaN or Inf" if not np.isfinite(row).all() else
                    f"has values in [{row.min():g}, {row.max():g}] but {self.unit} needs [0, 1]"
                    + (" (integer pixels above 1 where the first rows were all 0/1)" if self.divisor == 1
                       and np.issubdtype(raw.dtype, np.integer) else ""))
            raise DataError(f"{self.source.name_of(int(index[j]))}: example {int(index[j])} {what}.")
        return (x > 0.5).astype(np.float32) if self.threshold else x

    def load(self):
        """Every example of the split, float32 (for the small held-out splits).

        Returns:
            numpy float32 [len, ...].
        """
        out = np.empty(self.shape, np.float32)
        for start in range(0, len(self), 4096):
            out[start:start + 4096] = self.read(np.arange(start, min(start + 4096, len(self))))
        return out


def _heldout_cap(shape):
    return max(1, min(MAX_HELDOUT, HELDOUT_FLOATS // max(1, int(np.prod(shape)))))


def _splits(n, shape, validation_fraction, seed):
    """(train, validation, test) index arrays: the draws `kvae.data.load` makes for
    user data (test: 10% with seed + 1; validation: a share of the rest with seed),
    each held-out split capped (it is kept in memory)."""
    cap = _heldout_cap(shape)
    kept, test = split_indices(n, 0.1, seed + 1, cap)
    train, validation = split_indices(len(kept), validation_fraction, seed, cap)
    return kept[train], kept[validation], test


def scale_of(source):
    """The pixel scale of a source, from its first `SAMPLE_ROWS` examples
    (`kvae.data.pixel_scale`); later rows are checked as they are read.

    Args:
        source: a Source.

    Returns:
        (divisor, note or None).
    """
    from kvae.data import pixel_scale

    divisor, note = pixel_scale([source.read(np.arange(min(source.n, SAMPLE_ROWS)))], source.where)
    return divisor, (f"{note} (decided from the first {min(source.n, SAMPLE_ROWS)} examples)" if note else None)


def load(name, validation_fraction=0.1, seed=0, unit=None, threshold=False, data_dir=None):
    """A `kvae.data.Dataset` whose train split streams from disk.

    The train split is a `Subset` (or, for a prepared folder, its
    `TFRecordSource`); validation and test are read into memory (at most
    10,000 examples or 256 MB of float32 each). For a `.npy`, `.npz` or image
    folder the splits are the same draws `kvae.data.load` makes in memory
    (unless a cap applies). The first batch of the train split is read and
    checked here, before any training step.

    Args:
        name: a path `open_source` reads, or prepared TFDS data (`kvae.tfds_stream`:
        a dataset name or the directory holding its dataset_info.json);
        validation_fraction: float in (0, 1); seed: int; unit: what needs values
        in [0, 1], or None; threshold: binarise as `kvae.data.binarize(x,
        'threshold')` when read; data_dir: where prepared TFDS data lives.

    Returns:
        kvae.data.Dataset.
    """
    from kvae import tfds_stream
    from kvae.data import Dataset, check, labels_array

    if not 0 < validation_fraction < 1:
        raise DataError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    prepared = tfds_stream.find_prepared(name, data_dir)
    if prepared is not None:
        return tfds_stream.load(name, prepared, validation_fraction, unit, threshold)
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
                               for i in _splits(src.n, src.shape, validation_fraction, seed))
    train.read(np.arange(min(len(train), 256)))  # the first batch, checked before any step
    num_classes = int(labels.max()) + 1 if labels is not None else None
    out = Dataset(str(name), src.where, train=(train, train.labels),
                  validation=(validation.load(), validation.labels), test=(test.load(), test.labels),
                  num_classes=num_classes, notes=notes)
    for split in ("validation", "test"):
        check(*getattr(out, split), unit_interval=unit, where=f"{src.where}, {split} split")
    return out


def prepare(name, out, validation_fraction=0.1, seed=0, shard_bytes=64 << 20, verbose=1):
    """Write a source's splits as TFRecord shards that `TFRecordSource` reads
    (`kvae data prepare`): the splits `load` would draw, every example checked
    (numeric, finite, integer pixels in 0..255) on the way. The folder appears
    whole or not at all (written beside `out`, renamed when complete).

    Args:
        name: a `.npy`, `.npz` or image folder; out: the folder to create
        (must not exist); validation_fraction, seed: as in `load`;
        shard_bytes: start a new shard after this many bytes; verbose: 0 or 1 (progress bar).

    Returns:
        dict, the manifest written to `out/kvae-data.json`.
    """
    import keras
    import tensorflow as tf

    from kvae import files

    out = Path(out)
    if out.exists():
        raise DataError(f"--out {out} exists; choose a new folder (nothing was written).")
    src = open_source(name)
    if isinstance(src, TFRecordSource):
        raise DataError(f"{name} is already prepared.")
    splits = dict(zip(("train", "validation", "test"), _splits(src.n, src.shape, validation_fraction, seed)))
    integer = np.issubdtype(src.dtype, np.integer) or src.dtype == bool
    lo, hi = np.inf, -np.inf
    manifest = {"format": "kvae-tfrecord-1", "source": src.where, "shape": list(src.shape),
                "dtype": src.dtype.name, "labels": src.labels is not None, "seed": seed,
                "validation_fraction": validation_fraction, "splits": {}}
    bar = keras.utils.Progbar(src.n, unit_name="example") if verbose else None
    with files.atomic_path(out, directory=True) as tmp:
        for split, indices in splits.items():
            shards, writer, written = [], None, 0
            for start in range(0, len(indices), 1024):
                batch = indices[start:start + 1024]
                x = src.read(batch)
                flat = x.reshape(len(x), -1)
                bad = ~np.isfinite(flat).all(axis=1) if not integer else np.zeros(len(x), bool)
                if integer:
                    bad |= (flat.min(axis=1) < 0) | (flat.max(axis=1) > 255)
                if bad.any():
                    j = int(np.argmax(bad))
                    raise DataError(f"{src.name_of(int(batch[j]))}: example {int(batch[j])} "
                                    + ("holds NaN or Inf." if not integer else "has integer pixels outside 0..255."))
                lo, hi = min(lo, float(flat.min())), max(hi, float(flat.max()))
                for j, (row, i) in enumerate(zip(x, batch)):
                    if writer is None or written >= shard_bytes:
                        if writer is not None:
                            writer.close()
                        shards.append({"file": f"{split}-{len(shards):05d}.tfrecord", "examples": 0})
                        writer, written = tf.io.TFRecordWriter(str(tmp / shards[-1]["file"])), 0
                    feature = {"x": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])),
                               "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[start + j]))}
                    if src.labels is not None:
                        feature["y"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(src.labels[i])]))
                    record = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
                    writer.write(record)
                    written += len(record)
                    shards[-1]["examples"] += 1
                if bar:
                    bar.add(len(batch))
            if writer is not None:
                writer.close()
            for s in shards:
                s["bytes"] = (tmp / s["file"]).stat().st_size
            manifest["splits"][split] = {"examples": int(len(indices)), "shards": shards}
        if integer and hi > 1:
            divisor, note = 255.0, "integer pixels 0..255: divided by 255"
        else:
            divisor, note = 1.0, ("integer pixels with values 0/1: kept as 0/1 (not divided by 255)"
                                  if integer else None)
        labels = src.labels
        manifest.update(min=lo, max=hi, divisor=divisor, notes=[note] if note else [],
                        binary=bool(hi <= 1 and lo >= 0 and integer),
                        num_classes=int(labels.max()) + 1 if labels is not None else None,
                        classes=src.classes)
        files.write_json(tmp / MANIFEST, manifest)
    return manifest


def as_data_error(error):
    """The DataError a failed tf.data read stands for, or None.

    A DataError raised while a batch is read inside tf.data reaches the
    caller as a TensorFlow OpError whose text holds it; a TFRecord that fails
    its checksum is a DataLossError.

    Args:
        error: an exception.

    Returns:
        DataError with the original one-line message, or None.
    """
    text = str(error)
    if "DataError: " in text:
        line = text.split("DataError: ", 1)[1].splitlines()[0]
        # a tf.debugging.Assert's data prints as "message] [value]"
        return DataError(re.sub(r"\] \[(-?\d+)\]\s*$", r" \1.", line))
    if type(error).__name__ == "DataLossError":
        first = text.strip().splitlines()[0] if text.strip() else "unreadable record"
        return DataError(f"A TFRecord shard is damaged ({first}); prepare the data again with `kvae data prepare`.")
    return None
