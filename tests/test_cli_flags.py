"""`kvae train` flags, each checked by its effect on the run (not only that it
parses); the latent commands give what kvae.latent gives from Python; and the
pictures' figure builders."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae import cli, latent, plots, rundir, runs

SMALL = ["--dataset", "digits", "--latent-dim", "2", "--quiet"]


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def test_conv_network_cyclical_warmup_bfloat16_and_threshold_binarisation(tmp_path, monkeypatch):
    policies = []
    real_fit = kvae.VAE.fit

    def fit(self, *args, **kwargs):  # the policies the model trains with
        policies.append((self.encoder.layers[0].dtype_policy.name, self.posterior_head.dtype_policy.name))
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(kvae.VAE, "fit", fit)
    run = tmp_path / "run"
    assert run_cli("train", *SMALL, "--epochs", 4, "--network", "conv", "--kl-warmup", 2, "--kl-schedule",
                   "cyclical", "--mixed-precision", "mixed_bfloat16", "--binarize", "threshold",
                   "--out", run) == 0
    model = kvae.load_model(run / "last.keras")
    # --network conv: convolutional bodies
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in model.encoder.layers)
    assert any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.decoder.layers)
    # --kl-schedule cyclical with --kl-warmup 2: the weight restarts every 2 epochs
    assert plots.read_metrics(run / "metrics.csv")["kl_weight"] == [0.0, 1.0, 0.0, 1.0]
    # --mixed-precision: the bodies trained in bfloat16, the heads in float32
    assert policies == [("mixed_bfloat16", "float32")]
    # --binarize threshold: every split is 0/1, the same each epoch (no random draw)
    cfg = rundir.load_config(run)
    assert cfg.binarization == "threshold"
    ds = runs.prepare_data(cfg)
    for split in (ds.train, ds.validation, ds.test):
        assert set(np.unique(split[0])) == {0.0, 1.0}
    np.testing.assert_array_equal(ds.train[0], runs.prepare_data(cfg).train[0])


def test_capacity_flags_build_the_objective_and_ramp_the_capacity(tmp_path):
    run = tmp_path / "cap"
    assert run_cli("train", *SMALL, "--epochs", 3, "--capacity-gamma", 10, "--max-capacity", 4,
                   "--kl-warmup", 2, "--lr-decay", "cosine", "--lr", "2e-3", "--out", run) == 0
    config = json.loads((run / "config.json").read_text())["model"]["objective"]
    assert config["class_name"] == "CapacityELBO" and config["config"]["gamma"] == 10.0
    assert plots.read_metrics(run / "metrics.csv")["kl_capacity"] == [0.0, 2.0, 4.0]
    # --lr-decay cosine without --time-limit: over the 3 epochs, the last one at 2e-3 * (1 + cos(2 pi / 3)) / 2
    rate = kvae.load_model(run / "last.keras").optimizer.learning_rate
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(rate)), 0.5e-3, rtol=1e-5)


def test_strategy_mirrored_trains_under_the_strategy(tmp_path, monkeypatch):
    made = []
    real = tf.distribute.MirroredStrategy

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tf.distribute, "MirroredStrategy", spy)
    seen = []
    real_fit = kvae.VAE.fit

    def fit(self, *args, **kwargs):
        seen.append(self.distribute_strategy)
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(kvae.VAE, "fit", fit)
    run = tmp_path / "mirrored"
    assert run_cli("train", *SMALL, "--epochs", 1, "--strategy", "mirrored", "--out", run) == 0
    assert len(made) == 1 and seen == [made[0]]
    assert json.loads((run / "summary.json").read_text())["test_elbo"] < 0


def test_data_dir_finds_a_named_dataset_there(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "binarized_mnist"
    folder.mkdir(parents=True)
    for split, n in [("train", 60), ("valid", 20), ("test", 20)]:
        np.savetxt(folder / f"binarized_mnist_{split}.amat", (rng.uniform(size=(n, 784)) > 0.8).astype("uint8"),
                   fmt="%d")
    run = tmp_path / "bmnist"
    assert run_cli("train", "--dataset", "binarized_mnist", "--data-dir", tmp_path / "data", "--epochs", 1,
                   "--latent-dim", 2, "--quiet", "--out", run) == 0
    raw = json.loads((run / "config.json").read_text())
    assert str(tmp_path / "data") in raw["data"]["source"] and raw["data"]["input_shape"] == [28, 28, 1]
    assert json.loads((run / "summary.json").read_text())["test_examples"] == 20


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("latent") / "run"
    assert run_cli("train", *SMALL, "--epochs", 2, "--out", run) == 0
    return run


def _capture_grids(monkeypatch):
    shown = []
    real_save = plots.save_grid
    monkeypatch.setattr(plots, "save_grid", lambda images, *a, **k: (shown.append(np.asarray(images)),
                                                                     real_save(images, *a, **k)))
    return shown


def test_latent_commands_show_what_the_python_api_computes(trained_run, tmp_path, monkeypatch):
    shown = _capture_grids(monkeypatch)
    model = kvae.load_model(trained_run)
    x = runs.prepare_data(rundir.load_config(trained_run)).test[0][:4]
    assert run_cli("denoise", trained_run, "--n", 4, "--noise", 0.2, "--out", tmp_path / "d.png") == 0
    noisy = latent.corrupt(x, 0.2, seed=0)
    np.testing.assert_allclose(shown[-1], np.concatenate([x, noisy, latent.denoise(model, noisy)]), atol=1e-6)
    assert run_cli("inpaint", trained_run, "--n", 4, "--missing", "random", "--out", tmp_path / "i.png") == 0
    mask = latent.mask(x.shape, "random", seed=0)
    np.testing.assert_allclose(shown[-1][8:], latent.inpaint(model, x, mask), atol=1e-6)
    assert run_cli("traverse", trained_run, "--dims", 1, "--out", tmp_path / "t.png") == 0
    np.testing.assert_allclose(shown[-1], latent.traverse(model, [1]).reshape((-1, 8, 8, 1)), atol=1e-6)


def test_traverse_does_not_load_the_dataset(trained_run, tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("traverse loaded the dataset")

    monkeypatch.setattr(kvae.data, "load", no_data)
    assert run_cli("traverse", trained_run, "--out", tmp_path / "t.png") == 0
    assert (tmp_path / "t.png").exists()


def test_traversal_around_an_input_starts_from_its_mode(trained_run):
    model = kvae.load_model(trained_run)
    x = runs.prepare_data(rundir.load_config(trained_run)).test[0][:1]
    mode = model.encode(x)[0].numpy()[0]
    images = latent.traverse(model, dims=[0], values=[-1.0, float(mode[0]), 2.0], x=x[0])
    # the middle picture keeps z = the input's own mode: it is the input's reconstruction
    np.testing.assert_allclose(images[0, 1], model.reconstruct(x).numpy()[0], atol=1e-5)
    assert not np.allclose(images[0, 0], images[0, 2], atol=1e-3)


def test_ranking_and_masks_have_clear_errors():
    most, least = latent.rank(np.array([3.0, 1.0, 2.0, 5.0]), 10)  # asks for more than half: 2 each
    assert most.tolist() == [3, 0] and least.tolist() == [1, 2]
    with pytest.raises(ValueError, match="--missing must be bottom or random"):
        latent.mask((1, 4, 4, 1), "left")
    with pytest.raises(ValueError, match=r"--noise must be in \[0, 1\]"):
        latent.corrupt(np.zeros((1, 2)), 1.5)
    m = latent.mask((2, 4, 4, 1), "bottom")
    assert m[:, :2].all() and not m[:, 2:].any()


def test_curves_figure_zooms_past_the_first_epochs_of_a_long_run():
    # a warm-up's first epochs sit hundreds of nats below the rest: fitted to them,
    # the axis would hide the 6-nat train/validation gap a user looks for
    n = 40
    train = np.r_[-500.0, -300.0, -200.0, -150.0, np.linspace(-100, -86, n - 4)]
    val = np.r_[-510.0, -310.0, -210.0, -160.0, np.linspace(-104, -92, n - 5), np.nan]
    fig = plots.curves_figure({"elbo": list(train), "val_elbo": list(val), "kl": list(np.linspace(90, 30, n))})
    elbo_axis = fig.get_axes()[0]
    low, high = elbo_axis.get_ylim()
    assert -104 - 1.0 < low < -104 and -86 < high < -86 + 1.0  # the gap fills the axis (5% margins)
    assert elbo_axis.get_title() == "ELBO (nats, higher is better) (epochs 1-4 off scale)"
    np.testing.assert_array_equal(elbo_axis.get_lines()[0].get_ydata(), train)  # nothing dropped, only off scale


def test_curves_figure_plots_train_and_validation_per_metric():
    history = {"elbo": [-50.0, -40.0, -35.0], "val_elbo": [-52.0, -43.0, -39.0], "reconstruction": [45.0, 36.0, 30.0],
               "kl": [5.0, 4.0, 5.0]}
    fig = plots.curves_figure(history)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["ELBO (nats, higher is better)", "reconstruction -E log p(x|z)",
                                               "KL(q || p)"]
    elbo_lines = axes[0].get_lines()
    assert [line.get_label() for line in elbo_lines] == ["train", "validation"]
    np.testing.assert_array_equal(elbo_lines[1].get_ydata(), history["val_elbo"])
    np.testing.assert_array_equal(elbo_lines[0].get_xdata(), [1, 2, 3])
    assert len(axes[1].get_lines()) == 1  # no validation reconstruction given: one line


def test_curves_figure_adds_the_loss_when_the_objective_is_not_the_elbo():
    # an IWAE run (the iwae50 recipe) minimises -L_5 and selects its epoch on val_loss: the ELBO
    # alone would hide the curve the run was chosen by. With loss = -ELBO the panel would repeat the first.
    elbo, val_elbo = [-100.0, -90.0, -86.0], [-101.0, -94.0, -94.5]
    plain = {"elbo": elbo, "val_elbo": val_elbo, "loss": [100.0, 90.0, 86.0], "val_loss": [101.0, 94.0, 94.5]}
    assert len(plots.curves_figure(plain).get_axes()) == 3
    iwae = dict(plain, loss=[97.0, 87.5, 83.0], val_loss=[98.0, 91.0, 91.2])
    axes = plots.curves_figure(iwae).get_axes()
    assert len(axes) == 4 and axes[3].get_title() == "loss, the objective minimised (nats)"
    np.testing.assert_array_equal(axes[3].get_lines()[1].get_ydata(), iwae["val_loss"])
    warmup = dict(plain, loss=[60.0, 90.0, 86.0])  # beta < 1 in the first epoch only: -ELBO by the end
    assert len(plots.curves_figure(warmup).get_axes()) == 3
    free_bits = dict(plain, loss=[60.0, 85.0, 84.0], val_loss=[float("nan")] * 3)  # a floor on the KL to the end
    assert len(plots.curves_figure(free_bits).get_axes()) == 4
