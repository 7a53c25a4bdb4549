"""Runs on a Ray cluster through the Ray Jobs API: ``assay submit``, ``status``, ``logs``, ``stop``.

A submitted run is a Ray job whose entrypoint is ``assay run <config>`` on the head node. The job's
runtime environment carries what the cluster does not have:

- ``working_dir``: a fresh folder holding the config file (under its own name) and any files
  given with ``--include`` (a small suite, a taxonomy). Paths starting with ``./`` in the config
  are relative to the config file, so ``suite: {url: ./starter.jsonl}`` plus
  ``--include starter.jsonl`` works as it does locally. Large suites and all results belong on
  object storage (``s3://...``), which every node reads with its own credentials.
- the assay code, chosen with ``ship``:

  ``source`` (the default): the four packages of the assay that runs ``submit``
  (``assay.engine``, ``assay.actors``, ``assay.kernels``, ``assay.cluster``) go in ``py_modules``
  as one ``assay/`` folder, so the job runs exactly the submitter's code whether or not the cluster
  has assay installed (shipped code shadows an installed assay). The entrypoint is then
  ``python -m assay.cluster.cli run ...`` because no console script exists on a cluster without
  assay. The cluster still needs assay's dependencies (pydantic, pyarrow, fsspec, pyyaml, click,
  httpx, tqdm, plus the backends' own: torch/transformers, vllm); ``pip`` adds missing ones
  through the runtime environment (a virtualenv per job on top of the node's packages).
  A wheel in ``py_modules`` is not used: Ray installs it with its dependencies
  (``pip install --target``), which would pull a second ray and pyarrow into every job.

  ``installed``: the cluster image has assay installed (the KubeRay manifests in
  ``cluster/k8s/`` assume this); only the config ships and the entrypoint is ``assay run ...``.

The run id is fixed at submit time (``--set run_id=...``, derived from the config as written, its
relative paths unresolved) and stored with the output URL in the job's metadata, so
``assay status <job id>`` finds the run folder and shows the manifest's progress with the job
state. Nothing secret goes into a job's runtime environment or metadata: both are visible in the
dashboard. Storage credentials come from the nodes' environment (a Kubernetes Secret, an instance
role), never from the submitter.

The Jobs API is the dashboard's HTTP server on the head node (port 8265), so the cluster needs
``ray[default]``. Authentication is the cluster's own, as configured; nothing here changes it.
With Ray's token auth on (``RAY_AUTH_MODE=token`` on every node), set ``RAY_AUTH_MODE=token`` here
too and make the cluster's token readable (``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``, or
``RAY_AUTH_TOKEN``): Ray's Jobs client sends it with every request (a wrong or missing one gets
an authentication error), and the job's driver, which joins the cluster
(``executor.address=auto``), gets it from its node. ``tests/integration/test_jobs.py`` runs all of
this against a head with token auth on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from assay.engine import __version__
from assay.engine.config import load_config, read_config_file
from assay.engine.errors import AssayError, ConfigError, FatalError
from assay.engine.io import Location

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
PACKAGES = ("engine", "actors", "kernels", "cluster")
"""The import packages of assay (``assay.<name>``), shipped together as one ``assay/`` folder."""
SHIP_MODES = ("source", "installed")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")

# Keys of the job metadata (Ray allows string values only).
META_RUN_ID = "assay_run_id"
META_RUN_URL = "assay_run_url"
META_CONFIG = "assay_config"
META_VERSION = "assay_version"


def resolve_address(address: str | None) -> str:
    """The Jobs API address: given, else RAY_API_SERVER_ADDRESS, RAY_ADDRESS, or the local one.

    A bare ``host:port`` is taken as the dashboard's HTTP address.
    """
    address = (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or DEFAULT_ADDRESS
    )
    if "://" not in address and address != "auto":
        address = f"http://{address}"
    return address


def is_job_id(ref: str) -> bool:
    """Whether ``ref`` looks like a Ray job submission id (what ``assay submit`` prints)."""
    return ref.startswith("raysubmit_")


def _client(address: str | None) -> Any:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as exc:  # ray without the [default] extra
        raise FatalError(
            f'the Ray Jobs client needs ray[default]: pip install "ray[default]" ({exc})'
        ) from exc
    # The client logs every package upload and websocket close at INFO; assay says what matters.
    for name in (
        "ray.dashboard.modules.dashboard_sdk",
        "ray.dashboard.modules.job.sdk",
        "ray._private.runtime_env.packaging",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    url = resolve_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as exc:
        raise FatalError(f"cannot reach the Ray Jobs API at {url}: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:500]


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A Jobs API call whose failure (no such job, server error) becomes one clear message."""
    try:
        return fn(*args, **kwargs)
    except AssayError:
        raise
    except Exception as exc:
        raise FatalError(f"{what}: {_one_line(exc)}") from exc


