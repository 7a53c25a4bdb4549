"""A scripted backend for tests and overhead benchmarks: no model, deterministic answers.

Options (``BackendSpec.options``):
- ``replies``: list of [substring, reply] pairs; the first whose substring occurs in the rendered
  prompt gives the reply (default reply: ``"FAKE <n chars>: "`` plus the prompt's last 40 chars).
- ``label_logprobs``: list of [substring, {label: logprob}] pairs, likewise; unmatched requests
  with label tokens get a deterministic split derived from a hash of the prompt.
- ``fail_substring``: requests whose prompt contains it come back with ``error`` set.
- ``raise_substring``: a batch containing such a request raises (a whole-backend failure).
- ``delay_ms``: sleep this long per batch (simulates model time).
- ``crash_once_file``: the first call that finds this file missing creates it and then kills its
  own process with SIGKILL (a crashed actor, for fault-tolerance tests; later calls, in a new
  process, find the file and go on).
- ``tensor_parallel_size``: ignored by the fake itself; the scheduler places the replica in a
  placement group of that many GPU bundles, as for vLLM (placement tests on logical GPUs).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import signal
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assay.engine.errors import RetryableError
from assay.engine.records import FinishReason
from assay.engine.requests import GenerationRequest, GenerationResult

from .base import BackendSpec


class FakeOptions(BaseModel):
    """Options of the fake backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replies: list[tuple[str, str]] = Field(default_factory=list)
    label_logprobs: list[tuple[str, dict[str, float]]] = Field(default_factory=list)
    fail_substring: str | None = None
    raise_substring: str | None = None
    delay_ms: float = Field(default=0.0, ge=0)
    crash_once_file: str | None = None
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="Accepted for placement tests (the scheduler reads it)."
    )


def render(req: GenerationRequest) -> str:
    """A plain rendering of a request (the fake has no chat template)."""
    if req.prompt is not None:
        return req.prompt + req.assistant_prefix
    turns = "\n".join(f"<{m.role}>{m.content}" for m in req.messages)
    return f"{turns}\n<assistant>{req.assistant_prefix}"


class FakeBackend:
    """Answers from a script; see the module docstring."""

    def __init__(self, spec: BackendSpec):
        """Validates the options."""
        self.spec = spec
        self.options = FakeOptions.model_validate(spec.options)
        self.calls = 0

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One scripted result per request, in order."""
        self.calls += 1
        if self.options.crash_once_file and _claim(self.options.crash_once_file):
            os.kill(os.getpid(), signal.SIGKILL)
        start = time.perf_counter()
        if self.options.delay_ms:
            await asyncio.sleep(self.options.delay_ms / 1000)
        out = []
        for req in requests:
            text = render(req)
            if self.options.raise_substring and self.options.raise_substring in text:
                raise RetryableError(f"fake backend failure on {req.request_id}")
            out.append(self._one(req, text, start))
        return out

    def _one(self, req: GenerationRequest, text: str, start: float) -> GenerationResult:
        latency = (time.perf_counter() - start) * 1000
        if self.options.fail_substring and self.options.fail_substring in text:
            return GenerationResult(
                request_id=req.request_id,
                finish_reason="error",
                error="fake failure",
                latency_ms=latency,
            )
        reply = next((r for s, r in self.options.replies if s in text), None)
        if reply is None:
            reply = f"FAKE {len(text)}: {text[-40:]}"
        words = reply.split()
        finish: FinishReason = "stop"
        if len(words) > req.sampling.max_tokens:
            reply = " ".join(words[: req.sampling.max_tokens])
            finish = "length"
        logprobs: dict[str, float] = {}
        if req.label_tokens:
            scripted = next((lp for s, lp in self.options.label_logprobs if s in text), None)
            logprobs = (
                dict(scripted) if scripted is not None else _hash_split(text, req.label_tokens)
            )
        return GenerationResult(
            request_id=req.request_id,
            text=reply,
            finish_reason=finish,
            prompt_tokens=len(text.split()),
            output_tokens=min(len(words), req.sampling.max_tokens),
            label_logprobs=logprobs,
            latency_ms=latency,
        )

    async def close(self) -> None:
        """Nothing to release."""


def _claim(path: str) -> bool:
    """Creates ``path`` if it does not exist; True if this call created it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _hash_split(text: str, labels: tuple[str, ...]) -> dict[str, float]:
    """Deterministic label probabilities summing to 0.9 (the rest is 'other tokens')."""
    weights = [
        1 + int.from_bytes(hashlib.sha256(f"{lab}|{text}".encode()).digest()[:2], "big")
        for lab in labels
    ]
    total = sum(weights)
    return {lab: math.log(0.9 * w / total) for lab, w in zip(labels, weights, strict=True)}


def create(spec: BackendSpec) -> FakeBackend:
    """Factory used by the backend registry."""
    return FakeBackend(spec)


__all__: list[Any] = ["FakeBackend", "FakeOptions", "create", "render"]
