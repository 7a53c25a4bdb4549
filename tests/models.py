"""Tiny random-weight models for tests, built offline by ``examples/make_tiny_models.py``.

The builder is a script, not part of the installed package, so it is loaded from its file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BUILDER = Path(__file__).resolve().parents[1] / "examples" / "make_tiny_models.py"


def tiny_model_builder() -> ModuleType:
    """The ``examples/make_tiny_models.py`` module (loaded once)."""
    name = "_assay_make_tiny_models"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, BUILDER)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def build_tiny_models(outdir: str | Path) -> dict[str, Path]:
    """Builds the tiny models under ``outdir``; returns name -> directory."""
    built = tiny_model_builder().build_tiny_models(outdir)
    return {name: Path(path) for name, path in built.items()}
