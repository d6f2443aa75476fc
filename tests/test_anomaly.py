"""Anomaly scores (kvae.anomaly), their calibration, `kvae anomalies`, and the exported scorer."""

import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest

import kvae
from kvae import anomaly, cli, data, exporters

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def fit(x, latent_dim=2, epochs=10, hidden=32, lr=5e-3):
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=x.shape[1:], latent_dim=latent_dim, encoder=kvae.networks.mlp([hidden]),
                     decoder=kvae.networks.mlp([hidden]))
    model.compile(optimizer=keras.optimizers.Adam(lr))
    model.fit(x, epochs=epochs, batch_size=100, verbose=0)
    return model


@pytest.fixture(scope="module")
def noise_model():
    """Inputs of independent Bernoulli(0.3) pixels: the best model is p = 0.3
    everywhere, under which an all-black image (-log p = 784 x 0.357 = 280
    nats) is far MORE likely than a typical input (784 x 0.611 = 479 nats):
    the simple-image failure of plain likelihoods, in closed form."""
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(2200, 28, 28, 1)) < 0.3).astype("float32")
    return fit(x[:2000]), x[2000:]


def test_complexity_and_typicality_flag_the_simple_input_that_nll_prefers(noise_model):
    model, heldin = noise_model
    inliers, held = heldin[:100], heldin[100:]
    black = np.zeros((20, 28, 28, 1), "float32")
    both = np.concatenate([inliers, black])
    nll = anomaly.NLL(k=10)(model, both)
    # the model learnt the population: -log p(x) of inliers within 2% of the closed form (479 nats), and
    # black images at most the closed form's 280 (+2%; measured 270: the latent can code pixel density)
    assert np.mean(nll[:100]) == pytest.approx(-784 * (0.3 * math.log(0.3) + 0.7 * math.log(0.7)), rel=0.02)
    assert np.mean(nll[100:]) < -784 * math.log(0.7) * 1.02
    assert anomaly.auroc(nll[:100], nll[100:]) == 0.0  # every black image looks more normal than every inlier
    for score in (anomaly.Complexity(k=10), anomaly.Complexity(base="elbo", compressor="zlib"),
                  anomaly.Typicality(k=10).fit(model, held)):
        s = score(model, both)
        assert s.shape == (120,)
        assert anomaly.auroc(s[:100], s[100:]) == 1.0, score


def test_typicality_needs_held_in_data_and_scores_groups(noise_model):
    model, heldin = noise_model
    with pytest.raises(ValueError, match="typicality needs held-in data first"):
        anomaly.Typicality(k=5)(model, heldin[:4])
    t = anomaly.Typicality(k=5, group=4).fit(model, heldin[:50])
    assert t.entropy == pytest.approx(np.mean(anomaly.NLL(k=5)(model, heldin[:50])))
    assert t(model, heldin[:8]).shape == (2,)
    with pytest.raises(ValueError, match="multiple of 4 inputs, got 6"):
        t(model, heldin[:6])


def test_likelihood_ratio_is_the_difference_of_two_nlls(noise_model, tmp_path):
    model, x = noise_model
    assert np.all(anomaly.LikelihoodRatio(model, k=5)(model, x[:10]) == 0)  # a model against itself
    other = fit(x[:200], epochs=1)
    other.save(tmp_path / "bg.keras")
    ratio = anomaly.get("likelihood_ratio", background=str(tmp_path / "bg.keras"), k=5)(model, x[:10])
    np.testing.assert_allclose(ratio, anomaly.NLL(k=5)(model, x[:10]) - anomaly.NLL(k=5)(other, x[:10]), atol=1e-4)
    with pytest.raises(ValueError, match="needs a background model"):
        anomaly.get("likelihood_ratio")
    small = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    with pytest.raises(ValueError, match=r"must have the model's likelihood and input shape"):
        anomaly.LikelihoodRatio(small)(model, x[:2])


