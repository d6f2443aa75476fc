"""Encoder and decoder bodies.

A network *spec* (`MLP`, `Conv`) is a small serialisable recipe; the VAE asks it
for an encoder body for a data shape (any features out) and a decoder body for
a parameter shape (exactly that shape out, in float32). Any Keras layer or model
may stand in for a spec: an encoder layer may output any features, a decoder
layer must output the likelihood's parameter shape.
"""

import math

import keras

from kvae import registry

__all__ = ["GatedDense", "MLP", "Conv", "mlp", "conv", "he_normal", "get", "build_encoder", "build_decoder"]


def _check_activation(activation):
    try:
        keras.activations.get(activation)
    except ValueError:
        raise ValueError(f"Unknown activation {activation!r} (e.g. 'relu', 'tanh', 'elu').") from None
    return activation


@keras.saving.register_keras_serializable(package="kvae")
class GatedDense(keras.layers.Layer):
    """h = (W x + b) * sigmoid(V x + c) (Dauphin et al., 2017), the gated layer
    of Tomczak and Welling's VampPrior networks: one Dense of 2 units outputs,
    split in two.

    Args:
        units: int >= 1.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.dense = keras.layers.Dense(2 * self.units, dtype=self.dtype_policy, name="dense")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.built = True

    def call(self, x):
        return self.gate(self.dense(x), self.units)

    @staticmethod
    def gate(h, units):
        """The gate on a pre-activation h [..., 2 units]: h[:units] * sigmoid(h[units:]).

        Args:
            h: tensor, last axis 2 units; units: int.

        Returns:
            tensor, last axis units.
        """
        return h[..., :units] * keras.ops.sigmoid(h[..., units:])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="kvae")
class MLP:
    """Fully connected body, as in Kingma and Welling (2014).

    Args:
        hidden_units: sequence of int, widths of the hidden layers, input side first.
        activation: str, e.g. "relu" or "tanh".
        gated: bool, `GatedDense` hidden layers (the activation is then the gate).

    Example:
        >>> import kvae
        >>> kvae.networks.mlp([400]).hidden_units
        (400,)
    """

    def __init__(self, hidden_units=(512, 256), activation="relu", gated=False):
        self.hidden_units = tuple(int(u) for u in hidden_units)
        if any(u < 1 for u in self.hidden_units):
            raise ValueError(f"hidden_units must be positive, got {list(hidden_units)}.")
        self.activation = _check_activation(activation)
        self.gated = bool(gated)

    def _hidden(self):
        if self.gated:
            return [GatedDense(u) for u in self.hidden_units]
        return [keras.layers.Dense(u, activation=self.activation) for u in self.hidden_units]

    def encoder(self, input_shape):
        return keras.Sequential(
            [keras.Input(tuple(input_shape)), keras.layers.Flatten(), *self._hidden()],
            name="encoder_body",
        )

    def decoder(self, input_dim, output_shape):
        return keras.Sequential(
            [
                keras.Input((input_dim,)),
                *self._hidden(),
                keras.layers.Dense(math.prod(output_shape), dtype="float32"),
                keras.layers.Reshape(tuple(output_shape), dtype="float32"),
            ],
            name="decoder_body",
        )

    def get_config(self):
        return {"hidden_units": list(self.hidden_units), "activation": self.activation, "gated": self.gated}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="kvae")
class Conv:
    """Convolutional body for H x W x C data.

    Encoder: one stride-2 3x3 convolution per entry of `filters`, then a dense
    layer of `hidden_units`. Decoder: the mirror image, with stride-2 transposed
    convolutions (kernel 3 >= stride, so the ONNX export has no negative pads),
    cropped to H x W, and a last 3x3 convolution to the parameter channels.

    Args:
        filters: sequence of int, channels of each stride-2 stage.
        hidden_units: int, width of the dense layer between convolutions and z.
        activation: str.
    """

    def __init__(self, filters=(32, 64), hidden_units=256, activation="relu"):
        self.filters = tuple(int(f) for f in filters)
        if not self.filters or any(f < 1 for f in self.filters):
            raise ValueError(f"filters must be a non-empty list of positive ints, got {filters}.")
        self.hidden_units = int(hidden_units)
        self.activation = _check_activation(activation)

    @staticmethod
    def _check_image(shape):
        if len(shape) != 3:
            raise ValueError(
                f"The conv network needs H x W x C data; got shape {tuple(shape)}. "
                "Use the mlp network, or reshape the data to (H, W, C)."
            )

    def encoder(self, input_shape):
        self._check_image(input_shape)
        convs = [
            keras.layers.Conv2D(f, 3, strides=2, padding="same", activation=self.activation)
            for f in self.filters
        ]
        dense = keras.layers.Dense(self.hidden_units, activation=self.activation)
        return keras.Sequential(
            [keras.Input(tuple(input_shape)), *convs, keras.layers.Flatten(), dense],
            name="encoder_body",
        )

    def decoder(self, input_dim, output_shape):
        self._check_image(output_shape)
        height, width, channels = output_shape
        scale = 2 ** len(self.filters)
        h0, w0 = math.ceil(height / scale), math.ceil(width / scale)
        layers = [
            keras.Input((input_dim,)),
            keras.layers.Dense(self.hidden_units, activation=self.activation),
            keras.layers.Dense(h0 * w0 * self.filters[-1], activation=self.activation),
            keras.layers.Reshape((h0, w0, self.filters[-1])),
        ]
        layers += [
            keras.layers.Conv2DTranspose(
                f, 3, strides=2, padding="same", activation=self.activation
            )
            for f in reversed(self.filters)
        ]
        if (h0 * scale, w0 * scale) != (height, width):
            layers.append(keras.layers.Cropping2D(((0, h0 * scale - height), (0, w0 * scale - width))))
        layers.append(keras.layers.Conv2D(channels, 3, padding="same", dtype="float32"))
        return keras.Sequential(layers, name="decoder_body")

    def get_config(self):
        return {
            "filters": list(self.filters),
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def mlp(hidden_units=(512, 256), activation="relu", gated=False):
    """An `MLP` spec; see `MLP`.

    Args:
        hidden_units: sequence of int; activation: str; gated: bool.

    Returns:
        MLP.
    """
    return MLP(hidden_units, activation, gated)


def he_normal(model, seed=0):
    """Redraw every Dense kernel of a built model from N(0, 2 / fan_in), the
    He (Kaiming) normal initialisation that Tomczak and Welling's code applies
    to all its linear layers; biases and other weights are left as they are.

    Args:
        model: a built Keras layer or model (e.g. a kvae.VAE).
        seed: int, the draws' seed.

    Returns:
        int, the number of kernels redrawn.

    Example:
        >>> import keras
        >>> layer = keras.layers.Dense(3)
        >>> layer.build((None, 4))
        >>> he_normal(layer)
        1
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    dense = [layer for layer in model._flatten_layers(include_self=True, recursive=True)  # Keras 3's walk
             if isinstance(layer, keras.layers.Dense)]
    for layer in dense:
        fan_in, fan_out = layer.kernel.shape
        layer.kernel.assign(rng.normal(0.0, math.sqrt(2.0 / fan_in), (fan_in, fan_out)).astype("float32"))
    return len(dense)


