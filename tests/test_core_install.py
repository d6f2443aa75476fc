"""kvae without its extras: the model trains, saves and reloads, and each
optional part names the extra to install. Runs in the main suite (the optional
packages blocked in a subprocess) and, by `make test-other-python`, in a venv
on another Python version where only `pip install kvae` was done."""

import os
import subprocess
import sys
import textwrap

OPTIONAL = ("sklearn", "matplotlib", "PIL", "scipy", "tensorflow_datasets", "tf2onnx", "onnx", "onnxruntime",
            "ai_edge_litert", "tensorboard")

SCRIPT = textwrap.dedent("""
    import sys
    for name in {optional!r}:
        sys.modules[name] = None  # as if not installed (ImportError on import)
    import numpy as np
    import kvae
    x = (np.random.default_rng(0).uniform(size=(256, 6, 6, 1)) > 0.5).astype("float32")
    model = kvae.VAE(input_shape=(6, 6, 1), latent_dim=2)
    model.compile(optimizer="adam")
    history = model.fit(x, epochs=3, batch_size=64, verbose=0)
    elbo = history.history["elbo"]
    assert elbo[-1] > elbo[0], elbo
    model.save(sys.argv[1])
    again = kvae.load_model(sys.argv[1])
    z = np.random.default_rng(1).normal(size=(4, 2)).astype("float32")
    np.testing.assert_array_equal(again.decode(z).numpy(), model.decode(z).numpy())
    for call in (lambda: kvae.plots.grid_figure(x[:4]), lambda: kvae.data.load("digits"),
                 lambda: kvae.exporters.export(sys.argv[1], sys.argv[1] + ".out", formats=["onnx"])):
        try:
            call()
        except kvae.extras.MissingExtraError as e:
            print(e)
        else:
            raise AssertionError("no MissingExtraError")
    from kvae import cli
    print("exit", cli.main(["train", "--dataset", "digits", "--out", sys.argv[1] + ".run"]))
    print("python", sys.version_info[:2])
""")


def test_core_without_extras(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(optional=OPTIONAL), str(tmp_path / "m.keras")],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "Pictures needs the 'matplotlib' package, which is not installed: pip install 'kvae[plots]'" in lines
    assert "The digits dataset needs the 'sklearn' package, which is not installed: pip install 'kvae[data]'" in lines
    assert any("pip install 'kvae[export]'" in line for line in lines)
    assert "exit 2" in lines and "pip install 'kvae[data]'" in done.stderr  # the CLI: one line, exit 2
    assert not (tmp_path / "m.keras.run").exists() and not (tmp_path / "m.keras.out").exists()


def test_optional_packages_really_absent():
    """Only in the core-only venv of `make test-other-python` (KVAE_CORE_ONLY=1)."""
    import importlib.util

    import pytest

    if os.environ.get("KVAE_CORE_ONLY") != "1":
        pytest.skip("the main venv has the extras; `make test-other-python` runs this")
    assert [m for m in OPTIONAL if importlib.util.find_spec(m) is not None] == []
