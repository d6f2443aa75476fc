"""Bad input gets an error naming the problem before any training step runs."""

import numpy as np
import pytest
import tensorflow as tf

import kvae


@pytest.fixture
def model():
    m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, encoder=kvae.networks.mlp([16]),
                 decoder=kvae.networks.mlp([16]))
    m.compile(optimizer="adam")
    return m


def _weights(m):
    return [w.numpy().copy() for w in m.trainable_weights]


def _assert_fit_refused(model, match, *args, **kwargs):
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        model.fit(*args, epochs=1, verbose=0, **kwargs)
    assert model.optimizer.iterations.numpy() == 0  # no step ran
    for a, b in zip(before, _weights(model)):
        np.testing.assert_array_equal(a, b)


def test_input_shape_mismatch(model):
    _assert_fit_refused(model, r"Input shape \(28, 28, 1\).*input_shape \(8, 8, 1\)",
                        np.zeros((4, 28, 28, 1), "float32"))


def test_input_shape_mismatch_in_a_dataset(model):
    ds = tf.data.Dataset.from_tensor_slices(np.zeros((4, 64), "float32")).batch(2)
    _assert_fit_refused(model, r"Input shape \(64,\)", ds)


def test_values_outside_unit_interval_for_bernoulli(model):
    x = np.full((4, 8, 8, 1), 255.0, "float32")
    _assert_fit_refused(model, r"bernoulli likelihood needs values in \[0, 1\].*x / 255", x)


def test_values_outside_unit_interval_for_continuous_bernoulli():
    m = kvae.VAE(input_shape=(4,), latent_dim=1, likelihood="continuous_bernoulli")
    m.compile(optimizer="adam")
    _assert_fit_refused(m, "continuous_bernoulli likelihood needs values", -np.ones((3, 4), "float32"))


def test_gaussian_likelihood_accepts_any_real_values():
    m = kvae.VAE(input_shape=(4,), latent_dim=1, likelihood="gaussian")
    m.compile(optimizer="adam")
    m.fit(np.full((8, 4), -3.0, "float32"), epochs=1, verbose=0)
    assert m.optimizer.iterations.numpy() == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_the_data(model, bad):
    x = np.zeros((4, 8, 8, 1), "float32")
    x[2, 3, 3, 0] = bad
    _assert_fit_refused(model, "1 NaN or Inf", x)


def test_nan_in_the_validation_data(model):
    val = np.zeros((4, 8, 8, 1), "float32")
    val[0, 0, 0, 0] = np.nan
    _assert_fit_refused(model, "NaN or Inf", np.zeros((4, 8, 8, 1), "float32"), validation_data=val)


@pytest.mark.parametrize("latent_dim", [0, -3])
def test_latent_dim_below_one(latent_dim):
    with pytest.raises(ValueError, match="latent_dim must be >= 1"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=latent_dim)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(likelihood="poisson"), "Unknown likelihood 'poisson'. Choose one of: bernoulli"),
        (dict(prior="flow"), "Unknown prior 'flow'"),
        (dict(posterior="lowrank"), "Unknown posterior 'lowrank'"),
        (dict(encoder="resnet"), "Unknown encoder network 'resnet'"),
        (dict(decoder="transformer"), "Unknown decoder network 'transformer'"),
        (dict(beta=-1.0), "beta must be a finite number >= 0"),
        (dict(num_classes=1), "num_classes must be >= 2"),
        (dict(encoder="conv"), "conv network needs H x W x C"),
    ],
)
def test_unknown_names_and_bad_hyperparameters(kwargs, match):
    shape = (64,) if kwargs.get("encoder") == "conv" else (8, 8, 1)
    with pytest.raises(ValueError, match=match):
        kvae.VAE(input_shape=shape, latent_dim=2, **kwargs)


def test_unknown_activation():
    with pytest.raises(ValueError, match="Unknown activation 'swishy'"):
        kvae.networks.mlp([8], "swishy")


def test_conditional_model_without_labels():
    m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, num_classes=10)
    m.compile(optimizer="adam")
    x = np.zeros((4, 8, 8, 1), "float32")
    _assert_fit_refused(m, r"conditional \(num_classes=10\): pass labels", x)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2)
    _assert_fit_refused(m, "pass labels", ds)
    with pytest.raises(ValueError, match="pass labels"):
        m.sample(3)


def test_conditional_labels_out_of_range():
    m = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, num_classes=3)
    m.compile(optimizer="adam")
    _assert_fit_refused(m, r"Labels must be integers in \[0, 3\)", np.zeros((4, 8, 8, 1), "float32"),
                        np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        m.sample(2, labels=5)


def test_vamp_prior_with_a_conditional_model_is_refused():
    with pytest.raises(ValueError, match="VampPrior is not supported for a conditional"):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, num_classes=3, prior="vamp")


def test_encode_with_the_wrong_shape(model):
    with pytest.raises(ValueError, match="does not match the model's input_shape"):
        model.encode(np.zeros((2, 10), "float32"))


def test_sample_needs_a_positive_count(model):
    with pytest.raises(ValueError, match="n must be >= 1"):
        model.sample(0)
