"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight models (``tiny-target-a/-b``, ``tiny-judge-a/-b``), built once."""
    from models import build_tiny_models  # tests/models.py; imports torch only when used

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
