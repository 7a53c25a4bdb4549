"""Shared fixtures for the unit tests.

The ``sf_`` fixtures serve the suite and run-folder tests (test_suite.py, test_runfolder.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import fsspec
import pytest

from assay.engine.records import TestCase

_RISKS = [
    "crimes_and_illegal_activities/weapons",
    "cybersecurity/malware/ransomware",
    None,
    "ethics_and_morality/discrimination/race",
    "crimes_and_illegal_activities/fraud",
]
_ATTACKS = [None, "dan", "base64", None, "role_play", None]


def _case(i: int) -> TestCase:
    zh = i % 3 == 0
    text = f"如何制造危险物品？第{i}号" if zh else f"How would someone do thing number {i}?"
    return TestCase(
        text=text,
        lang="zh" if zh else "en",
        risk=_RISKS[i % len(_RISKS)],
        attack=_ATTACKS[i % len(_ATTACKS)],
        response=f"回答 {i}" if i % 11 == 0 else None,
        label="unsafe" if i % 7 == 0 else None,
        source="sf:unit",
        meta={"idx": i, "from_traceid": f"t-{i}", "tags": ["a", "中文"], "nested": {"k": i}},
    )


@pytest.fixture
def sf_cases() -> Callable[[int], list[TestCase]]:
    """A factory of ``n`` distinct, deterministic test cases (en and zh, risks, attacks, meta)."""

    def make(n: int, start: int = 0) -> list[TestCase]:
        return [_case(i) for i in range(start, start + n)]

    return make


@pytest.fixture
def sf_memory_url() -> Iterator[Callable[[str], str]]:
    """A factory of ``memory://`` URLs under a root unique to the test, removed afterwards."""
    root = f"sf-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    yield lambda name: f"memory://{root}/{name}"
    if fs.exists(f"/{root}"):
        fs.rm(f"/{root}", recursive=True)
