"""`kvae train --recipe NAME` and `kvae recipes`: every recipe trains end to
end on a small stand-in for Larochelle's files, in both .amat forms (MATLAB
and text), selects on validation and reports log p(x) on the test split."""

import dataclasses
import json
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.io

import kvae
import kvae.config
from kvae import callbacks, cli, recipes, runs
from kvae.config import RunError

from helpers import wait_for_epochs

SPLITS = {"train": 200, "valid": 60}


def _stand_in(folder, form, seed=0):
    """binarized_mnist_{train,valid}.amat with 0/1 pixels at fixed per-pixel rates, as MATLAB or text."""
    folder = folder / "binarized_mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 0.6, size=784)
    for split, n in SPLITS.items():
        x = (rng.uniform(size=(n, 784)) < rates).astype("uint8")
        path = folder / f"binarized_mnist_{split}.amat"
        if form == "matlab":
            scipy.io.savemat(path, {"X": x})
        else:
            np.savetxt(path, x, fmt="%d")
    return folder.parent


PARTS = {  # what each recipe's model must be made of
    "vae": ("DiagonalGaussian", "StandardNormal", "ELBO", 40),
    "vae_10min": ("DiagonalGaussian", "StandardNormal", "ELBO", 40),
    "iwae50": ("IAFPosterior", "StandardNormal", "IWAE", 40),
    "iwae50_gaussian": ("DiagonalGaussian", "StandardNormal", "IWAE", 40),
    "vamp": ("IAFPosterior", "VampPrior", "ELBO", 40),
    "vamp_gaussian": ("DiagonalGaussian", "VampPrior", "ELBO", 40),
    "hvae_vamp": ("HierarchicalPosterior", "HierarchicalVampPrior", "ELBO", 80),
    "iaf": ("IAFPosterior", "StandardNormal", "ELBO", 40),
}


def test_every_recipe_is_tested():
    assert set(PARTS) == set(recipes.names())


@pytest.mark.parametrize("name", sorted(PARTS))
def test_recipe_trains_and_reports_log_px_on_the_stand_in(name, tmp_path):
    form = "matlab" if sorted(PARTS).index(name) % 2 else "text"
    data_dir = _stand_in(tmp_path / "data", form)
    cfg = recipes.get(name).config(dataset="binarized_mnist", data_dir=str(data_dir), epochs=1, eval_k=20)
    said = []
    summary = runs.train(cfg, tmp_path / "run", verbose=0, log=lambda *a: said.append(" ".join(map(str, a))))
    assert summary["epochs_done"] == 1 and summary["test_k"] == 20
    assert summary["test_examples"] == SPLITS["valid"]  # no test file: the published valid split is reported
    assert any(f"on {SPLITS['valid']} examples of the valid split (no test split)" in line for line in said)
    ll, elbo = summary["test_log_likelihood"], summary["test_elbo"]
    # 784 independent pixels at rates in [0.05, 0.6] have 0.2 to 0.69 nats each: after an epoch
    # a working model is between that entropy and 1 nat a pixel (a fair coin is 0.69);
    # the k = 20 estimate is a tighter bound than the one-sample ELBO (60 examples: 2 nats of slack)
    assert -784 * 1.0 < ll < -784 * 0.2 and ll > elbo - 2.0
    model = kvae.load_model(tmp_path / "run", "best")
    posterior, prior, objective, latent = PARTS[name]
    assert (type(model.posterior).__name__, type(model.prior).__name__, type(model.objective).__name__,
            model.latent_dim) == (posterior, prior, objective, latent)
    if name == "hvae_vamp":  # iaf's flow over [z2, z1] after the two Gaussians, kept through save and load
        assert (model.posterior.flow_steps, model.posterior.flow_hidden_units) == (2, 320)
        assert (model.posterior.hidden_layers, model.posterior.gated, model.prior.hidden_layers, model.prior.gated) \
            == (2, True, 2, True)  # the papers' z1 networks, both sides
        assert model.prior.num_components == 250  # half the papers' 500 pseudo-inputs (p53a, RESULTS.md)
        assert type(model.optimizer).__name__ == "AdamaxW" and model.optimizer.weight_decay == 0.15  # Adamax (p56a)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["best_monitor"] == ("val_loss" if name.startswith("iwae50") else "val_elbo")
    assert summary["train_seconds"] == state["train_seconds"] > 0 and summary["eval_seconds"] > 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["recipe"] == name and saved["batch_size"] == 100
    assert saved["learning_rate"] == 1e-3


