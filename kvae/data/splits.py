"""The one way kvae draws splits and orders epochs: held-out indices from a
seeded permutation, the caps on held-out splits kept in memory, and the
stateless (seed, epoch) key that every shuffle and noise draw is keyed by."""

import numpy as np

__all__ = ["split_indices", "split_off", "check_split_sizes", "heldout_cap", "stream_splits", "epoch_key", "block_shuffle",
           "MAX_HELDOUT", "HELDOUT_FLOATS"]


MAX_HELDOUT = 10_000  # examples per held-out split of a streamed source ...

HELDOUT_FLOATS = 1 << 26  # ... and at most 256 MB of float32 each (they are kept in memory)


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


def split_off(x, y, fraction, seed):
    """Split a seeded share off in-memory arrays (the draw of `split_indices`).

    Args:
        x: array [N, ...]; y: labels [N] or None; fraction: share held out; seed: int.

    Returns:
        ((x kept, y kept), (x held, y held)); y parts are None when y is.
    """
    kept, held = split_indices(len(x), fraction, seed)
    pick = (lambda a, i: None if a is None else a[i])
    return (x[kept], pick(y, kept)), (x[held], pick(y, held))


def heldout_cap(shape):
    """The most examples of this shape a held-out split keeps in memory.

    Args:
        shape: one example's shape.

    Returns:
        int >= 1.
    """
    return max(1, min(MAX_HELDOUT, HELDOUT_FLOATS // max(1, int(np.prod(shape)))))


def stream_splits(n, shape, validation_fraction, seed):
    """The splits of a streamed source: the draws `load_arrays` makes for user data
    (test: 10% with seed + 1; validation: a share of the rest with seed), each
    held-out split capped by `heldout_cap` (it is kept in memory).

    Args:
        n: examples; shape: one example's shape; validation_fraction: float in (0, 1); seed: int.

    Returns:
        (train, validation, test) int64 index arrays.
    """
    cap = heldout_cap(shape)
    kept, test = split_indices(n, 0.1, seed + 1, cap)
    train, validation = split_indices(len(kept), validation_fraction, seed, cap)
    return kept[train], kept[validation], test


def epoch_key(seed, epoch):
    """The int64 key of an epoch's order and noise: a function of (seed, epoch) alone.

    Args:
        seed: int; epoch: int64 tf.Variable (read when called) or None (epoch 0).

    Returns:
        int64 scalar tensor.
    """
    import tensorflow as tf

    epoch = tf.cast(epoch.read_value(), tf.int64) if epoch is not None else tf.constant(0, tf.int64)
    return tf.constant(seed, tf.int64) * 1_000_003 + epoch


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


def check_split_sizes(where, train, validation, test):
    """Refuse data too small to split: every split needs an example.

    Args:
        where: str, the data's name for the message; train, validation, test: int, the splits' sizes.

    Raises:
        DataError naming the data, how many examples it has and what each split needs.
    """
    from kvae.data.errors import DataError

    if min(train, validation, test) < 1:
        total = train + validation + test
        raise DataError(f"{where} has {total} example{'s' if total != 1 else ''}, too few to split: train, validation "
                        f"and test need at least one each (here {train}, {validation} and {test}); give at least 3, "
                        "and many more to learn anything.")
