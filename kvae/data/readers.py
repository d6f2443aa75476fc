"""Readers of whole files into arrays: IDX (the MNIST format), `.npz`, folders
of images, Larochelle's binarised-MNIST `.amat` (text or MATLAB)."""

import gzip
import zipfile
from pathlib import Path

import numpy as np

from kvae.data.errors import DataError
from kvae.extras import require

__all__ = ["IMAGE_SUFFIXES", "IDX_FILES", "AMAT_FILES", "GREY_MODES", "read_idx", "read_idx_folder", "read_npz",
           "read_image_folder", "read_amat"]


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


AMAT_FILES = {s: f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}

#: Pillow modes read as one grey channel
GREY_MODES = ("1", "L", "LA", "I", "I;16")


def read_idx(path):
    """An IDX file (the MNIST format), gzipped or not, as a numpy array.

    Args:
        path: str or Path.

    Returns:
        numpy uint8 array of the shape the header gives.
    """
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
    x = read_idx(images)
    y = read_idx(labels).astype("int32")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels.")
    return x, y


def read_idx_folder(folder):
    """(train, test) from a folder of the four MNIST-format files, or None.

    Args:
        folder: str or Path.

    Returns:
        ((x, y), (x, y)) or None if a file is missing.
    """
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
