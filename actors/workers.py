"""The two model actors: ``GeneratorActor`` (targets answer prompts) and ``JudgeActor``.

Both are plain classes with async methods; the executor runs them as Ray actors (one model engine
each, many concurrent calls from several shards at once) or in-process. Payloads are small typed
tuples in and records out, so nothing but text crosses the process boundary.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from assay.engine.config import JudgeSpec, TargetSpec
from assay.engine.judges import JudgeItem, get_judge
from assay.engine.records import Generation, Verdict
from assay.engine.requests import ChatMessage, GenerationRequest
from assay.engine.runfolder import canonical_hash

from .backends.base import BackendSpec
from .host import ModelHost


class Prompt(NamedTuple):
    """One prompt for a target."""

    test_id: str
    text: str


class JudgeTask(NamedTuple):
    """One (prompt, response) pair for a judge."""

    test_id: str
    target: str
    prompt: str
    response: str | None
    lang: str
    generation_error: str | None


def node_id() -> str:
    """The Ray node this process runs on, or 'local' outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except ImportError:
        pass
    return "local"


def _limit_threads(num_cpus: float) -> None:
    """Keeps a CPU actor on its share of cores (torch and OpenMP use every core by default)."""
    threads = str(max(1, int(num_cpus)))
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    try:
        import torch

        torch.set_num_threads(int(threads))
    except ImportError:
        pass


def _host(spec: TargetSpec | JudgeSpec, max_retries: int, backoff_s: float) -> ModelHost:
    """The model host of an actor, its CPU threads limited to its share on CPU-only nodes."""
    if spec.resources.num_gpus == 0:
        _limit_threads(spec.resources.num_cpus)
    return ModelHost(
        spec.name,
        BackendSpec(backend=spec.backend, model=spec.model, options=spec.options),
        max_in_flight=spec.max_in_flight,
        max_retries=max_retries,
        backoff_s=backoff_s,
    )


def target_params_hash(spec: TargetSpec) -> str:
    """Hash of what determines a target's answers (model, backend options, sampling, system)."""
    return canonical_hash(
        {
            "backend": spec.backend,
            "model": spec.model,
            "options": spec.options,
            "sampling": spec.sampling.model_dump(mode="json"),
            "system_prompt": spec.system_prompt,
        }
    )


class GeneratorActor:
    """Holds one target model and answers prompts."""

    def __init__(self, spec: TargetSpec, max_retries: int = 3, backoff_s: float = 1.0):
        """Loads the target's model."""
        self.spec = spec
        self.params_hash = target_params_hash(spec)
        self.host = _host(spec, max_retries, backoff_s)

    async def ready(self) -> str:
        """Returns once the model is loaded (a load failure surfaces here): the node id."""
        return node_id()

    def _request(self, p: Prompt) -> GenerationRequest:
        messages = []
        if self.spec.system_prompt:
            messages.append(ChatMessage(role="system", content=self.spec.system_prompt))
        messages.append(ChatMessage(role="user", content=p.text))
        return GenerationRequest(
            request_id=p.test_id, messages=tuple(messages), sampling=self.spec.sampling
        )

    async def generate(self, prompts: list[Prompt]) -> list[Generation]:
        """One generation per prompt, in order; failed requests carry ``error``."""
        results = await self.host.generate([self._request(p) for p in prompts])
        return [
            Generation(
                test_id=p.test_id,
                target=self.spec.name,
                params_hash=self.params_hash,
                response=None if r.error else r.text,
                finish_reason="error" if r.error else r.finish_reason,
                prompt_tokens=r.prompt_tokens,
                output_tokens=r.output_tokens,
                latency_ms=r.latency_ms,
                error=r.error,
            )
            for p, r in zip(prompts, results, strict=True)
        ]

    async def close(self) -> None:
        """Releases the model."""
        await self.host.close()


class JudgeActor:
    """Holds one judge model and its format; turns (prompt, response) pairs into verdicts."""

    def __init__(self, spec: JudgeSpec, max_retries: int = 3, backoff_s: float = 1.0):
        """Loads the judge's model and builds its format."""
        self.spec = spec
        self.format = get_judge(spec.format, **spec.format_options)
        # one SamplingParams for every request (the format's default when the spec has none)
        self.sampling = spec.sampling or self.format.default_sampling()
        self.host = _host(spec, max_retries, backoff_s)

    async def ready(self) -> str:
        """Returns once the model is loaded: the node id."""
        return node_id()

    async def judge(self, tasks: list[JudgeTask]) -> list[Verdict]:
        """One verdict per task, in order. A task whose generation failed is not sent."""
        items = {
            i: JudgeItem(prompt=t.prompt, response=t.response, lang=t.lang)
            for i, t in enumerate(tasks)
            if t.response is not None
        }
        requests = [
            self.format.build_request(
                item,
                request_id=f"{tasks[i].test_id}|{tasks[i].target}",
                sampling=self.sampling,
            )
            for i, item in items.items()
        ]
        start = time.perf_counter()
        results = iter(await self.host.generate(requests))
        verdicts = []
        for i, t in enumerate(tasks):
            if t.response is None:
                verdicts.append(
                    Verdict(
                        test_id=t.test_id,
                        target=t.target,
                        judge=self.spec.name,
                        parse_ok=False,
                        error=f"no response to judge (generation failed: {t.generation_error})",
                    )
                )
                continue
            r = next(results)
            if r.error:
                verdicts.append(
                    Verdict(
                        test_id=t.test_id,
                        target=t.target,
                        judge=self.spec.name,
                        raw=r.text or None,
                        parse_ok=False,
                        latency_ms=r.latency_ms,
                        error=r.error,
                    )
                )
                continue
            parsed = self.format.parse(r.text, item=items[i])
            verdicts.append(
                Verdict(
                    test_id=t.test_id,
                    target=t.target,
                    judge=self.spec.name,
                    label=parsed.label,
                    risk_score=self.format.risk_score(r.label_logprobs),
                    risk_tags=list(parsed.risk_tags),
                    critique=parsed.critique,
                    raw=r.text,
                    parse_ok=parsed.parse_ok,
                    latency_ms=r.latency_ms
                    if r.latency_ms is not None
                    else (time.perf_counter() - start) * 1000,
                )
            )
        return verdicts

    async def close(self) -> None:
        """Releases the model."""
        await self.host.close()
