"""A judge served by ``assay serve`` used inside ``assay run``: a pool that calls the service.

A run config names it like any judge, with ``backend: remote``::

    judges:
      - name: shared-guard
        backend: remote
        model: http://judges.internal:8000      # the service's URL
        format: llama-guard-3                   # the served judge's format (for reports)
        options: {judge: guard, token_env: ASSAY_SERVE_TOKEN}

The token is read here, in the run's driver, from ``token_file`` (a file only the user can read)
or ``token_env``; it is never handed to a Ray process: a local Ray is started with
``ASSAY_SERVE_TOKEN``, ``ASSAY_SERVE_TOKENS`` and any other ``ASSAY_*TOKEN*`` variable taken out
of its environment (:mod:`.localray`), and nothing here puts it in an actor or a runtime env. A
``token_env`` of another name does reach the processes of a local Ray (they copy the driver's
environment); use ``token_file`` or an ``ASSAY_*TOKEN*`` name.

The pool has the executor's :class:`~assay.cluster.executors.Pool` interface: ``call("judge",
payload, rows)`` takes the same task table a ``JudgeActor`` takes and returns the same Verdict
table, so the scheduler cannot tell the two apart. Verdicts carry the run's judge name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from assay.engine.client import AsyncClient
from assay.engine.config import JudgeSpec
from assay.engine.errors import ConfigError
from assay.engine.records import Verdict
from assay.engine.service import ScoreItem


class RemoteJudgeOptions(BaseModel):
    """``options`` of a judge with ``backend: remote``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judge: str | None = Field(default=None, description="Served judge (default: its default).")
    token_env: str | None = Field(
        default="ASSAY_SERVE_TOKEN", description="Variable holding the token (None: no token)."
    )
    token_file: str | None = Field(
        default=None,
        description="File holding the token (its first line that is not a '#' comment); "
        "used instead of token_env when set.",
    )
    timeout_s: float = Field(default=300.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(default=8, ge=0, description="Retries on 429/503/connection errors.")
    batch_size: int | None = Field(
        default=None, ge=1, description="Items per request (default: the service's limit)."
    )
    concurrency: int = Field(default=4, ge=1, description="Requests in flight per pool call.")


class RemoteJudgePool:
    """A judge pool whose replicas are a remote judge service."""

    def __init__(self, spec: JudgeSpec):
        """A client of the service at ``spec.model``; no request is sent yet."""
        try:
            self.options = RemoteJudgeOptions.model_validate(spec.options)
        except ValueError as exc:
            raise ConfigError(f"judge {spec.name!r} (backend remote): {exc}") from None
        token = _token(spec.name, self.options)
        self.name = spec.name
        self.rows_by_node: Counter[str] = Counter()
        self.client = AsyncClient(
            spec.model,
            token,
            judge=self.options.judge,
            timeout_s=self.options.timeout_s,
            max_retries=self.options.max_retries,
            batch_size=self.options.batch_size,
            concurrency=self.options.concurrency,
        )
        self._where = f"remote:{spec.model}"
        self.max_chars: int | None = None

    async def check(self) -> None:
        """Fails early with a clear error when the service, the token or the judge is wrong."""
        info = await self.client.judges()
        self.max_chars = info.limits.max_chars_per_item
        names = [j.name for j in info.judges]
        if self.options.judge is not None and self.options.judge not in names:
            raise ConfigError(
                f"judge {self.name!r}: the service serves {names}, not {self.options.judge!r}"
            )

    async def call(self, method: str, payload: Any, rows: int) -> pa.Table:
        """Judges a task table (``JUDGE_TASK_SCHEMA``) remotely; one verdict per row, in order.

        Rows whose generation failed, and rows longer than the service accepts, are not sent;
        their verdicts say why (per-row failures are data, as a ``JudgeActor``'s are).
        """
        if method != "judge":
            raise ValueError(f"a remote judge pool has no method {method!r}")
        from assay.actors.workers import JUDGE_TASK_SCHEMA, decode_payload

        table = decode_payload(payload, JUDGE_TASK_SCHEMA)
        cols = {n: table.column(n).to_pylist() for n in JUDGE_TASK_SCHEMA.names}
        local: dict[int, str] = {}  # rows answered here, with the reason
        for i in range(table.num_rows):
            chars = len(cols["prompt"][i]) + len(cols["response"][i] or "")
            if cols["response"][i] is None:
                local[i] = (
                    f"no response to judge (generation failed: {cols['generation_error'][i]})"
                )
            elif self.max_chars is not None and chars > self.max_chars:
                local[i] = (
                    f"not judged: {chars:,} characters of prompt and response, over the "
                    f"service's limit of {self.max_chars:,}"
                )
        sent = [i for i in range(table.num_rows) if i not in local]
        items = [
            ScoreItem(
                prompt=cols["prompt"][i],
                response=cols["response"][i],
                lang=cols["lang"][i] or "en",
                id=cols["test_id"][i],
                target=cols["target"][i],
            )
            for i in sent
        ]
        got = iter(await self.client.score(items) if items else [])
        verdicts = []
        for i in range(table.num_rows):
            if i in local:
                verdicts.append(
                    Verdict(
                        test_id=cols["test_id"][i],
                        target=cols["target"][i],
                        judge=self.name,
                        parse_ok=False,
                        error=local[i],
                    )
                )
            else:
                verdicts.append(next(got).model_copy(update={"judge": self.name}))
        self.rows_by_node[self._where] += rows
        return Verdict.to_table(verdicts)

    async def close(self) -> None:
        """Closes the client's connections."""
        await self.client.aclose()


def _token(judge: str, options: RemoteJudgeOptions) -> str | None:
    """The bearer token of a remote judge: ``token_file``'s, else ``token_env``'s, else None."""
    if options.token_file:
        try:
            lines = Path(options.token_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"judge {judge!r} (backend remote): cannot read token_file "
                f"{options.token_file}: {exc.strerror or exc}"
            ) from None
        found = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not found:
            raise ConfigError(
                f"judge {judge!r} (backend remote): token_file {options.token_file} holds no token"
            )
        return found[0]
    if options.token_env:
        return os.environ.get(options.token_env) or None
    return None


__all__ = ["RemoteJudgeOptions", "RemoteJudgePool"]
