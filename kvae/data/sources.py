"""Sources read by index: data read from disk a batch at a time, never whole.

A `Source` holds `n` examples of one `shape`; `read(indices)` returns their raw
pixels (uint8 stays uint8). Only the indices, the labels and one batch live in
memory. `kvae.data.pipeline` turns a `Subset` (a source and the indices of one
split) into batches in the same order, with the same noise, as the same array
in memory. `NpySource` reads a `.npy` (or an uncompressed `.npz` member) by rows
with `os.pread` (a memory map would count every page in resident memory);
`ImageFolderSource` decodes images with Pillow when their batch is read;
`open_source` picks the source for a path (`kvae.data.sequential` has the
sources read in order). Headers are checked when a source opens, pixels as each
batch is read, and a failure names the file and the row.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.arange(24, dtype=np.uint8).reshape(4, 2, 3))
    >>> src = NpySource(path)
    >>> src.n, src.shape, src.read([3, 0])[:, 0, 0].tolist()
    (4, (2, 3), [18, 0])
"""

import os
import zipfile
from pathlib import Path

import numpy as np

from kvae.data.errors import DataError
from kvae.data.readers import GREY_MODES, IMAGE_SUFFIXES
from kvae.data.sequential import MANIFEST, TFRecordSource
from kvae.extras import require

__all__ = ["Source", "ArraySource", "NpySource", "ImageFolderSource", "open_source", "is_streamable"]

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
                self.mode = "L" if im.mode in GREY_MODES else "RGB"
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
                    grey = im.mode in GREY_MODES
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