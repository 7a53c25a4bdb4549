"""The two model actors: ``GeneratorActor`` (targets answer prompts) and ``JudgeActor``.

Both are plain classes with async methods; the executor runs them as Ray actors (one model engine
each, many concurrent calls from several shards at once) or in-process. Payloads are columnar both
ways: a call carries one Arrow table of prompts (as IPC bytes) and returns one Arrow table in the
``Generation`` or ``Verdict`` schema, so a call costs a few buffer copies, not one Python object
per row per hop; the driver commits the returned tables as they are.
"""

from __future__ import annotations

import os
import time
import typing
from typing import Any

import pyarrow as pa

from assay.engine.config import JudgeSpec, TargetSpec
from assay.engine.errors import FatalError
from assay.engine.judges import JudgeItem, SpecialTokens, get_judge
from assay.engine.records import Generation, Label, Verdict
from assay.engine.requests import ChatMessage, GenerationRequest, GenerationResult
from assay.engine.runfolder import canonical_hash

from .backends.base import BackendSpec, special_texts
from .host import ModelHost

PROMPT_SCHEMA = pa.schema([("test_id", pa.string()), ("text", pa.string())])
"""Columns of a generation payload: one prompt per row."""

JUDGE_TASK_SCHEMA = pa.schema(
    [
        ("test_id", pa.string()),
        ("target", pa.string()),
        ("prompt", pa.string()),
        ("response", pa.string()),
        ("lang", pa.string()),
        ("generation_error", pa.string()),
    ]
)
"""Columns of a judge payload: one (prompt, response) pair per row; a null response is a
generation that failed (its verdict records that, and nothing is sent to the model)."""


def encode_payload(table: pa.Table) -> bytes:
    """A table as Arrow IPC stream bytes: the rows of a slice only, never its parent's buffers."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def decode_payload(payload: bytes | pa.Table, schema: pa.Schema) -> pa.Table:
    """The table of a payload, checked against the columns the actor expects."""
    table = payload if isinstance(payload, pa.Table) else pa.ipc.open_stream(payload).read_all()
    missing = [n for n in schema.names if n not in table.schema.names]
    if missing:
        raise ValueError(f"payload lacks columns {missing}")
    return table


def node_id() -> str:
    """The Ray node this process runs on, or 'local' outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except ImportError:
        pass
    return "local"


