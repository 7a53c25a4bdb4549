"""Hugging Face transformers backend: a causal LM on CPU or one GPU, batched with ``generate``.

For small models, CPU nodes and tests (the tiny models of ``examples/make_tiny_models.py`` load
through exactly this path). Big models on GPU nodes belong to the vLLM backend.

Rendering: chat ``messages`` go through the tokenizer's chat template with the generation prompt,
then ``assistant_prefix`` is appended; a raw ``prompt`` is used as is, plus the prefix. A rendered
chat already holds its special tokens (BOS), so it is tokenized without adding them; a raw prompt
is tokenized as the tokenizer would any text (BOS added where the model adds one) unless it already
starts with the BOS token. This matches what vLLM does with chat and completion prompts.

Decoding: requests are grouped by their decoding rule (greedy, or one (temperature, top_p, seed)
triple), each group is cut into batches of ``batch_size``, and each batch is one left-padded
``model.generate`` call. Per-request ``max_tokens`` and ``stop`` strings are stopping criteria on
their own rows, so one request does not stretch or cut another. A sampled batch seeds torch's RNG
with its seed (inside ``fork_rng``, the process's RNG is left as it was): the same requests in the
same batch give the same text.

Label log-probabilities come from the same ``generate`` call: with ``output_logits=True`` its
first step's raw logits are the model's output at the last prompt position (the prefill), before
any temperature or top-p warping. Their float32 ``log_softmax`` over the full vocabulary, read at
each label's first token, is the answer: one prefill per request gives both text and label scores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import StoppingCriteria, StoppingCriteriaList

from assay.engine.errors import FatalError, RetryableError
from assay.engine.records import FinishReason
from assay.engine.requests import GenerationRequest, GenerationResult

from .base import BackendSpec
from .templates import (
    LabelIdCache,
    Rendered,
    chat_template_field,
    render_request,
    resolve_chat_template,
    tokenizer_special_texts,
)

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TransformersOptions(BaseModel):
    """Options of the transformers backend (``BackendSpec.options``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = Field(
        default="auto", description="Where the model runs; auto: cuda when available, else cpu."
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        default="auto",
        description="Weight dtype; auto: the checkpoint's dtype on cuda, float32 on cpu.",
    )
    batch_size: int = Field(
        default=16, ge=1, description="Most requests in one forward batch (one generate call)."
    )
    max_input_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Longest prompt accepted, in tokens (longer ones come back with error set); "
        "None: the model's max_position_embeddings, if it has one.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Run model code shipped with the checkpoint (hub models only)."
    )
    chat_template: str | None = chat_template_field()


@dataclass
class _Prepared:
    """A request ready for the model: its index in the call, ids and label token ids."""

    index: int
    req: GenerationRequest
    ids: list[int]
    label_ids: dict[str, int] = field(default_factory=dict)


