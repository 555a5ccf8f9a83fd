"""The package's layers, checked on its source: no module imports one above it, no two modules import each other
(however long the circle), and imports sit at the top of their module.

Two kinds of import inside a function are allowed, both so that ``pyro-vae --help`` and argparse's errors come
at once, without torch: the command handlers of :mod:`pyro_vae.cli` import the library when they run, and
``pyro_vae/__init__.py`` gives ``pyro_vae.VAE`` and the other model names on first use (PEP 562).
"""
import ast
from pathlib import Path

import pytest
from conftest import REPO

ROOT = REPO / "pyro_vae"

#: from the bottom up; a module may import its own layer's modules and those below, never those above
LAYERS = [
    ["pyro_vae", "pyro_vae.errors", "pyro_vae.catalog", "pyro_vae.config"],  # no torch: the parser's layer
    ["pyro_vae.pixels", "pyro_vae.files", "pyro_vae.devices", "pyro_vae.distributed", "pyro_vae.networks", "pyro_vae.markov",
     "pyro_vae.conv", "pyro_vae.scaling"],
    ["pyro_vae.data", "pyro_vae.likelihoods"],
    ["pyro_vae.models"],
    ["pyro_vae.inference"],
    ["pyro_vae.evaluation", "pyro_vae.limits"],
    ["pyro_vae.training", "pyro_vae.disentanglement", "pyro_vae.plots"],
    ["pyro_vae.studies", "pyro_vae.sweeps", "pyro_vae.pretrained"],
    ["pyro_vae.cli", "pyro_vae.__main__"],
]
#: where imports inside functions are allowed (see the module docstring)
LAZY = ("pyro_vae/cli/", "pyro_vae/__init__.py")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int:
    """The layer of a module: that of the longest entry of :data:`LAYERS` it is or sits under."""
    best, found = -1, None
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best and entry != "pyro_vae":
                best, found = len(entry), index
    if found is None and name == "pyro_vae":
        return 0
    assert found is not None, f"{name} is in no layer of tests/test_layers.py: add it where it belongs"
    return found


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(module imported, line, at the top) for every import of a pyro_vae module in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyro_vae"):
            names = [node.module]
            # ``from pyro_vae.data import dsprites`` imports the submodule itself
            names += [f"{node.module}.{a.name}" for a in node.names if (ROOT.parent / f"{node.module}.{a.name}"
                                                                          .replace(".", "/")).with_suffix(".py").exists()]
            found += [(name, node.lineno, id(node) in top) for name in names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names if a.name.startswith("pyro_vae")]
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT.parent))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_imports_one_above_it(name):
    here = layer_of(name)
    above = [(target, line) for target, line, _ in imports(MODULES[name]) if layer_of(target) > here]
    assert not above, f"{name} (layer {here}) imports " + ", ".join(
        f"{target} (layer {layer_of(target)}, line {line})" for target, line in above)


def test_imports_sit_at_the_top_except_where_laziness_keeps_help_fast():
    inner = [f"{_relative(path)}:{line} imports {target}" for name, path in MODULES.items()
             if not _relative(path).startswith(LAZY) for target, line, at_top in imports(path) if not at_top]
    assert not inner, inner


def test_no_circles():
    """Top-level imports form no cycle, a package's ``__init__`` included (it is the package's own node)."""
    graph = {name: {target for target, _, at_top in imports(path) if at_top and target != name and target in MODULES}
             for name, path in MODULES.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, [" -> ".join(cycle) for cycle in cycles]


def test_the_layers_test_can_fail(tmp_path, monkeypatch):
    """An upward import and a circle, written into a copy of two modules, are found."""
    fake = tmp_path / "pyro_vae"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "errors.py").write_text("from pyro_vae.training import Trainer\n")
    (fake / "training.py").write_text("from pyro_vae.errors import PyroVAEError\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", fake)
    assert layer_of("pyro_vae.errors") < layer_of("pyro_vae.training")
    assert [t for t, _, _ in imports(fake / "errors.py")] == ["pyro_vae.training"]
    graph_modules = {module_name(p): p for p in fake.rglob("*.py")}
    monkeypatch.setattr(__import__(__name__), "MODULES", graph_modules)
    with pytest.raises(AssertionError, match="pyro_vae.errors -> pyro_vae.training -> pyro_vae.errors"):
        test_no_circles()
    with pytest.raises(AssertionError, match="imports pyro_vae.training"):
        test_no_module_imports_one_above_it("pyro_vae.errors")


#: the longest a module of the package may be, and the trainer class (issue 23: no module over 400 lines, each
#: with one job; the trainer under 250)
MAX_MODULE_LINES, MAX_TRAINER_LINES = 400, 250


def test_every_module_stays_short_and_the_trainer_class_shorter():
    long = {path.relative_to(ROOT.parent).as_posix(): n for path in sorted(ROOT.rglob("*.py"))
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}, f"split these modules, each over {MAX_MODULE_LINES} lines: {long}"
    tree = ast.parse((ROOT / "training" / "trainer.py").read_text())
    (trainer,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 <= MAX_TRAINER_LINES