# -- submit ------------------------------------------------------------------------------------


@dataclass
class JobPlan:
    """What ``submit`` sends: the entrypoint, the runtime environment and the metadata."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    run_id: str
    run_url: str
    notes: list[str] = field(default_factory=list)
    """Things the submitter should know (an address filled in, a local output)."""


def _copy_package_sources(dest: Path) -> None:
    """Copies assay's import packages (as installed, editable or not) into ``dest/assay/``."""
    import importlib

    root = dest / "assay"
    for name in PACKAGES:
        module = importlib.import_module(f"assay.{name}")
        paths = list(getattr(module, "__path__", []))
        if len(paths) != 1:
            raise FatalError(f"cannot locate the source of assay.{name} (found {paths})")
        shutil.copytree(
            paths[0],
            root / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"),
        )


def plan_job(
    config: str,
    stage: Path,
    overrides: list[str] | None = None,
    output: str | None = None,
    include: list[str] | None = None,
    ship: str = "source",
    pip: list[str] | None = None,
) -> JobPlan:
    """Validates the config here and lays out the job's files under ``stage``.

    Nothing is sent. The config is checked the way ``assay run`` checks it, so a typo fails here
    rather than minutes later on the cluster; files it names are only opened on the cluster.
    """
    overrides = list(overrides or [])
    if output:
        overrides.append(f"output={output}")
    data = read_config_file(config)
    # Validated without resolving './' paths: they point into the job's working_dir.
    cfg = load_config(None, overrides, base=data)
    notes: list[str] = []
    if "://" not in cfg.output and not os.path.isabs(cfg.output):
        raise ConfigError(
            f"output {cfg.output!r} is a relative path: on the cluster it would land in the job's "
            "temporary working_dir; pass --output s3://bucket/runs (or an absolute path that the "
            "cluster's head node can write)"
        )
    if "://" not in cfg.output or cfg.output.startswith("file://"):
        notes.append(
            f"output {cfg.output} is a local path: the run folder is written on the cluster's "
            "head node, not here"
        )
    if cfg.executor.kind == "ray" and cfg.executor.address is None:
        # Without an address the job's driver would start a private Ray inside the job.
        overrides.append("executor.address=auto")
        notes.append("executor.address=auto: the run joins the cluster the job runs on")

    from .run import derive_run_id

    run_id = derive_run_id(cfg)
    if cfg.run_id is None:
        overrides.append(f"run_id={run_id}")
    run_url = f"{cfg.output.rstrip('/')}/{run_id}"

    workdir = stage / "job"
    workdir.mkdir(parents=True)
    name = Location.parse(config).name
    (workdir / name).write_bytes(Location.parse(config).read_bytes())  # shipped as written
    for item in include or []:
        src = Path(item)
        if not src.exists():
            raise ConfigError(f"--include {item}: no such file or folder")
        if (workdir / src.name).exists():
            raise ConfigError(f"--include {item}: a file named {src.name} is already included")
        if src.is_dir():
            shutil.copytree(src, workdir / src.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, workdir / src.name)

    runtime_env: dict[str, Any] = {"working_dir": str(workdir)}
    if ship == "source":
        _copy_package_sources(stage / "modules")
        runtime_env["py_modules"] = [str(stage / "modules" / "assay")]
        command = ["python", "-m", "assay.cluster.cli", "run", name]
    elif ship == "installed":
        command = ["assay", "run", name]
    else:
        raise ConfigError(f"ship must be one of {SHIP_MODES}, not {ship!r}")
    if pip:
        runtime_env["pip"] = list(pip)
    for item in overrides:
        if item.startswith("output="):
            continue
        command += ["--set", item]
    command += ["--output", cfg.output]
    return JobPlan(
        entrypoint=shlex.join(command),
        runtime_env=runtime_env,
        metadata={
            META_RUN_ID: run_id,
            META_RUN_URL: run_url,
            META_CONFIG: name,
            META_VERSION: __version__,
        },
        run_id=run_id,
        run_url=run_url,
        notes=notes,
    )