def placement() -> dict[str, Any]:
    """Where this process runs: Ray node, placement group (None outside one) and GPU ids."""
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            return {
                "node": str(ctx.get_node_id()),
                "placement_group": ctx.get_placement_group_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            }
    except ImportError:
        pass
    return {"node": "local", "placement_group": None, "gpu_ids": []}


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

    async def where(self) -> dict[str, Any]:
        """This replica's node, placement group and GPUs."""
        return placement()

    def _request(self, test_id: str, text: str) -> GenerationRequest:
        messages = []
        if self.spec.system_prompt:
            messages.append(ChatMessage(role="system", content=self.spec.system_prompt))
        messages.append(ChatMessage(role="user", content=text))
        return GenerationRequest(
            request_id=test_id, messages=tuple(messages), sampling=self.spec.sampling
        )

    async def generate(self, payload: bytes | pa.Table) -> pa.Table:
        """One generation per prompt row, in order (``Generation`` schema); failed requests
        carry ``error``."""
        table = decode_payload(payload, PROMPT_SCHEMA)
        ids = table.column("test_id").to_pylist()
        texts = table.column("text").to_pylist()
        results = await self.host.generate(
            [self._request(t, x) for t, x in zip(ids, texts, strict=True)]
        )
        n = len(ids)
        return pa.Table.from_pydict(
            {
                "test_id": ids,
                "target": [self.spec.name] * n,
                "params_hash": [self.params_hash] * n,
                "response": [None if r.error else r.text for r in results],
                "finish_reason": ["error" if r.error else r.finish_reason for r in results],
                "prompt_tokens": [r.prompt_tokens for r in results],
                "output_tokens": [r.output_tokens for r in results],
                "latency_ms": [r.latency_ms for r in results],
                "error": [r.error for r in results],
            },
            schema=Generation.arrow_schema(),
        )

    async def complete(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Runs requests as they are (the caller's messages and sampling): the generator calls
        of ``assay generate`` and of rewriting attacks."""
        return await self.host.generate(requests)

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
        self._special: SpecialTokens | None = None
        self._check_labels()

    def _check_labels(self) -> None:
        """Fails the start when the backend cannot read this judge's label tokens after its
        prompt (labels sharing a first token, a label merging with the prompt's end): every
        risk score would be wrong or missing, so no row should be judged."""
        check = getattr(self.host.backend, "check_request", None)
        if check is None:
            return
        probes = [
            JudgeItem(prompt="Is this safe?", response="It is.", lang=lang) for lang in ("en", "zh")
        ]
        if self.format.supports_prompt_only:
            probes.append(JudgeItem(prompt="Is this safe?"))
        for probe in probes:
            request = self.format.build_request(probe, "label-check", sampling=self.sampling)
            try:
                check(request)
            except ValueError as exc:
                raise FatalError(
                    f"judge {self.spec.name!r} (format {self.spec.format!r}, model "
                    f"{self.spec.model!r}): its prompt cannot be rendered or its label tokens "
                    f"read: {exc}"
                ) from exc

    async def special_tokens(self) -> SpecialTokens:
        """The special tokens of the tokenizer the backend loaded (asked once), which the judge
        prompts neutralise in the judged text."""
        if self._special is None:
            self._special = SpecialTokens(await special_texts(self.host.backend))
        return self._special

    async def ready(self) -> str:
        """Returns once the model is loaded: the node id."""
        return node_id()

    async def where(self) -> dict[str, Any]:
        """This replica's node, placement group and GPUs."""
        return placement()

    async def judge(self, payload: bytes | pa.Table) -> pa.Table:
        """One verdict per task row, in order (``Verdict`` schema). A task whose generation
        failed (no response, ``generation_error`` set) is not sent to the model; its verdict
        says why. A task without a response and without an error asks about the prompt alone
        (the judge service's prompt-only items)."""
        table = decode_payload(payload, JUDGE_TASK_SCHEMA)
        cols = {n: table.column(n).to_pylist() for n in JUDGE_TASK_SCHEMA.names}
        n = table.num_rows
        failed = [
            cols["response"][i] is None and cols["generation_error"][i] is not None
            for i in range(n)
        ]
        items = {
            i: JudgeItem(
                prompt=cols["prompt"][i], response=cols["response"][i], lang=cols["lang"][i]
            )
            for i in range(n)
            if not failed[i]
        }
        special = await self.special_tokens()
        requests = [
            self.format.build_request(
                item,
                request_id=f"{cols['test_id'][i]}|{cols['target'][i]}",
                sampling=self.sampling,
                special=special,
            )
            for i, item in items.items()
        ]
        start = time.perf_counter()
        results = iter(await self.host.generate(requests))
        out = _VerdictColumns(self.spec.name)
        for i in range(n):
            test_id, target = cols["test_id"][i], cols["target"][i]
            if failed[i]:
                out.add(
                    test_id,
                    target,
                    parse_ok=False,
                    error=f"no response to judge (generation failed: "
                    f"{cols['generation_error'][i]})",
                )
                continue
            r = next(results)
            if r.error:
                out.add(
                    test_id,
                    target,
                    raw=r.text or None,
                    parse_ok=False,
                    latency_ms=r.latency_ms,
                    error=r.error,
                )
                continue
            parsed = self.format.parse(r.text, item=items[i])
            out.add(
                test_id,
                target,
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
        return out.table()

    async def close(self) -> None:
        """Releases the model."""
        await self.host.close()


class _VerdictColumns:
    """Verdict rows gathered column by column (the ``Verdict`` schema's checks applied here)."""

    def __init__(self, judge: str):
        self.judge = judge
        self.cols: dict[str, list[Any]] = {n: [] for n in Verdict.arrow_schema().names}

    def add(
        self,
        test_id: str,
        target: str,
        *,
        label: str | None = None,
        risk_score: float | None = None,
        risk_tags: list[str] | None = None,
        critique: str | None = None,
        raw: str | None = None,
        parse_ok: bool = True,
        latency_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        if label not in _LABELS:
            raise ValueError(f"{self.judge}: judge format returned an unknown label {label!r}")
        if risk_score is not None and not 0.0 <= risk_score <= 1.0:
            raise ValueError(f"{self.judge}: risk score {risk_score} outside [0, 1]")
        c = self.cols
        c["test_id"].append(test_id)
        c["target"].append(target)
        c["judge"].append(self.judge)
        c["label"].append(label)
        c["risk_score"].append(risk_score)
        c["risk_tags"].append(risk_tags or [])
        c["critique"].append(critique)
        c["raw"].append(raw)
        c["parse_ok"].append(parse_ok)
        c["latency_ms"].append(latency_ms)
        c["error"].append(error)

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.cols, schema=Verdict.arrow_schema())


_LABELS = (None, *typing.get_args(Label))
