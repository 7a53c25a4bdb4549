"""The import-layer contract: dependencies point cluster -> actors -> engine, kernels is a leaf.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter checks them from the
source files (grimp parses, nothing is imported). A broken contract fails here with the contract's
name (the rule), the importing module, the imported module and the line, as lint-imports prints.
Today's exceptions are the contracts' ``ignore_imports``, each with its reason; import-linter fails
when one of them no longer matches an import, so a paid-off debt must leave the list too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PACKAGES = ("assay.engine", "assay.actors", "assay.cluster", "assay.kernels")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("importlinter") is None,
    reason="import-linter is not installed (pip install -e '.[test]')",
)


def test_contracts_cover_the_four_packages() -> None:
    from importlinter.api import read_configuration

    config = read_configuration(str(ROOT / "pyproject.toml"))
    assert sorted(config["session_options"]["root_packages"]) == sorted(PACKAGES)
    assert {c["id"] for c in config["contracts_options"]} >= {
        "engine-below-actors",
        "engine-is-light",
        "actors-below-cluster",
        "kernels-are-a-leaf",
        "engine-presentation-over-core",
        "engine-authoring-over-core",
    }


def test_import_layers_hold() -> None:
    # In a subprocess: the graph is built from the package folders the installed `assay` maps
    # to, not from whatever this test process has imported.
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command;"
            "sys.exit(lint_imports_command())",
            "--no-cache",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = r.stdout + r.stderr
    broken = out[out.find("Broken contracts") :] if "Broken contracts" in out else out[-4000:]
    assert r.returncode == 0, (
        "import-layer contract broken (pyproject.toml [tool.importlinter]):\n" + broken
    )