def test_likelihood_regret_measures_what_a_poor_encoder_leaves_behind(digits):
    x, _ = digits
    model = fit(x[:1500], latent_dim=4, epochs=20, hidden=64, lr=3e-3)
    spoilt = kvae.VAE.from_config(model.get_config())
    spoilt.set_weights(model.get_weights())
    kernel, bias = spoilt.posterior_head.get_weights()
    spoilt.posterior_head.set_weights([0 * kernel, np.r_[np.full(4, 2.0), np.zeros(4)].astype("float32")])
    regret = anomaly.LikelihoodRegret(steps=30, learning_rate=0.1)
    good, bad = regret(model, x[1500:1600]), regret(spoilt, x[1500:1600])
    # the amortised encoder is near its per-input optimum; every input of the
    # spoilt encoder (all q(z|x) = N(2, 1)) gains from being fitted
    assert np.median(good) < 2.0
    assert np.min(bad) > 5 * np.median(good) and np.median(bad) > 10
    elbo = anomaly.NegativeELBO()
    # after fitting, the two models' ELBOs are close: the regret is the encoder's shortfall
    assert np.median(elbo(spoilt, x[1500:1600]) - elbo(model, x[1500:1600])) > 5


def test_noise_images_score_as_more_anomalous_than_digits(digits):
    x, _ = digits
    model = fit(x[:1500], epochs=15, hidden=64)
    noise = (np.random.default_rng(0).uniform(size=(20, 8, 8, 1)) < 0.5).astype("float32")
    for name in ("nll", "elbo"):
        scores = anomaly.get(name)(model, np.concatenate([x[1500:1600], noise]))
        assert scores.shape == (120,)
        assert scores[100:].min() > np.median(scores[:100]), name


def test_calibration_holds_its_false_positive_rate_on_fresh_data():
    rng = np.random.default_rng(0)
    t = anomaly.calibrate(rng.normal(size=4000), fpr=0.05)
    assert t.heldin_fpr <= 0.05 and t.n == 4000
    fresh = t.flag(rng.normal(size=100_000)).mean()
    assert fresh == pytest.approx(0.05, abs=0.01)  # binomial s.d. of the quantile at n=4000: ~0.0035
    with pytest.raises(ValueError, match=r"must be in \(0, 1\), got 1.5"):
        anomaly.calibrate([1.0, 2.0], fpr=1.5)
    with pytest.raises(ValueError, match="needs at least 100 held-in scores, got 20"):
        anomaly.calibrate(np.arange(20.0), fpr=0.01)
    with pytest.raises(ValueError, match="must be finite"):
        anomaly.calibrate([np.nan] * 50, fpr=0.1)


def test_auroc_and_fpr_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 20, 300).astype(float), rng.integers(5, 25, 200).astype(float)  # many ties
    labels = np.r_[np.zeros(len(a)), np.ones(len(b))]
    assert anomaly.auroc(a, b) == pytest.approx(roc_auc_score(labels, np.r_[a, b]), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, np.r_[a, b])
    assert anomaly.fpr_at_tpr(a, b, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_compressed_bits():
    rng = np.random.default_rng(0)
    binary = (rng.uniform(size=(3, 28, 28, 1)) < 0.3).astype("float32")
    packed = np.packbits(binary[0].astype("uint8")).tobytes()
    assert anomaly.compressed_bits(binary, "zlib")[0] == 8 * len(zlib.compress(packed, 9))
    png = anomaly.compressed_bits(np.concatenate([np.zeros((1, 28, 28, 1)), binary]), "png")
    assert png[0] < 0.4 * png[1:].min()  # a constant image is short (552 bits, most of it header), noise long
    grey = rng.uniform(size=(2, 28, 28, 1))
    assert anomaly.compressed_bits(grey).min() > 2 * png[1:].max()  # 'auto' is png here: 8 bits per pixel, not 1
    assert anomaly.compressed_bits(rng.uniform(size=(2, 10)), "zlib").shape == (2,)
    with pytest.raises(ValueError, match="codes binary images"):
        anomaly.compressed_bits(grey, "context")
    with pytest.raises(ValueError, match="Unknown compressor 'gzip'"):
        anomaly.compressed_bits(binary, "gzip")


def test_context_coder_lengths_are_ideal_code_lengths():
    # iid Bernoulli(0.3) pixels: every context's estimate converges to 0.3, so the code length
    # approaches the entropy (784 x 0.881 = 691 bits) plus the KT estimator's learning cost
    # (~ 1/2 log2 n per context used: 1024 contexts, ~30 bits each at most)
    rng = np.random.default_rng(0)
    noise = (rng.uniform(size=(50, 28, 28, 1)) < 0.3).astype("float32")
    bits = anomaly.compressed_bits(noise, "context")
    assert 691 < bits.mean() < 691 + 450
    # a constant image costs only the learning of one context: sum_i log2((i + 1) / (i + 1/2)) ~ 1/2 log2(784) + 1
    black = anomaly.compressed_bits(np.zeros((1, 28, 28, 1)), "context")[0]
    expected = sum(math.log2((i + 1.0) / (i + 0.5)) for i in range(784))
    assert black == pytest.approx(expected, rel=1e-9)
    # a vertical-stripe image is predictable from the row above: far shorter than noise of the same density
    stripes = np.zeros((1, 28, 28, 1), "float32")
    stripes[..., ::3, :] = 1
    assert anomaly.compressed_bits(stripes, "context")[0] < 0.2 * bits.mean()


def test_scores_refuse_bad_arguments():
    with pytest.raises(ValueError, match="Unknown score 'ratio'. Choose one of: complexity, elbo"):
        anomaly.get("ratio")
    with pytest.raises(ValueError, match=r"The elbo score takes no k \(it takes seed, batch_size\)"):
        anomaly.get("elbo", k=5)
    with pytest.raises(ValueError, match="base must be a score that needs no reference"):
        anomaly.Complexity(base="iwae")
    with pytest.raises(ValueError, match="steps >= 1"):
        anomaly.LikelihoodRegret(steps=0)
    model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2)
    with pytest.raises(data.DataError, match=r"Input shape \(9, 9, 1\) .* input_shape \(8, 8, 1\)"):
        anomaly.NLL(k=2)(model, np.zeros((2, 9, 9, 1), "float32"))