@dataclass
class Submitted:
    """A job that was accepted."""

    job_id: str
    address: str
    run_id: str
    run_url: str
    entrypoint: str
    notes: list[str]


@contextmanager
def _stage() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="assay-submit-") as tmp:
        yield Path(tmp)


def submit(
    config: str,
    address: str | None = None,
    overrides: list[str] | None = None,
    output: str | None = None,
    include: list[str] | None = None,
    ship: str = "source",
    pip: list[str] | None = None,
    submission_id: str | None = None,
) -> Submitted:
    """Submits ``assay run <config>`` as a Ray job; returns once the cluster accepted it."""
    with _stage() as stage:
        plan = plan_job(config, stage, overrides, output, include, ship, pip)
        client = _client(address)
        # The client packs working_dir and py_modules, uploads them, and only then submits,
        # so the staging folder can go as soon as this returns.
        job_id = _call(
            f"submitting to {resolve_address(address)}",
            client.submit_job,
            entrypoint=plan.entrypoint,
            runtime_env=plan.runtime_env,
            metadata=plan.metadata,
            submission_id=submission_id,
        )
    return Submitted(
        job_id=str(job_id),
        address=resolve_address(address),
        run_id=plan.run_id,
        run_url=plan.run_url,
        entrypoint=plan.entrypoint,
        notes=plan.notes,
    )


# -- status, logs, stop ------------------------------------------------------------------------


@dataclass
class JobState:
    """A job as the Jobs API reports it, plus the run folder its metadata names."""

    job_id: str
    status: str
    message: str | None
    entrypoint: str
    start_time: str | None
    end_time: str | None
    duration_s: float | None
    run_id: str | None
    run_url: str | None
    metadata: dict[str, str]

    @property
    def terminal(self) -> bool:
        """Whether the job ended (succeeded, failed or stopped)."""
        return self.status in TERMINAL


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


def job_state(job_id: str, address: str | None = None) -> JobState:
    """The job's status, message, times, and its run folder (from the job's metadata)."""
    client = _client(address)
    info = _call(f"job {job_id}", client.get_job_info, job_id)
    meta = dict(info.metadata or {})
    start, end = info.start_time, info.end_time
    return JobState(
        job_id=job_id,
        status=str(info.status),
        message=info.message,
        entrypoint=info.entrypoint,
        start_time=_iso(start),
        end_time=_iso(end),
        duration_s=round((end - start) / 1000, 1) if start and end else None,
        run_id=meta.get(META_RUN_ID),
        run_url=meta.get(META_RUN_URL),
        metadata=meta,
    )


def job_logs(job_id: str, address: str | None = None) -> str:
    """Everything the job's entrypoint printed so far (stdout and stderr together)."""
    client = _client(address)
    return str(_call(f"logs of job {job_id}", client.get_job_logs, job_id))


def follow_logs(job_id: str, write: Callable[[str], None], address: str | None = None) -> str:
    """Streams the job's logs to ``write`` until the job ends; returns its final status."""
    client = _client(address)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    _call(f"following the logs of job {job_id}", asyncio.run, tail())
    return str(_call(f"job {job_id}", client.get_job_status, job_id))


def stop_job(job_id: str, address: str | None = None) -> bool:
    """Asks the cluster to stop the job; False if it had already ended."""
    client = _client(address)
    return bool(_call(f"stopping job {job_id}", client.stop_job, job_id))
