"""Named datasets found offline: Fashion-MNIST, MNIST, binarised MNIST, digits.

A named set resolves, without a network, from (in order):
  1. a data directory: the `data_dir` argument, else $KVAE_DATA_DIR;
  2. the Keras cache, $KERAS_HOME/datasets (default ~/.keras/datasets);
  3. TFDS prepared data (`tfds.load(..., download=False)`) in `data_dir` or
     $TFDS_DATA_DIR (default ~/tensorflow_datasets);
  4. Debian's `dataset-fashion-mnist` files in /usr/share/datasets/fashion-mnist.
With `download=True` (where a network exists) keras.datasets or TFDS may then
download. If nothing is found, `DataNotFoundError` says what to install or
which files to put where.
"""

import os
from pathlib import Path

import numpy as np

from kvae.data.errors import DataError, DataNotFoundError
from kvae.data.readers import AMAT_FILES, IDX_FILES, read_amat, read_idx_folder, read_npz
from kvae.extras import require

__all__ = ["NAMES", "ENV_DATA_DIR", "DEBIAN_FASHION_MNIST", "find_mnist_like", "find_binarized_mnist"]


NAMES = ("fashion_mnist", "mnist", "binarized_mnist", "digits")

ENV_DATA_DIR = "KVAE_DATA_DIR"

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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

    import logging

    absl = logging.getLogger("absl")
    level, absl.level = absl.level, logging.ERROR  # "Variant folder ... has no dataset_info.json": a lookup, not news
    try:
        datasets = tfds.load(name, split=list(splits), data_dir=data_dir, download=download)
    except (AssertionError, FileNotFoundError, KeyError, tfds.core.registered.DatasetNotFoundError):
        return None  # KeyError: a version folder without prepared splits ("splits is empty")
    finally:
        absl.setLevel(level)
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
        found = read_idx_folder(sub)
        if found:
            return (*found, str(sub))
    return None


def find_mnist_like(name, data_dir, download):
    """Fashion-MNIST or MNIST from the first offline place that holds it (see the module).

    Args:
        name: 'fashion_mnist' or 'mnist'; data_dir: str or None; download: bool.

    Returns:
        ((x_train, y_train), (x_test, y_test), where it was found).

    Raises:
        DataNotFoundError naming every place looked in.
    """
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
        found = read_idx_folder(cache / "fashion-mnist")
        if found:
            return (*found, f"Keras cache {cache / 'fashion-mnist'}")
    tfds_dir = data_dir or os.environ.get("TFDS_DATA_DIR")
    looked.append(f"TFDS prepared data in {tfds_dir or '~/tensorflow_datasets'}")
    prepared = _tfds_load(name, tfds_dir)
    if prepared and "train" in prepared and "test" in prepared:
        return prepared["train"], prepared["test"], "TFDS prepared data"
    if name == "fashion_mnist":
        looked.append(str(DEBIAN_FASHION_MNIST))
        found = read_idx_folder(DEBIAN_FASHION_MNIST)
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


def find_binarized_mnist(data_dir, download):
    """Larochelle's statically binarised MNIST (.amat files, or prepared TFDS data).

    Args:
        data_dir: str or None; download: bool.

    Returns:
        ({split: array}, where it was found); the test split may be absent.

    Raises:
        DataNotFoundError naming each folder looked in and the files it lacks.
    """
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