class TransformersBackend:
    """A transformers causal LM answering batches of requests; see the module docstring."""

    def __init__(self, spec: BackendSpec):
        """Loads tokenizer and model; raises :class:`FatalError` when either fails to load."""
        self.spec = spec
        self.options = TransformersOptions.model_validate(spec.options)
        self.device = _pick_device(self.options.device)
        try:
            self._override = resolve_chat_template(self.options.chat_template)
        except (OSError, ValueError) as exc:
            raise FatalError(f"{spec.model!r}: {exc}") from exc
        self.tokenizer, self.model = _load(spec.model, self.options, self.device)
        self.max_input_tokens = self.options.max_input_tokens or getattr(
            self.model.config, "max_position_embeddings", None
        )
        self._eos_ids = _eos_ids(self.model, self.tokenizer)
        self._label_ids = LabelIdCache()
        # one batch at a time on the model, whichever event loop or thread asks
        self._lock = threading.Lock()

    # ---- rendering ----------------------------------------------------------------------------

    def rendered(self, req: GenerationRequest) -> Rendered:
        """The request rendered as its judge format's contract says (see
        :func:`~.templates.render_request`): text, token ids and how."""
        return render_request(self.tokenizer, req, self._override)

    def render(self, req: GenerationRequest) -> str:
        """The prompt text the model continues: template (or raw prompt) plus assistant prefix."""
        return self.rendered(req).text

    def prompt_ids(self, req: GenerationRequest) -> list[int]:
        """Token ids of :meth:`render`, with BOS exactly once where the model uses one."""
        return self.rendered(req).ids

    def special_texts(self) -> tuple[str, ...]:
        """The loaded tokenizer's special and added control tokens (for judges' fences)."""
        return tokenizer_special_texts(self.tokenizer)

    def check_request(self, req: GenerationRequest) -> None:
        """Renders ``req`` and reads its label tokens in context without running the model;
        ValueError when that fails (a judge checks its labels once, at start)."""
        rendered = self.rendered(req)
        if req.label_tokens:
            self.label_token_ids(req.label_tokens, rendered.text)

    def label_token_ids(self, labels: tuple[str, ...], text: str = "") -> dict[str, int]:
        """Each label's first token id in context, after ``text`` (the rendered prompt); see
        :func:`~.templates.label_ids_in_context`. ValueError when a label encodes to nothing,
        merges with the prompt's end, or two labels share their first token."""
        return self._label_ids.get(self.tokenizer, text, labels)

    # ---- the backend contract -----------------------------------------------------------------

    async def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order; per-request failures come back with ``error``."""
        start = time.perf_counter()
        results: list[GenerationResult | None] = [None] * len(requests)
        # tokenizing a large list takes a while: off the event loop too
        prepared = await asyncio.to_thread(self._prepare_all, requests)
        groups: dict[tuple[Any, ...], list[_Prepared]] = {}
        for i, (req, prep) in enumerate(zip(requests, prepared, strict=True)):
            if isinstance(prep, str):
                results[i] = _error(req, prep, start)
            else:
                groups.setdefault(_decode_key(req), []).append(prep)
        for group in groups.values():
            # similar lengths together: less padding per batch
            group.sort(key=lambda p: len(p.ids))
            for lo in range(0, len(group), self.options.batch_size):
                batch = group[lo : lo + self.options.batch_size]
                done = await asyncio.to_thread(self._run, batch, start)
                for prep, res in zip(batch, done, strict=True):
                    results[prep.index] = res
        assert all(r is not None for r in results), "a request got no result"
        return [r for r in results if r is not None]

    async def close(self) -> None:
        """Drops the model and frees the GPU memory it held."""
        with self._lock:
            self.model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    # ---- internals ----------------------------------------------------------------------------

    def _prepare_all(self, requests: list[GenerationRequest]) -> list[_Prepared | str]:
        """Each request ready for the model, or why it cannot be run."""
        out: list[_Prepared | str] = []
        for i, req in enumerate(requests):
            try:
                out.append(self._prepare(i, req))
            except ValueError as exc:
                out.append(str(exc))
        return out

    def _prepare(self, index: int, req: GenerationRequest) -> _Prepared:
        rendered = self.rendered(req)
        ids = rendered.ids
        if not ids:
            raise ValueError("prompt is empty after rendering")
        limit = self.max_input_tokens
        if limit is not None and len(ids) > limit:
            raise ValueError(f"prompt is {len(ids)} tokens, over the limit {limit}")
        labels = self.label_token_ids(req.label_tokens, rendered.text) if req.label_tokens else {}
        return _Prepared(index=index, req=req, ids=ids, label_ids=labels)

    def _run(self, batch: list[_Prepared], start: float) -> list[GenerationResult]:
        """Runs one batch through ``generate`` (in a worker thread, under the lock)."""
        with self._lock:
            if self.model is None:
                raise FatalError(f"backend for {self.spec.model!r} is closed")
            try:
                return self._generate_batch(batch, start)
            except torch.cuda.OutOfMemoryError as exc:
                raise RetryableError(
                    f"out of GPU memory on a batch of {len(batch)} ({self.spec.model}): {exc}"
                ) from exc

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Prepared], start: float) -> list[GenerationResult]:
        sampling = batch[0].req.sampling  # the same decoding rule for the whole batch
        width = max(len(p.ids) for p in batch)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, prep in enumerate(batch):  # left padding: every prompt ends at the same column
            input_ids[row, width - len(prep.ids) :] = torch.tensor(prep.ids, dtype=torch.long)
            attention[row, width - len(prep.ids) :] = 1
        max_tokens = [p.req.sampling.max_tokens for p in batch]
        stops = [p.req.sampling.stop for p in batch]
        criteria = StoppingCriteriaList([_RowLimits(width, max_tokens, self.device)])
        stop_watch = _StopStrings(width, stops, self.tokenizer) if any(stops) else None
        if stop_watch is not None:
            criteria.append(stop_watch)
        do_sample = sampling.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(max_tokens),
            "do_sample": do_sample,
            "pad_token_id": pad_id,
            "eos_token_id": self._eos_ids or None,
            "stopping_criteria": criteria,
            "return_dict_in_generate": True,
            "output_logits": True,
        }
        if do_sample:
            # top_k 0: no top-k cut; the request's temperature and top_p are the whole rule
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        devices = [torch.cuda.current_device()] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=do_sample):
            if do_sample and sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention.to(self.device),
                **kwargs,
            )
        generated = out.sequences[:, width:].tolist()
        first_logits = out.logits[0]
        results = []
        for row, prep in enumerate(batch):
            logprobs: dict[str, float] = {}
            if prep.label_ids:
                lp = torch.log_softmax(first_logits[row].float(), dim=-1)
                logprobs = {lab: float(lp[tid]) for lab, tid in prep.label_ids.items()}
            stopped_at = stop_watch.stopped_at[row] if stop_watch is not None else None
            results.append(self._result(prep, generated[row], stopped_at, logprobs, start))
        return results

    def _result(
        self,
        prep: _Prepared,
        tokens: list[int],
        stopped_at: int | None,
        logprobs: dict[str, float],
        start: float,
    ) -> GenerationResult:
        """Cuts a row's tokens at its own end (EOS, stop string, max_tokens) and decodes them."""
        sampling = prep.req.sampling
        n = min(len(tokens), sampling.max_tokens)
        if stopped_at is not None:
            n = min(n, stopped_at)
        finish: FinishReason = "length"
        eos = next((i for i, t in enumerate(tokens[:n]) if t in self._eos_ids), None)
        if eos is not None:
            n, finish = eos + 1, "stop"
        text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
        cut = _first_stop(text, sampling.stop)
        if cut is not None:
            text = text[:cut]
        if cut is not None or stopped_at is not None:
            finish = "stop"
        return GenerationResult(
            request_id=prep.req.request_id,
            text=text,
            finish_reason=finish,
            prompt_tokens=len(prep.ids),
            output_tokens=n,
            label_logprobs=logprobs,
            latency_ms=(time.perf_counter() - start) * 1000,
        )


