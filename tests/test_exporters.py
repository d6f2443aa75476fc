"""Exported decoders run by their own runtimes reproduce the Keras decoder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from PIL import Image

import kvae
from kvae import cli, exporters

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
MODELS = {
    "mlp": dict(encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32])),
    "conv": dict(encoder=kvae.networks.conv((8, 16), 32), decoder=kvae.networks.conv((8, 16), 32)),
    "conditional": dict(encoder=kvae.networks.mlp([32]), decoder=kvae.networks.mlp([32]), num_classes=10),
    "continuous_bernoulli": dict(likelihood="continuous_bernoulli"),  # on grey digits
    "gaussian": dict(likelihood="gaussian"),  # on grey digits
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, digits):
    """Each model trained briefly on digits, saved, and exported to every format."""
    from sklearn.datasets import load_digits

    x, y = digits
    grey = (load_digits().images[..., None] / 16.0).astype("float32")
    out = {}
    for name, kwargs in MODELS.items():
        keras.utils.set_random_seed(0)
        model = kvae.VAE(input_shape=(8, 8, 1), latent_dim=3, **kwargs)
        model.compile(optimizer="adam")
        model.fit(x if model.likelihood.name == "bernoulli" else grey, y, epochs=2, batch_size=64, verbose=0)
        root = tmp_path_factory.mktemp(name)
        model.save(root / "model.keras")
        report = exporters.export(root / "model.keras", root / "export", log=lambda *a: None)
        out[name] = (model, root / "export", report)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_every_artifact_is_within_tolerance(exported, name):
    model, export_dir, report = exported[name]
    rows = {r["artifact"]: r for r in report["rows"]}
    variants = exporters.default_tflite_variants(model.likelihood)
    assert set(rows) == {"keras model.decode (eager)", "savedmodel", "onnx", *(f"tflite_{v}" for v in variants)}
    outputs = {"mean", "logits"} if model.likelihood.has_logits else {"mean"}
    for artifact, row in list(rows.items())[1:]:
        tol = exporters.TOLERANCE[artifact]
        assert set(row["errors"]) == outputs, row  # every exported output is checked, logits too
        for key, err in row["errors"].items():
            assert err["max_abs"] <= tol * err["range"], (artifact, key, err)
        assert row["max_abs_error"] <= tol, row  # the mean: absolute, as pixel values are in [0, 1]
        assert (export_dir / row["path"]).exists()
    on_disk = json.loads((export_dir / "report.json").read_text())
    assert [r["artifact"] for r in on_disk["rows"]] == [r["artifact"] for r in report["rows"]]
    meta = json.loads((export_dir / "savedmodel" / "kvae" / "1" / "assets" / "kvae_metadata.json").read_text())
    assert meta["latent_dim"] == 3 and meta["input_shape"] == [8, 8, 1] and meta["kvae_version"] == kvae.__version__


def test_saved_model_cli_run_returns_the_keras_decoder_output(exported, tmp_path):
    model, export_dir, _ = exported["mlp"]
    z = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    np.save(tmp_path / "z.npy", z)
    out = subprocess.run(
        [BIN / "saved_model_cli", "run", "--dir", export_dir / "savedmodel" / "kvae" / "1", "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"z={tmp_path / 'z.npy'}", "--outdir", tmp_path / "o"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "o" / "mean.npy"), model.decode(z).numpy(), atol=1e-5)


_SERVER = """
import sys, json
sys.modules["kvae"] = None
import numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
a = m.signatures["sample"](n=tf.constant(6), seed=tf.constant(4))["mean"].numpy()
b = m.signatures["sample"](n=tf.constant(6), seed=tf.constant(4))["mean"].numpy()
c = m.signatures["sample"](n=tf.constant(6), seed=tf.constant(5))["mean"].numpy()
enc = m.signatures["encode"](x=tf.constant(x))
rec = m.signatures["reconstruct"](x=tf.constant(x))["mean"].numpy()
np.savez(sys.argv[3], a=a, b=b, c=c, mean=enc["mean"].numpy(), stddev=enc["stddev"].numpy(), rec=rec,
         names=np.array(sorted(m.signatures.keys())))