def test_perturbed_pipeline_replaces_the_share_asked_for():
    import tensorflow as tf

    zeros = np.zeros((400, 8, 8, 1), "float32")
    epoch = tf.Variable(0, dtype=tf.int64)
    batches = lambda: np.concatenate(list(data.pipeline(zeros, batch_size=100, perturb=0.4, epoch=epoch,
                                                        shuffle=False).as_numpy_iterator()))
    first = batches()
    assert set(np.unique(first)) == {0.0, 1.0}  # binary data stays binary
    assert first.mean() == pytest.approx(0.2, abs=0.01)  # 40% replaced, half of them by a 1
    np.testing.assert_array_equal(batches(), first)  # a function of (seed, epoch): resume is exact
    epoch.assign(1)
    assert not np.array_equal(batches(), first)
    grey = np.full((400, 8, 8, 1), 0.5, "float32")
    u = np.concatenate(list(data.pipeline(grey, batch_size=100, perturb=0.4, shuffle=False).as_numpy_iterator()))
    assert np.mean(u != 0.5) == pytest.approx(0.4, abs=0.01)
    with pytest.raises(data.DataError, match=r"perturb must be in \[0, 1\)"):
        data.pipeline(zeros, perturb=1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("anomaly") / "run"
    assert run_cli("train", "--dataset", "digits", "--epochs", "3", "--latent-dim", "4", "--quiet",
                   "--out", out) == 0
    return out


def test_cli_anomalies_with_a_score_and_a_threshold(run, tmp_path, capsys):
    out = tmp_path / "a.png"
    assert run_cli("anomalies", run, "--score", "typicality", "--k", 5, "--fpr", 0.1, "--out", out) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["score"] == "typicality" and result["options"]["k"] == 5
    assert len(result["scores"]) == 359  # the digits' test split
    t = result["threshold"]
    assert t["fpr"] == 0.1 and t["heldin_fpr"] <= 0.1 and t["heldin_n"] > 50
    flagged = np.flatnonzero(np.array(result["scores"]) > t["value"])
    assert result["flagged"] == flagged.tolist()
    assert "flagged" in capsys.readouterr().out
    np.save(tmp_path / "mine.npy", (np.random.default_rng(0).uniform(size=(30, 8, 8)) * 255).astype("uint8"))
    assert run_cli("anomalies", run, "--score", "elbo", "--data", tmp_path / "mine.npy", "--out", out) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert len(result["scores"]) == 30 and result["inputs"].endswith("mine.npy")


@pytest.mark.parametrize("flags, message", [
    (["--score", "ratio"], "--score must be one of complexity, elbo"),
    (["--fpr", "2"], r"--fpr must be in \(0, 1\)"),
    (["--score", "nll", "--background", "x"], "--background is the likelihood_ratio score's background model"),
    (["--score", "likelihood_ratio"], "needs a background model"),
    (["--score", "elbo", "--k", "5"], "--k is not used by the elbo score"),
    (["--data", "BAD"], "Cannot read inputs from 'BAD'"),
    (["--data", "WRONG.npy"], r"WRONG.npy: Input shape \(5, 5, 1\) .* input_shape \(8, 8, 1\)"),
])
def test_cli_anomalies_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys, flags, message):
    np.save(tmp_path / "WRONG.npy", np.zeros((3, 5, 5), "float32"))
    flags = [str(tmp_path / f) if f.endswith(".npy") else f for f in flags]
    assert run_cli("anomalies", run, *flags, "--out", tmp_path / "a.png") == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["WRONG.npy"]


