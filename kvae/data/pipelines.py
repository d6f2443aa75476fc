"""Binarisation and the tf.data pipeline that feeds `fit` from arrays, `Subset`s
(read from disk by index) and sequential sources."""

import numpy as np

from kvae.data.errors import DataError
from kvae.data.subset import Subset
from kvae.data.sequential import SequentialSource
from kvae.data.splits import epoch_key

__all__ = ["BINARIZE", "binarize", "pipeline"]


BINARIZE = ("none", "threshold", "static", "dynamic")


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
    tensor, or reads it from disk when x is a `kvae.data.Subset` (pixels
    stay in their stored dtype until the batch is formed); optionally draws a
    new Bernoulli(x) binarisation of every batch ('dynamic' binarisation).
    tf.data runs on a private one-thread pool with autotune off, which leaves
    the cores to the training step (bench/RESULTS.md).

    With `epoch` (an int64 `tf.Variable` that `kvae.callbacks.SetEpoch` keeps
    at the current epoch) the order and the binarisation draws are a function
    of (seed, epoch) alone, so a run resumed at epoch k sees exactly the data
    an uninterrupted run would. Without it, tf.data reshuffles every pass. A
    Subset is read in the same order with the same draws as the same array in
    memory. A `kvae.data.SequentialSource` (TFRecord shards, TFDS data) is shuffled
    by its own order and a bounded buffer, both drawn from (seed, epoch).

    `perturb` > 0 replaces that share of the pixels of every batch, drawn
    anew each epoch, by noise: uniform in [0, 1] before a dynamic
    binarisation (which makes it a fair coin), a random 0/1 on data that is
    already binary, uniform otherwise (Ren et al. 2019's background model).

    `shard=(index, count)` is one worker's part of a multi-worker run: the
    batches are the global batches of `batch_size` (whole ones only), and this
    pipeline yields rows [index * b, (index + 1) * b) of each, b = batch_size
    / count. An array or Subset reads only those rows; a SequentialSource reads
    every record and keeps its rows. Noise is drawn for the global batch and
    sliced, so the workers' parts together are exactly the batch one device
    would see.

    Args:
        x: float32 [N, ...], a kvae.data.Subset or a kvae.data.SequentialSource;
        y: int [N] or None (a SequentialSource brings its own labels: pass True to use them);
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
    if isinstance(x, SequentialSource):
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
        if isinstance(x, Subset):  # read from disk
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
            key = tf.stack([epoch_key(seed, epoch) + salt * 7_919, first])
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
