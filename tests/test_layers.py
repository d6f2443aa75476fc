"""The house's layer rules, read from the import graph of kvae's source (every
import, those inside functions too): no cycle, no arrow up a layer, no import of
another module's private name, and no module over 500 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "kvae"

#: layers, lowest first: a module may import its own layer and those below it, never one above.
LAYERS = [
    ("base", {"extras", "registry", "replicas", "progress", "files"}),
    ("data", {"data"}),  # the package and every module in it
    ("parts", {"distributions", "flows", "hierarchical", "priors", "networks", "objectives", "fused", "optimizers"}),
    ("model", {"model"}),
    ("saving", {"saving"}),
    ("tools", {"evaluate", "latent", "anomaly", "scoring", "exporters"}),
    ("runs", {"config", "rundir", "plots", "callbacks", "recipes", "runs"}),
    ("cli", {"cli"}),
]
#: what the model core may take from the data layer: its checks, no readers or pipelines
MODEL_FROM_DATA = {"kvae.data.checks", "kvae.data.errors"}
MAX_LINES = 500


def _modules():
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("kvae",) + path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name, path):
    """(imported kvae module, the names taken from it) for every import in `path`."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module not in MODULES:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            if len(submodules) == len(names):  # `from kvae import data, files`: edges to the modules
                yield from ((m, ()) for m in submodules)
            else:
                yield module, tuple(n for n in names if f"{module}.{n}" not in MODULES)


GRAPH = {name: sorted({m for m, _ in _imports(name, path) if m != name}) for name, path in MODULES.items()}


def _layer(module):
    if module == "kvae":
        return None  # the package facade (lazy names): it may be imported from the saving layer up
    short = module.split(".")[1]
    for i, (_, members) in enumerate(LAYERS):
        if short in members:
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)


def test_the_import_graph_has_no_cycle():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in GRAPH.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_import_points_up_a_layer():
    up = []
    for module, targets in GRAPH.items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if target == "kvae":
                there = 4  # the facade's VAE and load_model: saving and above
            if here is not None and there > here:
                up.append(f"{module} ({LAYERS[here][0]}) imports {target} ({LAYERS[there][0]})")
    assert not up, "\n".join(up)


def test_the_model_core_takes_only_checks_from_the_data_layer():
    core = [m for m in MODULES if _layer(m) in (2, 3)]
    wrong = [f"{m} imports {t}" for m in core for t in GRAPH[m] if _layer(t) == 1 and t not in MODEL_FROM_DATA]
    assert not wrong, wrong


def test_no_module_imports_a_private_name_of_another():
    private = [f"{name} imports {target}.{n}" for name, path in MODULES.items()
               for target, names in _imports(name, path) if target != name for n in names if n.startswith("_") and not n.endswith("__")]
    assert not private, private


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_have_one_job_in_at_most_500_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by job"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The rules can fail: a parts module that imports the run layer inside a function is caught."""
    fake = tmp_path / "priors.py"
    fake.write_text("def f():\n    from kvae import runs\n    return runs\n")
    found = dict(_imports("kvae.priors", fake))
    assert "kvae.runs" in found and _layer("kvae.runs") > _layer("kvae.priors")


#: the attributes through which kvae reaches a model's parts
PART_ATTRIBUTES = {"posterior", "prior", "likelihood", "objective"}


def _protocol_breaches(path, part_names):
    """Comparisons with a registered part name, and hasattr/getattr probes of a part, in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            values = []
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                values += [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
            if set(values) & part_names:
                found.append(f"{path.name}:{node.lineno}: compares a part name: {ast.unparse(node)}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
              and node.args and isinstance(node.args[0], ast.Attribute) and node.args[0].attr in PART_ATTRIBUTES):
            found.append(f"{path.name}:{node.lineno}: probes a part: {ast.unparse(node)}")
    return found


def test_no_module_compares_part_names_or_probes_a_part():
    """Outside the registry, kvae reads what a part declares: it neither branches on a part's name
    nor asks hasattr/getattr of a model's posterior, prior, likelihood or objective."""
    from kvae import registry

    part_names = {n for kind in registry.KINDS for n in registry.names(kind)}
    breaches = [b for module, path in MODULES.items() if module != "kvae.registry"
                for b in _protocol_breaches(path, part_names)]
    assert not breaches, "\n".join(breaches)


def test_the_protocol_check_sees_a_name_comparison_and_a_probe(tmp_path):
    fake = tmp_path / "runs.py"
    fake.write_text('def f(cfg, model):\n    return cfg.objective in ("iwae", "dreg") or hasattr(model.prior, "x")\n')
    assert len(_protocol_breaches(fake, {"iwae", "dreg"})) == 2
