"""The in-sandbox child code is standard library only: the sandbox's root holds no spark_jax, and
the loader runs these modules from source under their own names (isolation.sandbox._LOADER).
import-linter checks the spark_jax side; this checks third-party imports too."""

import ast
import json
import pathlib
import sys

import pytest

from spark_jax.tools.isolation import sandbox

CHILD = pathlib.Path(sandbox.__file__).parent / "child"
PACKAGE = "spark_jax.tools.isolation.child"


def _imports(path: pathlib.Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):  # deferred imports too
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import (the loader has no parent package)"
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CHILD.glob("*.py")), ids=lambda p: p.name)
def test_child_modules_import_only_the_standard_library_and_each_other(path):
    foreign = [
        name for name in _imports(path)
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith(PACKAGE + ".")
    ]
    assert foreign == [], f"{path.name} imports {foreign}"


def test_the_loader_ships_every_child_module():
    """A child module the loader does not send would fail only inside the sandbox."""
    shipped = {name for name, _source in json.loads(sandbox._SOURCES)}
    on_disk = {f"{PACKAGE}.{p.stem}" for p in CHILD.glob("*.py") if p.stem != "__init__"}
    assert shipped == on_disk


def test_the_import_walk_sees_a_foreign_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\ndef f():\n    from spark_jax.core import jsonl\n")
    assert _imports(bad) == ["os", "spark_jax.core"]