def test_recipe_from_the_command_line_and_its_errors(tmp_path, capsys):
    data_dir = _stand_in(tmp_path / "data", "matlab")
    out = subprocess.run([sys.executable, "-m", "kvae.cli", "train", "--recipe", "vae_10min", "--dataset",
                          "binarized_mnist", "--data-dir", data_dir, "--epochs", "1", "--eval-k", "10", "--out",
                          tmp_path / "run", "--quiet"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "test log p(x) (k=10)" in out.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test_k"] == 10 and np.isfinite(summary["test_log_likelihood"])

    assert cli.main(["train", "--recipe", "vamp", "--prior", "mixture", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--prior: recipe 'vamp' fixes the model" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["train", "--recipe", "vamq", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown recipe 'vamq'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli.main(["recipes"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in recipes.names()) and "85.57" in listing and "83.19" in listing
    assert ">= 1 nat better than vae" in listing and "<= 88.5" in listing  # a relative goal, and a number


def test_time_limit_and_best_by_the_validation_elbo(digits, tmp_path):
    with pytest.raises(RunError, match="--time-limit must be >= 0"):
        recipes.get("vae").config(time_limit=-1.0)
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile()
    limit = callbacks.TimeLimit(1e-9)  # already over after the first epoch
    history = model.fit(digits[0][:64], epochs=5, batch_size=32, callbacks=[limit], verbose=0)
    assert len(history.history["loss"]) == 1

    # cosine decay over the limit, by the time spent: a fake clock at 0, 30 and 60 s of a 2-minute limit
    clock = iter([0.0, 0.0, 0.0, 30.0, 30.0, 60.0, 60.0])
    cosine = callbacks.TimeLimit(2.0, cosine=True)
    cosine.clock = lambda: next(clock)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(model.optimizer.learning_rate.numpy())))
    model.fit(digits[0][:64], epochs=3, batch_size=32, callbacks=[cosine, record],
              verbose=0)
    np.testing.assert_allclose(seen, [1e-3, 1e-3 * 0.5 * (1 + np.cos(np.pi / 4)), 0.5e-3], rtol=1e-6)
    kvae.config.TrainConfig(lr_decay="cosine").validate()  # no time limit: the cosine runs over --epochs

    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 0}))
    check = callbacks.RunCheckpoint(tmp_path, "val_elbo", "max")
    check.set_model(model)
    for epoch, elbo in enumerate([-30.0, -20.0, -25.0]):  # the highest ELBO is the best, not the lowest
        check.on_epoch_end(epoch, {"loss": 1.0, "val_elbo": elbo})
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best_epoch"] == 2 and state["epochs_done"] == 3
    assert (state["best"], state["best_mode"]) == (-20.0, "max")  # the ELBO as the ELBO, not negated


