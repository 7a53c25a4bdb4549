"""Packaging: four folders install as the assay namespace, and nothing else lands on top."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_bare_top_level_names_do_not_import(tmp_path: Path) -> None:
    for name in ("engine", "actors", "kernels", "cluster"):
        r = subprocess.run(
            [sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True
        )
        assert r.returncode != 0 and "No module named" in r.stderr, name
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import assay.engine, assay.actors, assay.kernels, assay.cluster, sys;"
            "import assay.engine.importers, assay.engine.runfolder;"
            "assert not {'ray', 'torch', 'vllm'} & set(sys.modules), 'engine imported a heavy dep'",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_wheel_contains_every_subpackage_under_assay(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0 and "setuptools" in r.stderr:
        pytest.skip(f"no suitable setuptools for an isolated-free build: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("assay-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops <= {
        "assay",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    # every package folder of the repo is in the wheel, under assay/
    for folder in ("engine", "actors", "kernels", "cluster"):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT).as_posix()
            assert f"assay/{rel}" in names, rel
        assert f"assay/{folder}/py.typed" in names
    assert not any(n.startswith("assay/__init__") for n in names)  # a namespace package


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_ruff_is_clean() -> None:
    r = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


PACKAGES = ("engine", "actors", "cluster", "kernels")


@pytest.mark.slow
def test_mypy_is_clean(tmp_path: Path) -> None:
    """mypy strict on the four packages at once, by their installed names (assay.engine, ...).

    mypy cannot follow the default editable install (an import hook) nor map engine/ to
    assay.engine, so it checks a folder of links, tmp/assay/<package> -> <repo>/<package>, found
    from the working directory; [tool.mypy] in pyproject.toml says how to run it by hand.
    """
    mypy = _tool("mypy")
    (tmp_path / "assay").mkdir()
    for name in PACKAGES:
        (tmp_path / "assay" / name).symlink_to(ROOT / name, target_is_directory=True)
    packages = [arg for name in PACKAGES for arg in ("-p", f"assay.{name}")]
    r = subprocess.run(
        [mypy, "--config-file", str(ROOT / "pyproject.toml"), *packages],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
