"""The backend contract and registry.

A backend does one thing: ``await backend.generate(requests)`` returns one
:class:`~assay.engine.requests.GenerationResult` per request, in the same order. A request that
fails on its own (too long for the model, a refused API call) comes back with ``error`` set; an
exception means the whole backend failed (model gone, engine dead). Retries, concurrency limits
and prompt rendering for judges live in the actors, not here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from assay.engine.judges import FALLBACK_SPECIAL_TOKENS
from assay.engine.registry import Registry
from assay.engine.requests import GenerationRequest, GenerationResult


class BackendSpec(BaseModel):
    """Which backend runs which model, with what options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = Field(description="Backend name: fake, transformers, vllm, openai.")
    model: str = Field(description="Local path or hub id (openai: the served model name).")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend-specific options, validated by the backend's own options model.",
    )


@runtime_checkable
class ModelBackend(Protocol):
    """A loaded model that answers batches of requests."""

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order."""
        ...

    async def close(self) -> None:
        """Releases the model (GPU memory, engine processes, HTTP connections)."""
        ...


BackendFactory = Callable[[BackendSpec], ModelBackend]


async def special_texts(backend: ModelBackend) -> tuple[str, ...]:
    """The special-token spellings of the tokenizer ``backend`` renders prompts with.

    Judges neutralise them in the untrusted text of their prompts. A backend reports them with
    an optional ``special_texts()`` method (plain or async; not part of :class:`ModelBackend`,
    so older and third-party backends stay valid): the transformers and vLLM backends read the
    tokenizer they load. A backend without the method (the openai backend, which has no
    tokenizer; the fake) gets :data:`~assay.engine.judges.FALLBACK_SPECIAL_TOKENS`, a fixed list
    of common chat-template tokens that judges neutralise in any case.
    """
    method = getattr(backend, "special_texts", None)
    if method is None:
        return tuple(FALLBACK_SPECIAL_TOKENS)
    texts = method()
    if inspect.isawaitable(texts):
        texts = await texts
    return tuple(texts)


BACKENDS: Registry[BackendFactory] = Registry(
    "backend",
    "assay.backends",
    # name -> "module:attribute" of a factory, imported only when the backend is built
    builtins={
        "fake": "assay.actors.backends.fake:create",
        "transformers": "assay.actors.backends.transformers:create",
        "vllm": "assay.actors.backends.vllm:create",
        "openai": "assay.actors.backends.openai:create",
        "rules": "assay.actors.backends.rules:create",
    },
    check=callable,
    expected="a backend factory (a callable taking a BackendSpec)",
)
"""Backend factories by name: the lazy built-ins, :func:`register_backend` and entry points."""


def register_backend(name: str, factory: BackendFactory) -> None:
    """Registers a backend factory under ``name``.

    Raises:
        ConfigError: Another factory holds the name.
    """
    BACKENDS.register(factory, name=name)


def backend_names() -> list[str]:
    """Names of all backends (built-in and from entry points)."""
    return BACKENDS.names()


def create_backend(spec: BackendSpec) -> ModelBackend:
    """Builds (loads) the backend a spec names.

    Raises:
        ConfigError: The backend name is unknown.
    """
    return BACKENDS.get(spec.backend)(spec)