class _RowLimits(StoppingCriteria):
    """Stopping criterion: each row ends at its own ``max_tokens``."""

    def __init__(self, prompt_width: int, max_tokens: list[int], device: torch.device):
        self.prompt_width = prompt_width
        self.limits = torch.tensor(max_tokens, device=device)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return (input_ids.shape[1] - self.prompt_width) >= self.limits


class _StopStrings(StoppingCriteria):
    """Stopping criterion: a row ends once its decoded output holds one of its stop strings.

    Only the tail of each row is decoded each step (enough tokens to hold the longest stop
    string), so the cost does not grow with the output; ``stopped_at`` records how many tokens a
    row had generated when it stopped.
    """

    def __init__(self, prompt_width: int, stops: list[tuple[str, ...]], tokenizer: Any):
        self.prompt_width = prompt_width
        self.stops = stops
        self.tokenizer = tokenizer
        # a character is at most 4 bytes, and a byte-level token at least one byte
        self.window = [4 * max((len(s) for s in row), default=0) + 2 for row in stops]
        self.stopped_at: list[int | None] = [None] * len(stops)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        n = input_ids.shape[1] - self.prompt_width
        done = [False] * len(self.stops)
        for row, stops in enumerate(self.stops):
            if self.stopped_at[row] is not None:
                done[row] = True
                continue
            if not stops:
                continue
            tail = input_ids[row, max(self.prompt_width, input_ids.shape[1] - self.window[row]) :]
            text = self.tokenizer.decode(tail.tolist(), skip_special_tokens=True)
            if any(s in text for s in stops):
                self.stopped_at[row] = n
                done[row] = True
        return torch.tensor(done, device=input_ids.device)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop string starts in ``text``, if any does."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _decode_key(req: GenerationRequest) -> tuple[Any, ...]:
    """Requests with equal keys can share a ``generate`` call (same decoding rule)."""
    s = req.sampling
    if s.temperature == 0:
        return ("greedy",)
    return ("sample", s.temperature, s.top_p, s.seed)


def _error(req: GenerationRequest, message: str, start: float) -> GenerationResult:
    return GenerationResult(
        request_id=req.request_id,
        finish_reason="error",
        error=message,
        latency_ms=(time.perf_counter() - start) * 1000,
    )


def _pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise FatalError("transformers backend: device 'cuda' asked for, but no GPU is visible")
    return torch.device(choice)


def _looks_local(model: str) -> bool:
    """A path rather than a hub id (``org/name``)."""
    return os.path.isabs(model) or model.startswith((".", "~")) or os.path.exists(model)


def _load(model: str, options: TransformersOptions, device: torch.device) -> tuple[Any, Any]:
    """Tokenizer and model from a local path or hub id, ready for left-padded batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if _looks_local(model) and not os.path.exists(os.path.expanduser(model)):
        raise FatalError(f"cannot load model {model!r}: no such file or directory")
    path = os.path.expanduser(model) if _looks_local(model) else model
    if options.dtype != "auto":
        dtype: Any = _DTYPES[options.dtype]
    else:
        dtype = "auto" if device.type == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=options.trust_remote_code)
        lm = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=options.trust_remote_code
        )
    except Exception as exc:  # any loader failure is fatal: retrying will not fix it
        raise FatalError(f"cannot load model {model!r}: {type(exc).__name__}: {exc}") from exc
    # transformers types PreTrainedModel.to through functools.wraps(torch.nn.Module.to), so mypy
    # sees the device as the wrapped function's `self`: a stub gap, not a wrong call.
    lm.to(device).eval()  # type: ignore[arg-type]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    # The request's SamplingParams are the whole decoding rule: a checkpoint's defaults
    # (sampling on, temperature 0.6, top_k 50, ...) must not leak in. Keep only its tokens.
    old = lm.generation_config
    # GenerationConfig.__init__(self, **kwargs) has no annotations in transformers.
    lm.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=old.bos_token_id if old is not None else tokenizer.bos_token_id,
        eos_token_id=old.eos_token_id if old is not None else tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    logger.info("loaded %s on %s (%s)", model, device, lm.dtype)
    return tokenizer, lm


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end a generation: the generation config's EOS ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    out = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        out.add(tokenizer.eos_token_id)
    return sorted(out)


def create(spec: BackendSpec) -> TransformersBackend:
    """Factory used by the backend registry."""
    return TransformersBackend(spec)


__all__ = ["TransformersBackend", "TransformersOptions", "create"]
