"""Several training steps in one XLA program.

Keras runs `steps_per_execution` steps per call into TensorFlow, but with
`jit_compile=True` each step is still its own XLA program launch. On a small
MLP those launches cost about a tenth of the time (bench/RESULTS.md). With XLA on
one device, `VAE.fit` instead pulls an execution's batches, stacks those with
the first batch's shapes, and runs `train_step` over them in a while loop
traced into ONE XLA program; a batch of another shape (an epoch's short last
one) gets a jitted step of its own. Same batches, same order, same updates.

    >>> import kvae.fused
    >>> kvae.fused.MAX_BYTES > 0
    True
"""

import tensorflow as tf

__all__ = ["MAX_BYTES", "applies", "train_steps", "train_function"]

#: At most this many bytes of batches are stacked into one program (the stack
#: is a copy); 0 turns fusing off (one XLA program per step, Keras's loop).
MAX_BYTES = 64 << 20


def applies(model):
    """Whether `model.fit` fuses its steps: XLA on, more than one step per
    execution, graph mode, and one device with no strategy scope.

    Args:
        model: a compiled keras.Model.

    Returns:
        bool.
    """
    return (MAX_BYTES > 0 and model.jit_compile is True and model.steps_per_execution > 1
            and not model.run_eagerly and not tf.distribute.has_strategy()
            and isinstance(model.distribute_strategy, type(tf.distribute.get_strategy())))


def train_steps(model, stacked):
    """`model.train_step` on each batch of `stacked` in turn, as a while loop.

    Args:
        model: the keras.Model.
        stacked: a batch structure whose every leaf is [n, batch, ...].

    Returns:
        the last step's logs.
    """
    n = tf.nest.flatten(stacked)[0].shape[0]

    def body(i):
        model.train_step(tf.nest.map_structure(lambda t: t[i], stacked))
        return (i + 1,)

    if n > 1:
        tf.while_loop(lambda i: i < n - 1, body, (tf.constant(0),))
    return model.train_step(tf.nest.map_structure(lambda t: t[n - 1], stacked))


def _shapes(batch):
    return [tuple(t.shape) for t in tf.nest.flatten(batch)]


def train_function(model, per_execution):
    """The fused train function for `model` (see the module docstring).

    Args:
        model: a compiled keras.Model for which `applies(model)`.
        per_execution: Keras's own train function, used for iterators that
            are not `tf.data` iterators.

    Returns:
        a function(iterator) -> logs, as `keras.Model.train_function`.
    """
    fused = tf.function(lambda stacked: train_steps(model, stacked), jit_compile=True, autograph=False)
    one = tf.function(model.train_step, jit_compile=True, autograph=False, reduce_retracing=True)

    def function(iterator):
        if not isinstance(iterator, tf.data.Iterator):
            return per_execution(iterator)
        batches = []
        for _ in range(model.steps_per_execution):
            try:
                batches.append(next(iterator))
            except StopIteration:
                break
        if not batches:
            raise StopIteration
        first = _shapes(batches[0])
        same = next((i for i, b in enumerate(batches) if _shapes(b) != first), len(batches))
        size = sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(batches[0]))
        group = max(1, MAX_BYTES // max(size, 1))
        logs = None
        for start in range(0, same, group):
            part = batches[start:min(same, start + group)]
            logs = one(part[0]) if len(part) == 1 else fused(tf.nest.map_structure(lambda *t: tf.stack(t), *part))
        for batch in batches[same:]:
            logs = one(batch)
        return logs

    return function
