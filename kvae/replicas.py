"""Replica plumbing for `tf.distribute`: per-replica noise, replica-aware
sampling seeds, cross-replica batch statistics.

Under a strategy with N replicas each replica sees 1/N of the global batch,
and Keras sums the replicas' gradients. Three things must hold for N replicas
to take exactly the step one device takes on the same global batch:

  * noise: one global draw, of which each replica takes its own rows (a
    replica must neither repeat another's noise nor see different noise
    than the single device would);
  * sampling that cannot be written as a transform of Gaussian noise (the
    power spherical's Beta draw) is drawn for the gathered global batch and
    sliced, since TFP's samplers are element-wise in (seed, position);
  * a statistic of the batch inside the loss (free bits, capacity) is a
    mean over the GLOBAL batch: sum over replicas / global count. The
    all-reduce is differentiable (its gradient is again an all-reduce), so
    every replica's examples get their share of the gradient.

Outside a strategy (or with one replica) every function is the identity
or the plain computation, at no cost.

Example:
    >>> import tensorflow as tf
    >>> from kvae import replicas
    >>> replicas.batch_mean(tf.constant([[1.0, 2.0], [3.0, 4.0]])).numpy()
    array([2., 3.], dtype=float32)
    >>> tuple(replicas.noise(tf.constant([0, 1]), 4, [3]).shape)
    (4, 3)
"""

import tensorflow as tf

__all__ = ["context", "noise", "gather", "batch_mean", "global_batch_size", "int32_seed", "multi_worker",
           "keras_logs"]


def context():
    """(replica context or None, number of replicas, this replica's id).

    Returns:
        (ctx, replicas, replica_id); ctx is None and the counts are (1, 0)
        outside any replica context (e.g. the cross-replica context).
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None, 1, 0
    return ctx, ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group


def _offsets(ctx, batch_size):
    """(start of this replica's rows in the global batch, global batch size);
    replicas may hold different numbers of rows (the last, partial batch)."""
    sizes = ctx.all_gather(tf.reshape(tf.cast(batch_size, tf.int32), [1]), axis=0)
    start = tf.reduce_sum(sizes[: ctx.replica_id_in_sync_group])
    return start, tf.reduce_sum(sizes)


def global_batch_size(batch_size):
    """The global batch size: the sum of every replica's `batch_size`.

    Args:
        batch_size: int32 scalar tensor, this replica's rows.

    Returns:
        int32 scalar tensor.
    """
    ctx, _, _ = context()
    return batch_size if ctx is None else _offsets(ctx, batch_size)[1]


def noise(seed, batch_size, event_shape):
    """Standard normal noise [batch_size, *event_shape] for this replica.

    One global draw of [global batch, *event_shape] from the stateless `seed`
    (the same on every replica); each replica takes its own rows.

    Args:
        seed: int [2] tensor (int32 or int64).
        batch_size: int or int32 scalar tensor, this replica's batch.
        event_shape: list of int, the shape of one example's noise.

    Returns:
        float32 tensor [batch_size, *event_shape].
    """
    ctx, _, _ = context()
    # Philox named explicitly rather than TF's "auto_select". XLA's sampler
    # gives another stream than the CPU kernel for the same seed, so the noise
    # (not its distribution) depends on jit_compile.
    if ctx is None:
        shape = tf.concat([[batch_size], event_shape], axis=0)
        return tf.random.stateless_normal(shape, seed=seed, alg="philox")
    start, total = _offsets(ctx, batch_size)
    eps = tf.random.stateless_normal(tf.concat([[total], event_shape], axis=0), seed=seed, alg="philox")
    return eps[start : start + batch_size]


def gather(t):
    """This replica's rows `t` [B, ...] and the global batch they belong to.

    Args:
        t: tensor [B, ...].

    Returns:
        (global_t [B_global, ...], start): `global_t[start:start + B]` is `t`.
        Differentiable: the gradient of the gathered tensor flows back to each
        replica's own rows.
    """
    ctx, _, _ = context()
    if ctx is None:
        return t, 0
    start, _ = _offsets(ctx, tf.shape(t)[0])
    return ctx.all_gather(t, axis=0), start


def batch_mean(t):
    """The mean of `t` [B, ...] over the global batch: [...].

    Args:
        t: float tensor [B, ...], one row per example of this replica.

    Returns:
        float32 tensor [...]: sum over all replicas' rows / global row count.
    """
    t = tf.cast(t, tf.float32)
    ctx, _, _ = context()
    if ctx is None:
        return tf.reduce_mean(t, axis=0)
    total, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                  [tf.reduce_sum(t, axis=0), tf.cast(tf.shape(t)[0], tf.float32)])
    return total / count


def int32_seed(seed):
    """A stateless seed for samplers that take int32 seeds only (TFP's),
    derived from all the bits of `seed` (int32 or int64 [2]).

    A cast would wrap: seeds that differ by 2**32 would collide. This hashes
    the whole seed with one stateless draw instead.

    Args:
        seed: int [2] tensor.

    Returns:
        int32 [2] tensor.
    """
    return tf.random.stateless_uniform([2], seed=seed, minval=None, maxval=None, dtype=tf.int32, alg="philox")


def multi_worker(strategy):
    """Whether `strategy` runs across several workers.

    Args:
        strategy: a tf.distribute strategy.

    Returns:
        bool.
    """
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


def keras_logs(logs, strategy):
    """A train/test step's logs as Keras can reduce them under `strategy`:
    Keras 3 reduces logs with strategy.reduce(MEAN, axis=0) in multi-worker
    mode, which fails on scalars (tensorflow#72388), so they become [1] there.

    Args:
        logs: dict {name: scalar tensor}; strategy: the model's strategy.

    Returns:
        dict.
    """
    if multi_worker(strategy):
        return {k: tf.reshape(v, [1]) for k, v in logs.items()}
    return logs

