"""The part protocol from outside: a posterior, a prior, a likelihood and an objective with one
hyper-parameter, defined and registered in this file only, train, save, reload, evaluate, export
and score, from Python and through the CLI; a part that declares it cannot do something is refused
in one line naming the part and the capability."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import kvae
from kvae import anomaly, cli, evaluate, exporters, objectives, registry
from kvae.distributions import Likelihood, Posterior
from kvae.priors import Prior

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="outside")
class IsotropicPosterior(Posterior):
    """q(z|x) = N(mu, s^2 I): d + 1 numbers per example; a diagonal Gaussian, so it declares so."""

    name = "outside_isotropic"
    diagonal_gaussian = has_base_gaussian = True

    def num_params(self, latent_dim):
        return latent_dim + 1

    def mean_log_var(self, params):
        params = tf.cast(params, tf.float32)
        mu, log_var = params[..., :-1], tf.clip_by_value(params[..., -1:], -8.0, 4.0)
        return mu, log_var * tf.ones_like(mu)

    base_mean_log_var = mean_log_var

    def mode_stddev(self, params):
        mu, log_var = self.mean_log_var(params)
        return mu, tf.exp(0.5 * log_var)

    def distribution(self, params):
        return tfd.MultivariateNormalDiag(*self.mode_stddev(params))

    def reparameterize(self, params, eps):
        mu, stddev = self.mode_stddev(params)
        return mu + stddev * eps


@keras.saving.register_keras_serializable(package="outside")
class FlowLikePosterior(IsotropicPosterior):
    """The same family, declaring that it has no closed form (as a flow would)."""

    name = "outside_no_closed_form"
    closed_form = diagonal_gaussian = has_base_gaussian = False


@keras.saving.register_keras_serializable(package="outside")
class LaplacePrior(Prior):
    """p(z) = prod_j Laplace(z_j; 0, scale): no closed-form KL to a Gaussian (a Monte Carlo KL)."""

    def __init__(self, latent_dim, input_shape=None, scale=1.0, **kwargs):
        super().__init__(latent_dim, **kwargs)
        self.scale = float(scale)

    def distribution(self, model=None):
        return tfd.Independent(tfd.Laplace(tf.zeros([self.latent_dim]), self.scale * tf.ones([self.latent_dim])), 1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="outside")
class SmoothedBernoulli(Likelihood):
    """p(x|z) = Bernoulli(eps + (1 - 2 eps) sigmoid(logit)): never certain; exports to TFLite float32 only."""

    name = "smoothed_bernoulli"
    unit_interval = True
    tflite_variants = ("float32",)

    def __init__(self, eps=0.01):
        self.eps = float(eps)

    def get_config(self):
        return {"eps": self.eps}

    def mean(self, params):
        return self.eps + (1.0 - 2.0 * self.eps) * tf.sigmoid(tf.cast(params, tf.float32))

    def distribution(self, params, event_ndims):
        return tfd.Independent(tfd.Bernoulli(probs=self.mean(params), dtype=tf.float32), event_ndims)


@keras.saving.register_keras_serializable(package="outside")
class FlooredELBO(objectives.Objective):
    """loss = reconstruction + max(floor, KL): a floor on the whole KL."""

    name = "floored"

    def __init__(self, floor=1.0, num_samples=1):
        super().__init__(num_samples)
        self.floor = float(floor)

    def loss(self, terms):
        return terms.reconstruction + tf.maximum(self.floor, terms.kl)

    def get_config(self):
        return {"floor": self.floor, **super().get_config()}


OUTSIDE = [("posterior", "outside_isotropic", IsotropicPosterior), ("posterior", "outside_no_closed_form", FlowLikePosterior),
           ("prior", "laplace", LaplacePrior), ("likelihood", "smoothed_bernoulli", SmoothedBernoulli),
           ("objective", "floored", FlooredELBO)]


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """The outside parts are registered for this file's tests only (the registry is the process's)."""
    for kind, name, cls in OUTSIDE:
        registry.register(kind, name)(cls)
    yield
    for kind, name, _ in OUTSIDE:
        registry.unregister(kind, name)


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def _outside_model(floor=0.5):
    return kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, encoder=kvae.networks.mlp([16]),
                    decoder=kvae.networks.mlp([16]), likelihood="smoothed_bernoulli", posterior="outside_isotropic",
                    prior="laplace", objective=FlooredELBO(floor))


def test_outside_parts_train_save_evaluate_export_and_score_from_python(digits, tmp_path):
    x = digits[0][:256]
    model = _outside_model()
    model.compile(optimizer="adam")
    history = model.fit(x, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # the step minimises the outside objective: reconstruction + max(floor, KL), checked in numpy
    terms = model.terms(x[:64], k=1, seed=(1, 2))
    np.testing.assert_allclose(model.objective.loss(terms).numpy(),
                               terms.reconstruction.numpy() + np.maximum(0.5, terms.kl.numpy()), rtol=1e-6)
    # the likelihood is the outside one: means stay eps away from 0 and 1
    mean = model.decode(np.zeros((4, 2), "float32")).numpy()
    assert mean.min() >= 0.01 - 1e-6 and mean.max() <= 0.99 + 1e-6
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    assert (type(again.posterior), type(again.prior), type(again.likelihood), again.objective.floor) == \
        (IsotropicPosterior, LaplacePrior, SmoothedBernoulli, 0.5)
    np.testing.assert_array_equal(again.reconstruct(x[:8]).numpy(), model.reconstruct(x[:8]).numpy())
    result = evaluate.summary(again, x[:32], k=5)
    assert np.isfinite(result["log_likelihood"]) and result["log_likelihood"] >= -result["negative_elbo"] - 1.0
    for name in ("elbo", "nll"):
        assert np.all(np.isfinite(anomaly.get(name)(again, x[:16])))
    # exports where it says it exports: the likelihood declares TFLite float32 only
    report = exporters.export(tmp_path / "m.keras", tmp_path / "export", formats=["tflite", "onnx"], log=lambda *a: None)
    assert sorted(r["artifact"] for r in report["rows"][1:]) == ["onnx", "tflite_float32"]
    # and the device scorer, which needs a closed-form KL, is refused naming the capability
    with pytest.raises(exporters.ExportError, match="needs the KL in closed form"):
        exporters.export(tmp_path / "m.keras", tmp_path / "scorer", formats=["onnx"], scorer=True)


def test_outside_parts_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--dataset", "digits", "--latent-dim", 2, "--epochs", 1, "--quiet", "--likelihood", "smoothed_bernoulli",
             "--posterior", "outside_isotropic", "--prior", "laplace", "--objective", "floored"]
    assert run_cli("train", *flags, "--objective-option", "floor=0.25", "--prior-option", "scale=2",
                   "--likelihood-option", "eps=0.02", "--out", run) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["objective"]["config"] == {"floor": 0.25, "num_samples": 1}
    assert model["prior"]["config"]["scale"] == 2.0 and model["likelihood"]["config"] == {"eps": 0.02}
    assert kvae.load_model(run).objective.floor == 0.25
    assert run_cli("evaluate", run, "--k", 5) == 0
    assert run_cli("score", run, "--data", "digits", "--score", "elbo", "--out", tmp_path / "s.parquet", "--quiet") == 0
    assert run_cli("export", run, "--format", "onnx", "--out", tmp_path / "export") == 0
    assert (tmp_path / "export" / "onnx" / "decoder.onnx").is_file()
    capsys.readouterr()
    # an option the part does not take: one line naming the flag, the part and what it takes; nothing written
    assert run_cli("train", *flags, "--objective-option", "flor=1", "--out", tmp_path / "bad") == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "--objective-option" in err and "'floored' takes no option 'flor'" in err
    assert "(it takes floor, num_samples)" in err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("parts, message", [
    (dict(posterior="outside_no_closed_form", prior="vamp"),
     "needs a closed-form posterior; the 'outside_no_closed_form' posterior is not one"),
    (dict(posterior="outside_no_closed_form", prior="vamp_base"),
     "the 'outside_no_closed_form' posterior has none"),
    (dict(posterior="outside_isotropic", free_bits=0.5), "needs a per-dimension KL"),
])
def test_a_part_that_declares_it_cannot_is_refused_naming_the_part_and_the_capability(parts, message):
    with pytest.raises(ValueError, match=message):
        kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, **parts)
