"""The package's structure: its import graph runs one way, from the training application down to
the geometry, with no cycle and no private name crossing a module boundary.

`python tests/test_architecture.py` prints the graph (each module and what it imports).
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hbnn_larq"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list:
    """`(module, name)` for every `hbnn_larq` import in `path`, function-level ones included
    (`name` is None for `import x`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hbnn_larq"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("hbnn_larq")]
    return found


def graph() -> dict:
    """module -> the package modules it imports (`from hbnn_larq import x` counts as `hbnn_larq.x`
    when `x` is a module)."""
    known = modules()
    edges = {}
    for name, path in known.items():
        targets = set()
        for module, imported in imports(path):
            target = f"{module}.{imported}" if imported and f"{module}.{imported}" in known else module
            if target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def is_package_init(name: str) -> bool:
    path = modules().get(name)
    return path is not None and path.name == "__init__.py"


def test_no_cycles():
    # A package's __init__ re-exports its modules: edges into an __init__ from its own
    # submodules would be cycles in name only, so inits are sources, never targets, here.
    edges = {name: {t for t in targets if not is_package_init(t) or not name.startswith(t + ".")}
             for name, targets in graph().items()}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for target in edges.get(node, ()):
            assert state.get(target) != "open", "import cycle: " + " -> ".join(path + [target])
            if target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in edges:
        if node not in state:
            visit(node, [node])


def test_the_library_does_not_import_the_training_application():
    for name, targets in graph().items():
        if not name.startswith("hbnn_larq.training"):
            assert not any(t.startswith("hbnn_larq.training") for t in targets), name


def test_geometry_is_the_bottom():
    assert graph()["hbnn_larq.geometry"] == set()


def test_no_private_name_crosses_a_module_boundary():
    for name, path in modules().items():
        for module, imported in imports(path):
            private_module = any(part.startswith("_") and part != "__init__" for part in module.split("."))
            if imported is not None:
                assert not imported.startswith("_"), f"{name} imports {module}.{imported}"
            # Private helper modules (`_keras`, `_atomic`, `_quiet`) are the package's own plumbing.
            plumbing = ("hbnn_larq._keras", "hbnn_larq._atomic", "hbnn_larq._quiet")
            assert not private_module or module in plumbing, f"{name} imports {module}"


def test_modules_are_small_and_know_no_repository_paths():
    for name, path in modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name}: {len(text.splitlines())} lines"
        assert "../shared" not in text and '"shared"' not in text, name


if __name__ == "__main__":
    for module, targets in sorted(graph().items()):
        print(module, "->", ", ".join(sorted(targets)) or "-")