def test_exported_scorer_matches_keras_and_runs_without_tensorflow(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert run_cli("export", run, "--format", "tflite,onnx", "--tflite-variants", "float32", "--scorer",
                   "--fpr", "0.1", "--out", out) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["artifact"]: r for r in report["rows"]}
    for name in ("scorer_tflite_float32", "scorer_tflite_float16", "scorer_onnx"):
        assert rows[name]["errors"]["score"]["max_abs"] <= rows[name]["tolerance"] * rows[name]["errors"]["score"]["range"]
    meta = json.loads((out / "metadata.json").read_text())
    thresholds = meta["scorer"]["thresholds"]
    assert thresholds["binarize"] == "static" and thresholds["elbo"]["fpr"] == thresholds["complexity"]["fpr"] == 0.1
    # the device runner: no TensorFlow, no kvae; its scores are the Keras scores
    model = kvae.load_model(run / "best.keras")
    x, _ = data.load("digits").test
    np.save(tmp_path / "img.npy", x[:12, :, :, 0])  # grey images in [0, 1], without their channel axis
    prepared = data.binarize(x[:12], "static", 0)  # as the runner prepares them (--seed 0)
    elbo = anomaly.NegativeELBO()(model, prepared)
    keras_scores = {"elbo": elbo, "complexity": anomaly.Complexity(base="elbo")(model, prepared)}
    code = "import sys; sys.modules['tensorflow'] = sys.modules['kvae'] = None; sys.path.insert(0, sys.argv[1]); " \
           "import score; sys.exit(score.main(sys.argv[2:]))"
    for artifact, name in [("tflite/scorer_float32.tflite", "complexity"), ("onnx/scorer.onnx", "elbo")]:
        done = subprocess.run([sys.executable, "-c", code, str(ROOT / "export"), str(out / artifact),
                               str(tmp_path / "img.npy"), "--score", name, "--json", str(tmp_path / "s.json")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        result = json.loads((tmp_path / "s.json").read_text())
        assert result["score"] == name and result["threshold"] == thresholds[name]["value"]
        got = np.array([r["score"] for r in result["rows"]])
        np.testing.assert_allclose(got, keras_scores[name], rtol=1e-4, atol=1e-3)
        clear = np.abs(keras_scores[name] - thresholds[name]["value"]) > 1e-2  # not on the threshold itself
        verdicts = np.array([r["anomalous"] for r in result["rows"]])
        assert (verdicts == (keras_scores[name] > thresholds[name]["value"]))[clear].all()


def test_scorer_export_refuses_what_it_cannot_run(tmp_path):
    vamp = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, prior="vamp")
    vamp.save(tmp_path / "vamp.keras")
    with pytest.raises(exporters.ExportError, match="needs the KL in closed form"):
        exporters.export(tmp_path / "vamp.keras", tmp_path / "out", formats=["onnx"], scorer=True)
    with pytest.raises(exporters.ExportError, match="add one of them to --format"):
        exporters.export(tmp_path / "vamp.keras", tmp_path / "out", formats=["savedmodel"], scorer=True)
    cb = kvae.VAE(input_shape=(8, 8, 1), latent_dim=2, likelihood="continuous_bernoulli")
    cb.save(tmp_path / "cb.keras")
    with pytest.raises(exporters.ExportError, match="continuous_bernoulli likelihood has no exportable"):
        exporters.export(tmp_path / "cb.keras", tmp_path / "out", formats=["onnx"], scorer=True)
    assert not (tmp_path / "out").exists()