def conv(filters=(32, 64), hidden_units=256, activation="relu"):
    """A `Conv` spec; see `Conv`.

    Args:
        filters: sequence of int; hidden_units: int; activation: str.

    Returns:
        Conv.

    Example:
        >>> conv(filters=(16,)).encoder((8, 8, 1)).output_shape
        (None, 256)
    """
    return Conv(filters, hidden_units, activation)


registry.register("network", "mlp")(lambda role, **_: MLP((512, 256) if role == "encoder" else (256, 512)))
registry.register("network", "conv")(lambda role, **_: Conv())


def get(spec, role):
    """Resolve `spec` for `role` ('encoder' or 'decoder').

    Args:
        spec: 'mlp', 'conv' (`kvae.registry` names), an `MLP`/`Conv` spec, a
            serialised config, or any `keras.layers.Layer` (used as the body as it is).
        role: 'encoder' or 'decoder' (the named defaults differ: the MLP
            decoder mirrors the encoder's widths).

    Returns:
        An `MLP`, a `Conv` or the layer.

    Example:
        >>> get("mlp", "decoder").hidden_units
        (256, 512)
    """
    if isinstance(spec, (MLP, Conv, keras.layers.Layer)):
        return spec
    if isinstance(spec, dict):
        return get(keras.saving.deserialize_keras_object(spec), role)
    try:
        return registry.get("network", spec, role=role)
    except ValueError:
        raise ValueError(f"Unknown {role} network {spec!r}. Choose 'mlp' or 'conv', or pass a Keras layer.") from None


def build_encoder(spec, input_shape):
    """The encoder body for data of `input_shape`, built for any batch size.

    Args:
        spec: an `MLP` / `Conv` spec or a Keras layer; input_shape: tuple.

    Returns:
        keras.layers.Layer mapping [B, *input_shape] to features [B, ...].
    """
    if isinstance(spec, keras.layers.Layer):
        if not spec.built:
            spec.build((None,) + tuple(input_shape))
        return spec
    return spec.encoder(input_shape)


def build_decoder(spec, input_dim, output_shape):
    """The decoder body from `input_dim` numbers to `output_shape` parameters.

    Args:
        spec: an `MLP` / `Conv` spec or a Keras layer; input_dim: int;
        output_shape: tuple, the likelihood's parameter shape.

    Returns:
        keras.layers.Layer mapping [B, input_dim] to float32 [B, *output_shape].
    """
    if isinstance(spec, keras.layers.Layer):
        if not spec.built:
            spec.build((None, input_dim))
        return spec
    return spec.decoder(input_dim, output_shape)