def test_the_cosine_ends_with_whichever_limit_ends_the_run(digits):
    """The learning rate reaches 0 by the run's end: over the epochs without a time limit, and over the
    epochs or the minutes, whichever runs out first, with both (so a slow machine still finishes it)."""
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: seen.append(float(model.optimizer.learning_rate.numpy())))
    model.fit(digits[0][:64], epochs=4, batch_size=32, verbose=0,
              callbacks=[callbacks.TimeLimit(0, cosine=True, epochs=4), record])
    cos = [0.5 * (1 + np.cos(np.pi * f)) for f in (0, 0.25, 0.5, 0.75)]
    np.testing.assert_allclose(seen, 1e-3 * np.array(cos), rtol=1e-6)

    # 10 epochs in 2 minutes: on a fake clock the time (30 s an epoch: a quarter) leads, then the epochs
    # (6 s an epoch after that: epoch 5 of 10 is half the epochs, 2 minutes only 0.3 spent)
    clock = iter([0.0, 0.0, 30.0, 36.0])
    both = callbacks.TimeLimit(2.0, cosine=True, epochs=10, initial_lr=1e-3)
    both.clock = lambda: next(clock)
    both.set_model(model)
    both.on_train_begin()
    assert both.progress(0) == 0.0
    assert both.progress(1) == pytest.approx(0.25)  # 30 s of 120 beats 1 epoch of 10
    both.on_epoch_begin(5)  # 36 s of 120 (0.3) is behind 5 epochs of 10 (0.5)
    np.testing.assert_allclose(float(model.optimizer.learning_rate.numpy()), 0.5e-3, rtol=1e-6)
    with pytest.raises(ValueError, match="minutes must be > 0"):
        callbacks.TimeLimit(0, epochs=4)  # no limit and no cosine: nothing to do
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        callbacks.TimeLimit(1.0, cosine=True, epochs=0)


def test_a_resumed_recipe_continues_its_patience_time_and_cosine(tmp_path):
    """A run resumed after epoch 4, whose best epoch was 2, has already waited
    2 epochs; one that trained 90 s of a 2-minute budget has 30 s left, and its
    cosine continues from the configured rate, not from the decayed one it saved."""
    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile(optimizer=keras.optimizers.Adam(1e-4))  # the rate a resumed model comes back with
    state = {"epochs_done": 4, "best": -20.0, "best_epoch": 2, "best_monitor": "val_elbo", "best_mode": "max",
             "train_seconds": 90.0}

    def stops(stopper, values, start=4):
        model.stop_training = False
        stopper.set_model(model)
        stopper.on_train_begin()
        for epoch, value in enumerate(values, start):
            stopper.on_epoch_begin(epoch)
            stopper.on_epoch_end(epoch, {"val_elbo": value})
            if model.stop_training:
                return epoch + 1
        return None

    recipe = dataclasses.replace(recipes.get("vae"), patience=50)  # the shipped recipes have no early stopping
    patience = recipe.patience
    (resumed,) = recipe.callbacks(dict(state))
    # the best ELBO so far is -20: -25 is no improvement
    assert stops(resumed, [-25.0] * patience) == 2 + patience
    assert stops(resumed, [-19.0] + [-25.0] * patience) == 5 + patience  # an improvement restarts the count
    (fresh,) = recipe.callbacks()
    assert stops(fresh, [-25.0] * patience) is None  # without the state: a new count, and -25 is the best
    (other,) = recipe.callbacks({**state, "best_monitor": "val_loss"})  # a best of another metric is not kept
    assert stops(other, [-25.0] * patience) is None

    clock = iter([0.0, 0.0, 31.0])
    limit = callbacks.TimeLimit(2.0, cosine=True, spent_seconds=state["train_seconds"], initial_lr=5e-4)
    limit.clock = lambda: next(clock)
    limit.set_model(model)
    model.stop_training = False
    limit.on_train_begin()
    limit.on_epoch_begin(4)
    np.testing.assert_allclose(float(model.optimizer.learning_rate.numpy()), 5e-4 * 0.5 * (1 + np.cos(0.75 * np.pi)),
                               rtol=1e-6)
    limit.on_epoch_end(4)
    assert model.stop_training
    with pytest.raises(ValueError, match="spent_seconds must be >= 0"):
        callbacks.TimeLimit(1.0, spent_seconds=-1)

    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "last.keras").write_bytes(b"")  # epoch 4's, replaced by epoch 5's
    model.fit(np.zeros((8, 8, 8, 1), "float32"), epochs=1, batch_size=8, verbose=0)  # built, so it saves
    check = callbacks.RunCheckpoint(tmp_path, "val_elbo", "max")
    check.set_model(model)
    check.on_train_begin()
    check.on_epoch_end(4, {"loss": 1.0, "val_elbo": -30.0})
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["epochs_done"] == 5 and 90.0 <= saved["train_seconds"] < 150.0  # summed with the earlier 90 s
    assert saved["best_epoch"] == 2  # -30 is worse than the kept best (-20)


