"""Small helpers shared by tests (importable: pytest puts tests/ on the path)."""

from __future__ import annotations

import shutil

import pytest


def assay_exe() -> str:
    """The installed `assay` console script (skips the test when it is missing)."""
    path = shutil.which("assay")
    if path is None:
        pytest.skip("the assay console script is not installed")
    return path
