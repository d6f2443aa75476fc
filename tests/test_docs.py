"""The documentation runs: every docstring Example in kvae (doctest), the
~30-line example part in docs/ARCHITECTURE.md, and every module's public
surface is declared (`__all__`) and documented (module sizes: tests/test_layers.py)."""

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest

import kvae

ROOT = Path(__file__).resolve().parents[1]
#: every module of the package, subpackages' modules included (by name under kvae.)
MODULES = sorted(m.name[len("kvae."):] for m in pkgutil.walk_packages(kvae.__path__, "kvae.")
                 if not m.name.endswith("__main__"))  # running, not importing, is what it is for


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"kvae.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in kvae.{name}"


def test_the_package_docstring_examples_exist_where_they_matter():
    """The parts a user builds with carry an Example that doctest runs."""
    import kvae.model
    import kvae.objectives
    import kvae.registry

    for obj in [kvae.registry, kvae.objectives, kvae.objectives.ELBO, kvae.model.VAE, kvae.latent,
                kvae.evaluate, kvae.replicas, kvae.priors]:
        assert ">>>" in (obj.__doc__ or ""), obj


@pytest.mark.parametrize("name", MODULES)
def test_public_surface_is_declared_and_documented(name):
    module = importlib.import_module(f"kvae.{name}")
    if name == "cli":
        return  # a command, not an API: its surface is `kvae --help`
    assert hasattr(module, "__all__"), f"kvae.{name} has no __all__"
    assert module.__doc__ and len(module.__doc__.strip()) > 40, name
    for public in module.__all__:
        obj = getattr(module, public)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        where = f"kvae.{name}.{public}"
        doc = obj.__doc__ or ""
        assert doc.strip(), f"{where} has no docstring"
        target = obj if inspect.isfunction(obj) else obj.__init__
        if target is object.__init__ or not inspect.isfunction(target):
            continue
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
        if params:  # typed arguments, named in an Args section
            assert "Args:" in doc, f"{where} takes {params} but has no Args: section"
        if inspect.isfunction(obj) and re.search(r"\n\s+return \S", inspect.getsource(obj)):
            assert "Returns" in doc or "Raise" in doc.split("\n")[0], f"{where} returns a value but has no Returns:"


def _architecture_example():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_architecture_example_adds_an_objective_and_a_posterior(tmp_path):
    code = _architecture_example()
    assert 25 <= len(code.strip().splitlines()) <= 70
    scope = {}
    exec(compile(code, "ARCHITECTURE.md", "exec"), scope)
    model, x = scope["model"], scope["x"]
    assert np.all(np.isfinite(scope["history"].history["loss"]))
    # the new posterior is found by name, and is what the model uses: one scale per example
    assert isinstance(kvae.registry.get("posterior", "isotropic"), scope["IsotropicGaussian"])
    _, stddev = model.encode(x[:5])
    np.testing.assert_allclose(stddev.numpy(), np.repeat(stddev.numpy()[:, :1], 2, axis=1))
    # the new objective is what the step minimises: reconstruction + max(2, KL), checked in numpy
    terms = model.terms(x[:64], k=1, seed=(1, 2))
    expected = terms.reconstruction.numpy() + np.maximum(2.0, terms.kl.numpy())
    np.testing.assert_allclose(model.objective.loss(terms).numpy(), expected, rtol=1e-6)
    assert np.any(terms.kl.numpy() < 2.0) or np.any(terms.kl.numpy() > 2.0)
    # and both parts round-trip through a .keras file
    model.save(tmp_path / "m.keras")
    again = kvae.load_model(tmp_path / "m.keras")
    assert type(again.objective).__name__ == "TotalFreeBits" and again.objective.floor == 2.0
    np.testing.assert_array_equal(again.reconstruct(x[:4]).numpy(), model.reconstruct(x[:4]).numpy())
