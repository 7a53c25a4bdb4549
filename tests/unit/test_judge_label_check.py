"""A judge whose label tokens cannot be read after its prompt fails at start, naming the judge,
the labels and the token, instead of judging every row with a constant or missing risk score."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from assay.actors.workers import JudgeActor
from assay.engine.config import JudgeSpec
from assay.engine.errors import FatalError
from assay.engine.judges import base as judges_base
from assay.engine.judges.harmbench import HarmBench
from assay.engine.records import Label


class _Clashing(HarmBench):
    """HarmBench's prompt with two labels that share their first token after it."""

    name: ClassVar[str] = "test-clashing-labels"
    label_sets: ClassVar[dict[str, dict[str, Label]]] = {"en": {" Yes": "unsafe", " Yes!": "safe"}}


@pytest.fixture
def clashing() -> object:
    judges_base.register_judge(_Clashing)
    yield _Clashing
    judges_base.JUDGES.unregister(_Clashing.name)


def test_clashing_labels_fail_the_judge_at_start(
    tiny_models: dict[str, Path], clashing: object
) -> None:
    spec = JudgeSpec(
        name="clash",
        format=_Clashing.name,
        backend="transformers",
        model=str(tiny_models["tiny-judge-a"]),
        options={"device": "cpu"},
    )
    with pytest.raises(FatalError, match="share their first token") as info:
        JudgeActor(spec)
    assert "judge 'clash'" in str(info.value) and "' Yes'" in str(info.value)


def test_a_judge_with_readable_labels_starts(tiny_models: dict[str, Path]) -> None:
    spec = JudgeSpec(
        name="hb",
        format="harmbench",
        backend="transformers",
        model=str(tiny_models["tiny-judge-a"]),
        options={"device": "cpu"},
    )
    actor = JudgeActor(spec)
    assert actor.format.name == "harmbench"