def _decay(run):
    """The weight decay the run's last checkpoint took its last step with."""
    return float(keras.ops.convert_to_numpy(kvae.load_model(run, "last").optimizer.weight_decay))


#: `kvae` with the vae recipe's decoder decay growing 0.1 -> 0.3 over the run (no shipped recipe grows it)
_GROWING = ("import dataclasses, sys; from kvae import cli, recipes; "
            "recipes.RECIPES['vae'] = dataclasses.replace(recipes.get('vae'), weight_decay=0.1, weight_decay_end=0.3); "
            "sys.exit(cli.main(sys.argv[1:]))")


@pytest.mark.slow
def test_a_killed_recipe_run_resumes_its_growing_weight_decay(tmp_path):
    """A recipe's decay that grows with the run's progress: a run killed (-9)
    mid-way keeps the value of its last whole epoch, and the resumed run sets it
    from its own progress at each epoch, not from the start or the loaded value."""
    data_dir, run = _stand_in(tmp_path / "data", "matlab"), tmp_path / "run"
    argv = [sys.executable, "-c", _GROWING, "train", "--recipe", "vae", "--dataset", "binarized_mnist", "--data-dir",
            str(data_dir), "--eval-k", "10", "--quiet"]
    proc = subprocess.Popen([*argv, "--epochs", "50", "--out", str(run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_epochs(run, 2, proc, timeout=300)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = callbacks.read_state(run)["epochs_done"]
    assert 2 <= done < 50
    # the last whole epoch (0-based done - 1) began at progress (done - 1) / 50: 15 minutes of time are not spent
    assert _decay(run) == pytest.approx(0.1 + 0.2 * (done - 1) / 50, rel=1e-5)

    out = subprocess.run([*argv[:3], "train", "--resume", str(run), "--epochs", str(done + 1), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert callbacks.read_state(run)["epochs_done"] == done + 1
    assert _decay(run) == pytest.approx(0.1 + 0.2 * done / (done + 1), rel=1e-5)  # its epoch's own progress


def _clamped(latent_dim, input_shape):
    return kvae.distributions.DiagonalGaussian(log_var_min=-6.0, log_var_max=2.0)


def test_a_recipe_can_train_as_the_reference_code():
    from kvae.data import Dataset

    x = (np.zeros((4, 28, 28, 1), "float32"), None)
    ds = Dataset(name="stand_in", source="zeros", train=x, validation=x, test=x)
    reference = recipes.Recipe("reference", "", "", None, dict(recipes._ELBO), posterior=_clamped,
                               optimizer="normalized_adam", init="he")
    for recipe, optimizer, clamp in [(reference, "NormalizedAdam", (-6.0, 2.0)),
                                     (recipes.get("vamp_gaussian"), "AdamW", (-12.0, 8.0))]:
        cfg = recipes.get("vamp").config(dataset="binarized_mnist", seed=3)  # config() wants a registered name
        model, opt = recipe.build_model(cfg, ds)
        assert type(opt).__name__ == optimizer and float(opt.learning_rate) == pytest.approx(cfg.learning_rate)
        assert (model.posterior.log_var_min, model.posterior.log_var_max) == clamp
        stds = {}
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.Dense):
                kernel = layer.kernel.numpy()
                stds[kernel.shape] = kernel.std() * np.sqrt(kernel.shape[0] / 2.0)  # 1 for He's N(0, 2/fan_in)
        big = [s for shape, s in stds.items() if shape[0] * shape[1] > 100_000]
        if recipe is reference:  # 784x600, 300x600, 300x784: the std of >= 180,000 draws is within 1% of its value
            assert len(stds) >= 5 and len(big) == 3 and all(abs(s - 1.0) < 0.01 for s in big)
        else:  # Glorot uniform: var 2 / (fan_in + fan_out), far from He's on the 784 x 600 kernel
            assert abs(stds[(784, 600)] - 1.0) > 0.1
    with pytest.raises(ValueError, match="optimizer must be 'adam', 'normalized_adam' or 'adamax'"):
        recipes.Recipe("x", "", "", None, {}, optimizer="sgd")


def test_a_recipe_with_weight_decay_trains_with_adamw_on_the_decoder():
    from kvae.data import Dataset
    from kvae.optimizers import AdamaxW, AdamW

    x = (np.zeros((4, 28, 28, 1), "float32"), None)
    ds = Dataset(name="stand_in", source="zeros", train=x, validation=x, test=x)
    cfg = recipes.get("vamp").config(dataset="binarized_mnist", seed=3)
    decayed = recipes.Recipe("wd", "", "", None, dict(recipes._ELBO), weight_decay=0.1, prior=recipes._vamp)
    for recipe, kind in [(decayed, AdamW), (dataclasses.replace(decayed, optimizer="adamax"), AdamaxW)]:
        model, opt = recipe.build_model(cfg, ds)
        assert type(opt) is kind and float(opt.weight_decay) == pytest.approx(0.1)
        opt.build(model.trainable_variables)
        chosen = {v.path for v in model.trainable_variables if opt._use_weight_decay(v)}
        assert len(chosen) == 3 and all(p.startswith("decoder_body/") for p in chosen)  # not the pseudo-inputs
    plain = dataclasses.replace(decayed, optimizer="adamax", weight_decay=0.0)
    assert type(plain.build_model(cfg, ds)[1]) is keras.optimizers.Adamax
    for bad in [dict(weight_decay=-0.1), dict(weight_decay=0.1, optimizer="normalized_adam")]:
        with pytest.raises(ValueError, match="weight_decay must be >= 0, and only with optimizer 'adam'"):
            recipes.Recipe("x", "", "", None, {}, **bad)
    # a decay that grows over the run: the optimizer gets both ends; the run's cosine gives its progress
    growing = recipes.Recipe("g", "", "", None, {**recipes._ELBO, "lr_decay": "cosine"}, weight_decay=0.1,
                             weight_decay_end=0.3, optimizer="adamax")
    opt = growing.build_model(cfg, ds)[1]
    assert type(opt) is AdamaxW and (opt.get_config()["weight_decay"], opt.weight_decay_end) == (0.1, 0.3)
    assert decayed.build_model(cfg, ds)[1].weight_decay_end is None
    for bad in [dict(weight_decay_end=-0.1), dict(weight_decay=0.0), dict(settings=dict(recipes._ELBO))]:
        with pytest.raises(ValueError, match="weight_decay_end must be >= 0, with weight_decay > 0 and lr_decay"):
            dataclasses.replace(growing, **bad)
    averaged = dataclasses.replace(decayed, average=0.999)
    for recipe, kind in [(averaged, AdamW), (dataclasses.replace(averaged, weight_decay=0.0), keras.optimizers.Adam)]:
        _, opt = recipe.build_model(cfg, ds)
        assert type(opt) is kind and opt.use_ema and opt.ema_momentum == 0.999
    assert not decayed.build_model(cfg, ds)[1].use_ema
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"average must be in \[0, 1\)"):
            dataclasses.replace(averaged, average=bad)


def test_the_cosine_recipes_run_their_whole_decay():
    """Every recipe (hvae_vamp too, from 1e-3 after a 100-epoch warm-up) lets the learning rate reach 0:
    no early stopping cuts the decay (the best epoch is still the one evaluated)."""
    cosine = [("vae", 15.0), ("iaf", 15.0), ("vamp", 30.0), ("vamp_gaussian", 30.0), ("vae_10min", 10.0)]
    for name, minutes in cosine:
        cfg = recipes.get(name).config(dataset="binarized_mnist")
        assert (cfg.lr_decay, cfg.time_limit, cfg.learning_rate, cfg.kl_warmup) == ("cosine", minutes, 1e-3, 10)
        assert recipes.get(name).callbacks() == []
        assert recipes.get(name).weight_decay == (0.3 if name.startswith("vamp") else 0.0)  # the decoder's, AdamW
    for name, minutes, decay in (("iwae50", 120.0, 0.2), ("iwae50_gaussian", 90.0, 0.0)):  # IWAE: no warm-up
        cfg = recipes.get(name).config(dataset="binarized_mnist")
        assert (cfg.lr_decay, cfg.time_limit, cfg.learning_rate, cfg.kl_warmup) == ("cosine", minutes, 1e-3, 0)
        assert recipes.get(name).callbacks() == [] and recipes.get(name).weight_decay == decay
    # hvae_vamp: the papers' warm-up; Adamax 1e-3 decaying over 100 minutes, decay 0.15 (p57a, RESULTS.md)
    cfg = recipes.get("hvae_vamp").config(dataset="binarized_mnist")
    assert (cfg.lr_decay, cfg.time_limit, cfg.learning_rate, cfg.kl_warmup) == ("cosine", 100.0, 1e-3, 100)
    hvae = recipes.get("hvae_vamp")
    assert hvae.callbacks() == [] and (hvae.optimizer, hvae.weight_decay) == ("adamax", 0.15)


def test_an_iwae_recipe_with_a_warm_up_selects_on_the_validation_elbo():
    def recipe(**settings):
        return recipes.Recipe("r", "s", "p", None, {"objective": "iwae", "num_samples": 5, **settings})

    assert recipe(kl_warmup=0).monitor == ("val_loss", "min")  # the bound itself
    assert recipe(kl_warmup=50).monitor == ("val_elbo", "max")  # a warm-up weights val_loss
    assert recipe(objective="elbo", kl_warmup=0).monitor == ("val_elbo", "max")


def test_a_run_rebuilt_from_its_config_json_is_the_same_model_and_an_edited_one_is_built_as_written(tmp_path, capsys):
    """config.json names every part with its options: `kvae train --config` rebuilds the recipe's model
    (same architecture, same first-epoch loss with the same seed), builds a hand-edited model as written,
    and refuses a flag that would change what the file fixes."""
    from kvae import cli

    flags = ["--epochs", "1", "--eval-k", "0", "--quiet"]
    first = tmp_path / "first"
    assert cli.main(["train", "--recipe", "vamp", "--dataset", "digits", *flags, "--out", str(first)]) == 0
    assert "note: recipe 'vamp' was made for binarized_mnist" in capsys.readouterr().out  # digits: no anchors
    recorded = json.loads((first / "config.json").read_text())
    assert recorded["train"]["prior"] == "vamp_base"  # the name of what was built ...
    assert recorded["model"]["prior"]["config"]["components"] == "base"  # ... and its options
    again = tmp_path / "again"
    assert cli.main(["train", "--config", str(first / "config.json"), "--quiet", "--out", str(again)]) == 0
    rebuilt = json.loads((again / "config.json").read_text())
    assert rebuilt["model"] == recorded["model"] and rebuilt["train"] == recorded["train"]

    def first_loss(run):
        return float((run / "metrics.csv").read_text().splitlines()[1].split(",")[
            (run / "metrics.csv").read_text().splitlines()[0].split(",").index("loss")])

    assert first_loss(again) == pytest.approx(first_loss(first), rel=1e-6)
    edited = dict(recorded, model={**recorded["model"], "prior": {
        **recorded["model"]["prior"], "config": {**recorded["model"]["prior"]["config"], "num_pseudo_inputs": 7}}})
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    assert cli.main(["train", "--config", str(tmp_path / "edited.json"), *flags, "--out", str(tmp_path / "e")]) == 0
    assert kvae.load_model(tmp_path / "e").prior.num_pseudo_inputs == 7
    capsys.readouterr()
    assert cli.main(["train", "--config", str(first / "config.json"), "--latent-dim", "3",
                     "--out", str(tmp_path / "no")]) == cli.EXIT_BAD_INPUT
    assert "--latent-dim: --config" in capsys.readouterr().err and not (tmp_path / "no").exists()
