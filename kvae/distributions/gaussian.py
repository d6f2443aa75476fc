"""The one Gaussian helper every Gaussian in kvae uses: float32 parameters, the
log-variance clamp (so a float16 network body cannot overflow `exp`), and the
diagonal Gaussian log-density.

Example:
    >>> import numpy as np
    >>> mean, log_var = split_mean_log_var(np.array([[0.0, 0.0, -99.0, 0.0]], "float32"))
    >>> log_var.numpy().tolist()
    [[-12.0, 0.0]]
    >>> round(float(log_density(np.zeros((1, 2), "float32"), mean, log_var * 0)[0]), 4)  # -log(2 pi)
    -1.8379
"""

import math

import tensorflow as tf

__all__ = ["LOG_VAR_MIN", "LOG_VAR_MAX", "LOG_SCALE_MIN", "LOG_SCALE_MAX", "f32", "clamp_log_var",
           "split_mean_log_var", "log_density", "log_density_of_noise"]


#: clamp for a posterior's log-variance: stddev in [exp(-6), exp(4)].
LOG_VAR_MIN, LOG_VAR_MAX = -12.0, 8.0
#: clamp for a learned Gaussian likelihood's log-scale: sigma in [~1e-3, ~7.4].
LOG_SCALE_MIN, LOG_SCALE_MAX = -7.0, 2.0
_LOG_2PI = math.log(2.0 * math.pi)


def f32(t):
    """t cast to float32 (distribution math is float32 even under mixed precision).

    Args:
        t: a tensor or array.

    Returns:
        float32 tensor.
    """
    return tf.cast(t, tf.float32)


def clamp_log_var(log_var, low=LOG_VAR_MIN, high=LOG_VAR_MAX):
    """A log-variance clamped to [low, high], float32.

    Args:
        log_var: tensor; low, high: floats.

    Returns:
        float32 tensor.
    """
    return tf.clip_by_value(f32(log_var), low, high)


def split_mean_log_var(params, dim=None, low=LOG_VAR_MIN, high=LOG_VAR_MAX):
    """(mean, clamped log-variance) from parameters laid out [mean, log_var, ...].

    Args:
        params: tensor [..., 2 d (+ more)]; dim: int d, or None (the last axis is [mean, log_var]);
        low, high: the clamp.

    Returns:
        (mean, log_var), float32 [..., d] each.
    """
    params = f32(params)
    if dim is None:
        mean, log_var = tf.split(params, 2, axis=-1)
    else:
        mean, log_var = params[..., :dim], params[..., dim:2 * dim]
    return mean, clamp_log_var(log_var, low, high)


def log_density(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))), summed over the last axis.

    Args:
        z, mean, log_var: float32 tensors that broadcast, [..., d].

    Returns:
        float32 tensor [...].
    """
    return -0.5 * tf.reduce_sum(tf.square(z - mean) * tf.exp(-log_var) + log_var + _LOG_2PI, axis=-1)


def log_density_of_noise(eps, log_var):
    """log N(z; mean, diag(exp(log_var))) at z = mean + exp(log_var / 2) eps, from the noise eps.

    Args:
        eps, log_var: float32 tensors that broadcast, [..., d].

    Returns:
        float32 tensor [...].
    """
    return -0.5 * tf.reduce_sum(tf.square(eps) + log_var + _LOG_2PI, axis=-1)
