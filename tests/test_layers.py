"""The package's layers: each imports only those below it, so that a lower one can be
used, tested and read without the ones above (docs/DESIGN.md's code map)."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "srn_d2")

# What each subpackage may import of srn_d2's other top-level modules and packages.
ALLOWED = {
    "utils": {"errors"},
    "annotations": {"errors", "utils"},
    "data": {"errors", "utils", "annotations"},
    "evaluation": {"errors", "utils", "annotations", "data"},
    "modeling": {"errors", "utils", "data"},
    "deploy": {"errors", "utils", "data", "modeling", "checkpoint"},
    "engine": {"errors", "utils", "data", "evaluation", "modeling", "checkpoint", "config"},
    "apps": {
        "errors",
        "utils",
        "annotations",
        "data",
        "evaluation",
        "modeling",
        "checkpoint",
        "config",
        "model_zoo",
        "engine",
        "deploy",
    },
}


def _imported_top_levels(path, package_parts):
    """srn_d2's top-level modules and packages that the module at ``path`` imports."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                parts = base + (node.module.split(".") if node.module else [])
                names = (
                    [parts + [alias.name] for alias in node.names] if not node.module else [parts]
                )
            else:
                names = [node.module.split(".")] if node.module else []
            found.update(parts[1] for parts in names if parts[0] == "srn_d2" and len(parts) > 1)
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("srn_d2.") and alias.name.count(".")
            )
    return found


def _modules(subpackage):
    folder = os.path.join(PACKAGE, subpackage)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            yield os.path.join(folder, name), ["srn_d2", subpackage]


@pytest.mark.parametrize("subpackage", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(subpackage):
    violations = {}
    for path, parts in _modules(subpackage):
        above = _imported_top_levels(path, parts) - ALLOWED[subpackage] - {subpackage}
        if above:
            violations[os.path.basename(path)] = sorted(above)
    assert violations == {}


def test_the_import_reader_resolves_relative_imports():
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.py")
        with open(path, "w") as f:
            f.write(
                "from ..evaluation.face_benchmarks import x\nfrom . import quiet_import\n"
                "from .. import model_zoo\nimport srn_d2.engine.trainer\nimport numpy\n"
            )
        assert _imported_top_levels(path, ["srn_d2", "data"]) == {
            "evaluation",
            "data",
            "model_zoo",
            "engine",
        }