"""


def test_saved_model_serves_every_signature_without_kvae(exported, digits, tmp_path):
    model, export_dir, _ = exported["mlp"]
    x = digits[0][:4]
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run([sys.executable, "-c", _SERVER, export_dir / "savedmodel" / "kvae" / "1",
                          tmp_path / "x.npy", tmp_path / "out.npz"], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 0, out.stderr[-2000:]
    r = np.load(tmp_path / "out.npz")
    assert set(r["names"]) == {"serving_default", "decode", "encode", "reconstruct", "sample"}
    assert r["a"].shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(r["a"], r["b"])  # same seed, same images
    assert not np.allclose(r["a"], r["c"])
    mean, stddev = model.encode(x)
    np.testing.assert_allclose(r["mean"], mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(r["stddev"], stddev.numpy(), atol=1e-5)
    np.testing.assert_allclose(r["rec"], model.reconstruct(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_onnx_is_valid_opset_17_with_named_dynamic_io(exported, name):
    model, export_dir, _ = exported[name]
    proto = onnx.load(export_dir / "onnx" / "decoder.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inputs = {i.name: i for i in proto.graph.input}
    assert "z" in inputs and ("labels" in inputs) == (name == "conditional")
    assert inputs["z"].type.tensor_type.shape.dim[0].dim_param  # symbolic batch dimension
    expected = {"mean", "logits"} if model.likelihood.has_logits else {"mean"}
    assert {o.name for o in proto.graph.output} == expected


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("batch", [1, 8])
def test_tflite_signature_runner_at_batch_1_and_8(exported, name, batch):
    model, export_dir, _ = exported[name]
    rng = np.random.default_rng(batch)
    z = rng.normal(size=(batch, 3)).astype("float32")
    labels = rng.integers(0, 10, batch).astype("int32") if model.conditional else None
    expected = model.decode(z, labels).numpy()
    for variant in exporters.default_tflite_variants(model.likelihood):
        outputs, _ = exporters.run_tflite(export_dir / "tflite" / f"decoder_{variant}.tflite", z, labels)
        assert outputs["mean"].shape == (batch, 8, 8, 1)
        np.testing.assert_allclose(outputs["mean"], expected, atol=exporters.TOLERANCE[f"tflite_{variant}"])


def test_int8_is_under_a_third_of_float32_when_weights_dominate(tmp_path):
    model = kvae.VAE(input_shape=(16, 16, 1), latent_dim=8, decoder=kvae.networks.mlp([256, 256]))
    model.save(tmp_path / "m.keras")
    exporters.export(tmp_path / "m.keras", tmp_path / "e", formats=["tflite"], log=lambda *a: None)
    f32 = (tmp_path / "e" / "tflite" / "decoder_float32.tflite").stat().st_size
    i8 = (tmp_path / "e" / "tflite" / "decoder_int8.tflite").stat().st_size
    assert f32 > 500_000  # ~135k decoder weights
    assert i8 < 0.30 * f32, (i8, f32)  # 1 byte per weight instead of 4, plus scales and graph


_NO_TF = """
import runpy, sys
sys.modules["tensorflow"] = None   # any `import tensorflow` now raises ImportError
sys.modules["kvae"] = None
sys.modules["keras"] = None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("artifact", ["tflite/decoder_int8.tflite", "onnx/decoder.onnx"])
def test_edge_runner_needs_no_tensorflow_or_kvae(exported, artifact, tmp_path):
    model, export_dir, _ = exported["mlp"]
    png = tmp_path / "grid.png"
    out = subprocess.run([sys.executable, "-c", _NO_TF, ROOT / "export" / "run_decoder.py",
                          export_dir / artifact, "--n", "9", "--seed", "2", "--out", png],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    with Image.open(png) as im:
        grid = np.asarray(im.convert("L"), "float32") / 255
    assert grid.shape == (4 * (3 * 9 + 1), 4 * (3 * 9 + 1))  # 3x3 tiles of 8 px, 1 px padding, scaled 4x
    # the top-left tile is the decoder's picture of the runner's first latent
    z = np.random.default_rng(2).standard_normal((9, 3)).astype("float32")
    tile = grid[4:4 + 32:4, 4:4 + 32:4]
    np.testing.assert_allclose(tile, model.decode(z[:1]).numpy()[0, ..., 0], atol=0.05)


def test_edge_runner_for_a_conditional_decoder_and_the_latency_bench(exported, tmp_path):
    _, export_dir, _ = exported["conditional"]
    out = subprocess.run([sys.executable, "-c", _NO_TF, ROOT / "export" / "run_decoder.py",
                          export_dir / "onnx" / "decoder.onnx", "--label", "3", "--out", tmp_path / "g.png"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    bench = subprocess.run([sys.executable, "-c", _NO_TF, ROOT / "export" / "bench_latency.py", export_dir,
                            "--threads", "1", "--batch", "1", "--runs", "20"], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert len([line for line in bench.stdout.splitlines() if "decoder" in line]) == 5  # 4 tflite + onnx


# ---------------------------------------------------------------- bad input
def test_corrupt_keras_file(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(exporters.ExportError, match=r"bad\.keras is unreadable or truncated"):
        exporters.export(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_kvae_keras_file(tmp_path):
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(exporters.ExportError, match="holds a Sequential, not a kvae.VAE"):
        exporters.export(tmp_path / "plain.keras", tmp_path / "out")


def test_existing_output_needs_force(exported, tmp_path):
    _, export_dir, _ = exported["mlp"]
    source = export_dir.parent / "model.keras"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(exporters.ExportError, match="exists; use --force"):
        exporters.export(source, tmp_path / "out", formats=["onnx"])
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(exporters.ExportError, match="keep.txt; nothing was deleted"):  # not an export of kvae's
        exporters.export(source, tmp_path / "out", formats=["onnx"], force=True, log=lambda *a: None)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    exporters.export(source, tmp_path / "new", formats=["onnx"], log=lambda *a: None)
    exporters.export(source, tmp_path / "new", formats=["onnx"], force=True, log=lambda *a: None)  # an export: replaced
    assert (tmp_path / "new" / "onnx" / "decoder.onnx").exists()


def test_a_failed_check_is_an_error_and_leaves_nothing(exported, tmp_path, monkeypatch):
    _, export_dir, _ = exported["mlp"]
    monkeypatch.setitem(exporters.TOLERANCE, "tflite_float16", 0.0)  # float16 cannot be exact
    with pytest.raises(exporters.VerificationError, match=r"tflite_float16 does not match .* > 0"):
        exporters.export(export_dir.parent / "model.keras", tmp_path / "out", formats=["tflite"],
                         tflite_variants=["float32", "float16"], log=lambda *a: None)  # named: no default to drop
    assert list(tmp_path.iterdir()) == []  # no output, no partial directory


def test_cli_export_bad_inputs_are_one_line_exit_2(exported, tmp_path, capsys):
    _, export_dir, _ = exported["mlp"]
    source = export_dir.parent / "model.keras"
    cases = [
        (["export", source, "--format", "coreml", "--out", tmp_path / "o"], "Unknown format(s) coreml"),
        (["export", tmp_path / "nothing", "--out", tmp_path / "o"], "neither a kvae run directory nor a .keras"),
        (["export", source, "--out", export_dir], "exists; use --force"),
    ]
    for argv, message in cases:
        assert cli.main([str(a) for a in argv]) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_full_int8_continuous_bernoulli_is_refused_up_front(exported, tmp_path):
    model, _, _ = exported["continuous_bernoulli"]
    model.save(tmp_path / "cb.keras")
    with pytest.raises(exporters.ExportError, match="int8: the full-int8 interpreter cannot compute"):
        exporters.export(tmp_path / "cb.keras", tmp_path / "out", formats=["tflite"], tflite_variants=["int8"])
    assert not (tmp_path / "out").exists()


def test_int8_logits_are_checked_against_the_clipped_keras_logits(exported):
    _, _, report = exported["mlp"]
    row = {r["artifact"]: r for r in report["rows"]}["tflite_int8"]
    assert row["errors"]["logits"]["range"] <= kvae.distributions.Bernoulli.int8_logit_clip
    assert report["metadata"]["int8_logit_clip"] == 8.0


def test_an_interrupted_export_leaves_nothing_and_a_killed_ones_leftovers_go(exported, tmp_path, monkeypatch):
    model, _, _ = exported["mlp"]
    model.save(tmp_path / "m.keras")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.partial-{dead.pid}-abcdef"  # what `kill -9` during an export leaves
    (stale / "onnx").mkdir(parents=True)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kvae.exporters.artifacts, "write_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        exporters.export(tmp_path / "m.keras", tmp_path / "out", formats=["onnx"], log=lambda *a: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]  # stale one swept, nothing new left
    monkeypatch.undo()
    old = os.umask(0o022)
    try:
        exporters.export(tmp_path / "m.keras", tmp_path / "out", formats=["onnx"], log=lambda *a: None)
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "out"]


def test_a_default_variant_that_fails_its_check_is_left_out_and_reported(tmp_path, monkeypatch, capsys):
    """Asked for the defaults, a user gets every artifact that verifies and the reason for the one that
    does not (the export wrote nothing at all); a variant named with --tflite-variants still fails whole."""
    from kvae.exporters import base

    model = kvae.VAE((8, 8, 1), 2, encoder=kvae.networks.mlp([8]), decoder=kvae.networks.mlp([8]))
    model.compile()
    model.save(tmp_path / "m.keras")
    monkeypatch.setitem(base.TOLERANCE, "tflite_dynamic_int8", 1e-12)  # no int8 decoder is that exact
    assert cli.main(["export", str(tmp_path / "m.keras"), "--format", "tflite", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (skipped,) = [r for r in report["rows"] if "not_written" in r]
    assert skipped["artifact"] == "tflite_dynamic_int8" and "does not match the Keras decoder" in skipped["not_written"]
    assert sorted(p.name for p in (tmp_path / "out" / "tflite").iterdir()) == [
        "decoder_float16.tflite", "decoder_float32.tflite", "decoder_int8.tflite"]
    assert "not written: tflite_dynamic_int8 does not match" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "m.keras"), "--format", "tflite", "--tflite-variants",
                     "float32,dynamic_int8", "--out", str(tmp_path / "named")]) == cli.EXIT_FAILED
    assert not (tmp_path / "named").exists()
