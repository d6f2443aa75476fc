"""Latent tools: interpolation, traversal, latent map, denoising, inpainting (anomalies: test_anomaly.py)."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

import kvae
from kvae import cli, latent


def train_on_digits(x, latent_dim):
    """An MLP VAE trained on the first 1,500 digits."""
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=latent_dim, encoder=kvae.networks.mlp([128]),
                     decoder=kvae.networks.mlp([128]))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(x[:1500], epochs=25, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained(digits):
    x, _ = digits
    return train_on_digits(x, 2), x[1500:]


@pytest.mark.parametrize("method", ["linear", "spherical"])
def test_interpolation_runs_from_one_input_to_the_other(trained, method):
    model, x = trained
    images = latent.interpolate(model, x[0], x[1], steps=6, method=method)
    assert images.shape == (6, 8, 8, 1)
    mean = model.encode(x[:2])[0].numpy()
    np.testing.assert_allclose(images[0], model.decode(mean[:1]).numpy()[0], atol=1e-5)
    np.testing.assert_allclose(images[-1], model.decode(mean[1:2]).numpy()[0], atol=1e-5)


def test_slerp_keeps_the_norm_between_equal_norm_endpoints():
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    for t in np.linspace(0, 1, 7):
        assert np.linalg.norm(latent.slerp(a, b, t)) == pytest.approx(3.0)
    np.testing.assert_allclose(latent.slerp(a, b, 0.5), [3 / np.sqrt(2), 3 / np.sqrt(2)])
    np.testing.assert_allclose(latent.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear


def test_traversal_varies_one_dimension_per_row(trained):
    model, _ = trained
    images = latent.traverse(model, dims=[1], values=[-2.0, 0.0, 2.0])
    assert images.shape == (1, 3, 8, 8, 1)
    np.testing.assert_allclose(images[0, 0], model.decode(np.array([[0.0, -2.0]], "float32")).numpy()[0],
                               atol=1e-6)
    with pytest.raises(ValueError, match="Latent index 2 is out of range for latent_dim=2"):
        latent.traverse(model, dims=[2])


def test_latent_map_needs_two_dimensions(trained):
    model, _ = trained
    assert latent.latent_map(model, n=5).shape == (25, 8, 8, 1)
    with pytest.raises(ValueError, match="latent_dim = 2; this model has 3"):
        latent.latent_map(kvae.VAE(input_shape=(8, 8, 1), latent_dim=3))


def test_denoising_repairs_heavily_corrupted_digits(digits):
    # A 2-D latent is too small to reconstruct 8x8 digits better than a few
    # flipped pixels would; with 8 dimensions and 25% of pixels flipped,
    # thresholded reconstructions are measurably closer to the clean digits
    # (measured: 15.6% wrong pixels against 24.7% in the input).
    x, _ = digits
    model = train_on_digits(x, 8)
    clean = x[1500:1600]
    flip = np.random.default_rng(1).uniform(size=clean.shape) < 0.25
    noisy = np.where(flip, 1 - clean, clean).astype("float32")
    restored = latent.denoise(model, noisy)
    assert restored.shape == clean.shape
    assert np.mean((restored > 0.5) != clean) < np.mean(noisy != clean) - 0.05


def test_inpainting_keeps_observed_pixels_and_beats_a_grey_fill(trained):
    model, x = trained
    clean = x[:100]
    mask = np.ones_like(clean)
    mask[:, 4:] = 0  # the lower half is missing
    filled = latent.inpaint(model, clean, mask, iterations=10)
    np.testing.assert_array_equal(filled[mask == 1], clean[mask == 1])
    missing = mask == 0
    assert np.mean(np.abs(filled - clean)[missing]) < np.mean(np.abs(0.5 - clean)[missing])


def test_inpainting_bad_masks(trained):
    model, x = trained
    with pytest.raises(ValueError, match=r"mask has shape \(2, 8, 8\) but the inputs have shape \(2, 8, 8, 1\)"):
        latent.inpaint(model, x[:2], np.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="only 0 \\(missing\\) and 1"):
        latent.inpaint(model, x[:2], np.full((2, 8, 8, 1), 0.5))


def test_interpolation_bad_arguments(trained):
    model, x = trained
    with pytest.raises(ValueError, match="steps must be >= 2"):
        latent.interpolate(model, x[0], x[1], steps=1)
    with pytest.raises(ValueError, match="Unknown interpolation 'cubic'"):
        latent.interpolate(model, x[0], x[1], method="cubic")


def test_cli_latent_tools_write_their_pictures(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--latent-dim", "2", "--quiet",
                     "--out", str(run)]) == 0
    for command, extra in [("interpolate", ["--method", "spherical"]), ("traverse", []), ("latent-map", []),
                           ("anomalies", ["--k", "10"]), ("inpaint", ["--missing", "random"]), ("denoise", [])]:
        out = tmp_path / f"{command}.png"
        assert cli.main([command, str(run), "--out", str(out), *extra]) == 0, command
        with Image.open(out) as im:
            assert im.size[0] > 300
    scores = json.loads((tmp_path / "anomalies.json").read_text())
    assert len(scores["scores"]) == 359 and scores["options"]["k"] == 10 and scores["score"] == "complexity"
    capsys.readouterr()
    assert cli.main(["traverse", str(run), "--dims", "7"]) == cli.EXIT_BAD_INPUT
    assert "out of range" in capsys.readouterr().err
