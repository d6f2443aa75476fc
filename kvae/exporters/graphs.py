"""The exported graphs: the deterministic decoder and the device scorer, built
from the model's parts with named inputs and no random op."""

__all__ = ["specs", "decode_outputs", "tf_clip", "decoder_function", "scorer_problem", "scorer_outputs",
           "scorer_function"]


def specs(model):
    """The named input specs of a model's graphs.

    Args:
        model: kvae.VAE.

    Returns:
        (z, labels, x) tf.TensorSpecs, batch size None.
    """
    import tensorflow as tf

    z = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    labels = tf.TensorSpec([None], tf.int32, name="labels")
    x = tf.TensorSpec([None, *model.data_shape], tf.float32, name="x")
    return z, labels, x


def decode_outputs(model, z, labels=None, clip_logits=None):
    """The exported decoder's outputs at latents z.

    Args:
        model: kvae.VAE; z: float32 [B, latent_dim]; labels: int32 [B] or None;
        clip_logits: float or None (logits clipped to +-clip_logits).

    Returns:
        dict {"mean": E[x|z] [B, *input_shape], "logits": [B, *param_shape]
        (where the likelihood has them)}.
    """
    params = model.decode_params(z, labels)
    if clip_logits is not None and model.likelihood.has_logits:
        params = tf_clip(params, clip_logits)
    out = {"mean": model.likelihood.mean(params)}
    if model.likelihood.has_logits:
        out["logits"] = params
    return out


def tf_clip(t, bound):
    """t clipped to [-bound, bound].

    Args:
        t: tensor; bound: float > 0.

    Returns:
        tensor.
    """
    import tensorflow as tf

    return tf.clip_by_value(t, -bound, bound)


def decoder_function(model, clip_logits=None):
    """The decoder as a graph: no random op, named inputs, any batch size.

    Args:
        model: kvae.VAE; clip_logits: float or None (the full-int8 decoder).

    Returns:
        tf.function decode(z [B, latent_dim][, labels [B]]) -> {'mean'[, 'logits']}.
    """
    import tensorflow as tf

    z_spec, labels_spec, _ = specs(model)
    if model.conditional:
        @tf.function(input_signature=[z_spec, labels_spec])
        def decode(z, labels):
            return decode_outputs(model, z, labels, clip_logits)
    else:
        @tf.function(input_signature=[z_spec])
        def decode(z):
            return decode_outputs(model, z, clip_logits=clip_logits)
    return decode


def scorer_problem(model):
    """Why the model's scorer cannot be exported, or None if it can.

    Args:
        model: kvae.VAE.

    Returns:
        str or None.
    """
    import tensorflow as tf

    if not model.posterior.has_kl_per_dim(model.prior):
        return (f"the device scorer needs the KL in closed form (a diagonal posterior with the standard normal "
                f"prior); this model has a {model.posterior.name} posterior and a {type(model.prior).__name__}: "
                "score it on the host with kvae anomalies")
    probe = model.likelihood.export_log_prob(tf.zeros([1, *model.param_shape]), tf.zeros([1, *model.data_shape]))
    if probe is None:
        return f"the {model.likelihood.name} likelihood has no exportable log-density; score it on the host"
    return None


def scorer_outputs(model, x, labels=None):
    """The device scorer: -ELBO at the posterior's mode with the analytic KL
    (`kvae.anomaly.NegativeELBO`), written with ops every runtime has.

    Args:
        model: kvae.VAE (see `scorer_problem`); x: float32 [B, *input_shape]; labels: int32 [B] or None.

    Returns:
        dict {"score": [B], "reconstruction": -log p(x | z = mode) [B], "kl": [B]}, nats.
    """
    import tensorflow as tf

    params = model.encode_params(x, labels)
    mode = model.posterior.mode_stddev(params)[0]
    log_px = model.likelihood.export_log_prob(model.decode_params(mode, labels), x)
    kl = tf.reduce_sum(model.posterior.kl_per_dim(params, model.prior), axis=-1)
    return {"score": kl - log_px, "reconstruction": -log_px, "kl": kl}


def scorer_function(model):
    """The scorer as a graph: no random op, named inputs, any batch size.

    Args:
        model: kvae.VAE.

    Returns:
        tf.function score(x [B, *input_shape][, labels [B]]) -> {'score', 'reconstruction', 'kl'}.
    """
    import tensorflow as tf

    _, labels_spec, x_spec = specs(model)
    if model.conditional:
        return tf.function(lambda x, labels: scorer_outputs(model, x, labels), input_signature=[x_spec, labels_spec])
    return tf.function(lambda x: scorer_outputs(model, x), input_signature=[x_spec])
