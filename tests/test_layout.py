"""The package's folders are its architecture: who may import whom, no import cycle, no module too long to read.

Layers, bottom to top; a module may import from the layers `MAY_IMPORT` lists for its own:
- sources (`errors`, `hub`, `_resources`): where files come from, and what fails when they are wrong;
- core (`backend`, `config`): array namespaces and the HF configs;
- nn: the math, pure functions of a parameter tree; only `backend`, `config` and itself;
- preprocessing: tokenizer and image processor; neither the math nor the checkpoint formats;
- checkpoints: file formats and loading; never the facade, the tasks or the CLI;
- facade (`model`, `model_base`): the HF-shaped model objects;
- tasks: segmentation, classification, evaluation, pictures; everything but the CLI;
- cli: the command line, one module per subcommand.

The graph is read from the sources with `ast`: imports inside functions count (a lazy import is still a
dependency; it only runs later). Every module is also imported on its own, in a fresh interpreter, and what that
loads must be what the graph says it imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "groupvit_np"
MAX_LINES = 250
# Modules allowed past MAX_LINES because most of their lines are data, not code: module -> why.
DATA_TABLES: dict[str, str] = {}

LAYERS = {  # layer -> its modules: a name, or a folder and everything in it (groupvit_np/__init__.py: "package")
    "sources": ("groupvit_np.errors", "groupvit_np.hub", "groupvit_np._resources"),
    "core": ("groupvit_np.backend", "groupvit_np.config"),
    "nn": ("groupvit_np.nn",),
    "preprocessing": ("groupvit_np.preprocessing",),
    "checkpoints": ("groupvit_np.checkpoints",),
    "facade": ("groupvit_np.model", "groupvit_np.model_base"),
    "tasks": ("groupvit_np.tasks",),
    "cli": ("groupvit_np.cli", "groupvit_np.__main__"),
}
MAY_IMPORT = {
    "package": set(),  # its exports are imported by name, with importlib, when first used
    "sources": {"sources"},
    "core": {"sources", "core"},
    "nn": {"core", "nn"},
    "preprocessing": {"sources", "core", "preprocessing"},
    "checkpoints": {"sources", "core", "preprocessing", "checkpoints"},
    "facade": {"sources", "core", "nn", "checkpoints", "facade"},
    "tasks": {"sources", "core", "nn", "preprocessing", "checkpoints", "facade", "tasks"},
    "cli": {"package", "sources", "core", "nn", "preprocessing", "checkpoints", "facade", "tasks", "cli"},
}
# Their __init__.py hold a docstring and nothing else. cli/__init__.py is the command itself (the entry point
# groupvit_np.cli:main) and imports its subcommand modules.
FOLDERS = ("nn", "preprocessing", "checkpoints", "tasks")


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name: `groupvit_np.nn.ops`; a folder's __init__.py is the folder."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if path.name == "__init__.py" else parts)] = path
    return out


MODULES = module_files()


def _known(name: str) -> str:
    """The package module a dotted import target names: itself, or the module that defines it."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(name: str) -> set[str]:
    """The package modules `name` imports anywhere in its source (`from .x import y` names x, or x.y if a module)."""
    path = MODULES[name]
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]  # the package `.` means
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(_known(a.name) for a in node.names if a.name.split(".")[0] == "groupvit_np")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "groupvit_np":
                base = node.module
            else:
                continue
            found.add(_known(base))
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    found.discard(name)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> str:
    if name == "groupvit_np":
        return "package"
    for key, members in LAYERS.items():
        if any(name == m or name.startswith(m + ".") for m in members):
            return key
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in {Path(__file__).name}")


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)
    assert {"nn", "checkpoints", "preprocessing", "tasks", "cli"} <= {n.split(".")[1] for n in MODULES if "." in n}


def test_layers():
    wrong = [
        f"{name} ({layer(name)}) imports {dep} ({layer(dep)})"
        for name, deps in sorted(GRAPH.items())
        for dep in sorted(deps)
        if layer(dep) not in MAY_IMPORT[layer(name)]
    ]
    assert not wrong, "imports across the layers' rules:\n" + "\n".join(wrong)


def test_the_math_imports_only_the_backend_and_the_config():
    for name, deps in GRAPH.items():
        if layer(name) == "nn":
            outside = {d for d in deps if layer(d) != "nn"}
            assert outside <= {"groupvit_np.backend", "groupvit_np.config"}, (name, outside)


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path [a, b, ..., a], or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_cycle_finder_finds_cycles():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    found = cycle(GRAPH)
    assert found is None, "import cycle: " + " -> ".join(found)


def test_no_module_is_too_long():
    long = {}
    for name, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES and name not in DATA_TABLES:
            long[name] = lines
    assert not long, f"modules over {MAX_LINES} lines (split them, or list a data table in DATA_TABLES): {long}"


@pytest.mark.parametrize("folder", FOLDERS)
def test_folders_hold_no_code_in_their_init(folder):
    """A folder's __init__.py runs before any of its modules: code there would import behind the graph's back."""
    body = ast.parse((PACKAGE / folder / "__init__.py").read_text(encoding="utf-8")).body
    assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), folder


PUBLIC = {"GroupViTConfig", "GroupViTTextConfig", "GroupViTVisionConfig", "GroupViTModel", "GroupViTTextModel",
          "GroupViTVisionModel", "GroupViTModelOutput", "BaseModelOutputWithPooling", "CLIPTokenizer",
          "CLIPImageProcessor", "CLIPProcessor", "BatchEncoding", "CheckpointError", "__version__"}  # fmt: skip
EXPORTS = r"""
import json, sys
import groupvit_np
loaded = sorted(k for k in sys.modules if k.startswith("groupvit_np"))
names = [name for name in groupvit_np.__all__ if getattr(groupvit_np, name) is not None]  # each one imports
print(json.dumps({"loaded": loaded, "names": names}))
"""


def test_public_names_stay_where_they_were():
    """`from groupvit_np import X` for every public name, whichever folder X lives in; `import groupvit_np` alone
    imports nothing else (the names load on first use)."""
    done = subprocess.run([sys.executable, "-c", EXPORTS], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["loaded"] == ["groupvit_np"]
    assert set(result["names"]) == PUBLIC


ISOLATED = r"""
import importlib, json, sys
report = {}
for name in json.loads(sys.argv[1]):
    for key in [k for k in sys.modules if k == "groupvit_np" or k.startswith("groupvit_np.")]:
        del sys.modules[key]  # each module starts from nothing of the package
    try:
        importlib.import_module(name)
    except BaseException as err:  # whatever a module raises while it is imported
        report[name] = {"error": f"{type(err).__name__}: {err}"}
        continue
    report[name] = {"loaded": sorted(k for k in sys.modules if k == "groupvit_np" or k.startswith("groupvit_np."))}
print(json.dumps(report))
"""


def closure(name: str) -> set[str]:
    """`name`, everything it imports directly or not, and the folders (packages) those live in."""
    seen, todo = set(), [name]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(GRAPH[node])
            parts = node.split(".")
            todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return seen


def test_every_module_imports_on_its_own():
    names = [n for n in MODULES if n != "groupvit_np.__main__"]  # __main__ runs the CLI
    done = subprocess.run([sys.executable, "-c", ISOLATED, json.dumps(names)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    failed = {n: r["error"] for n, r in report.items() if "error" in r}
    assert not failed, f"modules that do not import on their own: {failed}"
    for name, result in report.items():
        hidden = set(result["loaded"]) - closure(name)
        assert not hidden, f"importing {name} loads {sorted(hidden)}, which its import graph does not show"
