"""The package's dependencies run one way (docs/architecture.md), with no import cycle.

Every import counts: at module level, inside functions, and the module names that a module
calling `importlib.import_module` names as string constants.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmpiqa_jax"

# What each layer may import (itself always). Base modules are the package's leaves.
BASE = "base"
LAYERS = {
    BASE: set(),
    "models": {BASE},
    "data": {BASE},
    "checkpoints": {BASE, "models"},
    "evaluate": {BASE, "models", "data"},
    "train": {BASE, "models", "data", "checkpoints", "evaluate"},
    "experiments": {BASE, "models", "data", "checkpoints", "evaluate", "train"},
    # The public API beside the CLI: `mmpiqa_jax.clip` (load, tokenize), `mmpiqa_jax.metric`
    # (create_metric: a training workdir as a scorer of images).
    "api": {BASE, "models", "data", "checkpoints", "evaluate", "train"},
    "cli": {BASE, "models", "data", "checkpoints", "evaluate", "train", "experiments", "api"},
    # The PyTorch models of exported checkpoints: torch, safetensors, numpy, and of ours only
    # `PYTORCH_IMPORTS` (no JAX, grain nor tfds behind them).
    "pytorch": set(),
}
PYTORCH_IMPORTS = {"mmpiqa_jax.errors", "mmpiqa_jax.data.transforms"}
TOP_LEVEL = {"labels": BASE, "tokenizer": BASE, "config": BASE, "losses": BASE, "errors": BASE,
             "files": BASE,
             "clip": "api", "metric": "api", "": BASE}  # "": the package's __init__
# The one import against the layers: the package's module-level `__getattr__` imports
# `mmpiqa_jax.metric` when `mmpiqa_jax.create_metric` is first read (pyiqa's spelling), so
# `import mmpiqa_jax` itself imports nothing. Exempt from the layer check only, not the cycles.
LAZY_EXPORTS = {("mmpiqa_jax", "mmpiqa_jax.metric")}


def module_names(root: Path) -> dict[str, Path]:
    """{dotted module name: file} of every module of the package at `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports, wherever in the file the import is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found, dynamic = set(), False

    def add(target: str, names=()):
        # `from a import b`: b is a module if it is one, else an attribute of a.
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
        found.update(subs or ([target] if target in known else []))
        if not subs and target not in known and "." in target:  # an attribute path
            parent = target.rpartition(".")[0]
            if parent in known:
                found.add(parent)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            add(target, [a.name for a in node.names])
        elif isinstance(node, ast.Call):
            func = node.func
            if getattr(func, "attr", getattr(func, "id", None)) == "import_module":
                dynamic = True
    if dynamic:  # names handed to import_module, as constants anywhere in the file
        found.update(n.value for n in ast.walk(tree)
                     if isinstance(n, ast.Constant) and isinstance(n.value, str)
                     and n.value in known)
    found.discard(name)
    return found


def layer_of(name: str) -> str:
    parts = name.split(".")[1:]
    if not parts:
        return TOP_LEVEL[""]
    if parts[0] in LAYERS:
        return parts[0]
    if parts[0] in TOP_LEVEL:
        return TOP_LEVEL[parts[0]]
    raise AssertionError(f"{name}: not in any layer; add it to LAYERS or TOP_LEVEL")


def graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports against the layers: `importer -> imported (layer -> layer)`."""
    out = []
    for name, targets in sorted(edges.items()):
        layer = layer_of(name)
        for target in sorted(targets):
            other = layer_of(target)
            if (name, target) in LAZY_EXPORTS or (layer == "pytorch" and target in PYTORCH_IMPORTS):
                continue
            if other != layer and other not in LAYERS[layer]:
                out.append(f"{name} -> {target} ({layer} may not import {other})")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_package_imports_follow_the_layers():
    assert violations(graph(PACKAGE)) == []


def test_the_package_has_no_import_cycle():
    assert cycles(graph(PACKAGE)) == []


def test_the_lazy_export_is_the_packages_getattr_only():
    """The exempt edge comes from `__getattr__` in `mmpiqa_jax/__init__.py` and nowhere else in
    that file, and `mmpiqa_jax.create_metric` resolves to the api's function."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    getattr_fn = next(n for n in tree.body
                      if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
    constants = lambda node: {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}
    outside = [n for n in tree.body if n is not getattr_fn]
    lazy = {t for _, t in LAZY_EXPORTS}
    # The module names sit in a table at module level; the import happens in __getattr__ only.
    assert any(isinstance(n, ast.Import) for n in ast.walk(getattr_fn))
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for o in outside
                   for n in ast.walk(o))
    assert lazy <= set().union(*map(constants, outside))
    import mmpiqa_jax
    from mmpiqa_jax import metric

    assert mmpiqa_jax.create_metric is metric.create_metric
    assert layer_of("mmpiqa_jax.metric") == "api"


def test_the_torch_models_import_no_jax():
    """`mmpiqa_jax.pytorch` loads in a process that has no JAX (nor flax, grain, tfds,
    open_clip)."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    code = ("import sys; sys.modules.update(jax=None, flax=None, grain=None, "
            "tensorflow_datasets=None, open_clip=None); "
            "import mmpiqa_jax.pytorch as p; print(p.load.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mmpiqa_jax.pytorch.model"


def test_the_checks_find_what_they_look_for(tmp_path):
    """A fake package with a lazy upward import, an import_module call and a cycle."""
    root = tmp_path / "mmpiqa_jax"
    files = {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/net.py": "def f():\n    from mmpiqa_jax.checkpoints import io\n",
        "checkpoints/__init__.py": "",
        "checkpoints/io.py": "from mmpiqa_jax.models import net\n",
        "evaluate/__init__.py": "",
        "evaluate/sweep.py": ("import importlib\n"
                              "def g():\n"
                              "    importlib.import_module('mmpiqa_jax.train.run')\n"),
        "train/__init__.py": "",
        "train/run.py": "from ..evaluate import sweep\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    edges = graph(root)
    assert edges["mmpiqa_jax.train.run"] == {"mmpiqa_jax.evaluate.sweep"}  # relative import
    assert violations(edges) == [
        "mmpiqa_jax.evaluate.sweep -> mmpiqa_jax.train.run (evaluate may not import train)",
        "mmpiqa_jax.models.net -> mmpiqa_jax.checkpoints.io (models may not import checkpoints)",
    ]
    assert cycles(edges) == [["mmpiqa_jax.checkpoints.io", "mmpiqa_jax.models.net"],
                             ["mmpiqa_jax.evaluate.sweep", "mmpiqa_jax.train.run"]]


@pytest.mark.parametrize("name", ["mmpiqa_jax.somewhere.new"])
def test_a_module_outside_the_layers_is_named(name):
    with pytest.raises(AssertionError, match="not in any layer"):
        layer_of(name)


def test_the_command_line_parser_imports_no_jax():
    """`mmpiqa --help` (every command's parser built) runs where jax cannot be imported: the
    commands import jax only when they run."""
    import subprocess
    import sys

    code = ("import sys; sys.modules.update(jax=None, flax=None, grain=None); "
            "from mmpiqa_jax.cli import main; main.build_parser(); print('built')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "built"
