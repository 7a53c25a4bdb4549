"""Run configuration: one pydantic object that the CLI builds from YAML plus ``--set`` overrides.

Every field has a default where one makes sense and a description; unknown keys are rejected with
a message naming them. ``run_id`` is derived from the fields that change results (suite, targets,
judges, taxonomy), so the same config resumes the same run.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .io import Location, StorageOptions
from .judges import JudgeItem, get_judge
from .requests import SamplingParams
from .yamlsafe import load_yaml, read_yaml_bytes

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SuiteSpec(_Strict):
    """Which suite a run covers."""

    url: str = Field(description="A suite folder or file (any fsspec URL), or a source to import.")
    format: str = Field(
        default="suite",
        description="'suite' for a suite written by assay (or any TestCase Parquet); otherwise an "
        "importer name (jsonl, s-eval, ...) and the source is imported into the output first.",
    )
    import_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra ImportConfig fields for a source that is imported (mapping, lang...).",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Use only the first N rows (for smoke tests)."
    )


class Resources(_Strict):
    """What one replica of a model needs from the cluster."""

    replicas: int = Field(default=1, ge=1, description="Actors serving this model.")
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs per replica (fractions allowed).")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per replica.")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per replica, e.g. {'node_b': 1} to pin replicas to "
        "nodes started with --resources='{\"node_b\": 8}' (or a GPU type label).",
    )

    @field_validator("custom")
    @classmethod
    def _custom(cls, value: dict[str, float]) -> dict[str, float]:
        reserved = {"CPU", "GPU", "memory", "object_store_memory"} & set(value)
        if reserved:
            raise ValueError(f"use num_cpus/num_gpus, not custom resources {sorted(reserved)}")
        bad = {k: v for k, v in value.items() if v < 0}
        if bad:
            raise ValueError(f"custom resource amounts must be >= 0, got {bad}")
        return value


class ModelSpec(_Strict):
    """A model: a name for reports, a backend, the model path or id, and how to run it."""

    name: str = Field(description="Name used in results (target or judge column).")
    backend: str = Field(default="transformers", description="fake, transformers, vllm, openai.")
    model: str = Field(description="Local path or hub id (openai: the served model name).")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Backend options (validated by the backend)."
    )
    resources: Resources = Field(default_factory=Resources, description="Replicas and resources.")
    max_batch: int = Field(
        default=128,
        ge=1,
        description="Requests per actor call (the backend splits or batches further itself).",
    )
    max_in_flight: int = Field(
        default=1024,
        ge=1,
        description="Requests in flight per replica (backpressure). vLLM's batch defaults run up "
        "to 1,024 sequences at once on a large GPU; fewer in flight would leave it idle.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid name {value!r}: letters, digits, '.', '_', '-' (max 64)")
        return value


class TargetSpec(ModelSpec):
    """A model under test."""

    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(max_tokens=256), description="Decoding parameters."
    )
    system_prompt: str | None = Field(default=None, description="System message, if any.")


class JudgeSpec(ModelSpec):
    """A safety judge: a judge format on a model."""

    format: str = Field(description="Judge format: llama-guard-3, qwen3guard, safety-j, ...")
    format_options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the judge format (e.g. mode: strict)."
    )
    sampling: SamplingParams | None = Field(
        default=None, description="Decoding parameters (default: the format's own)."
    )

    @model_validator(mode="after")
    def _rendering_contract(self) -> JudgeSpec:
        """The format's options are valid and the backend renders its prompt as the format's
        rendering contract says (checked before any actor starts)."""
        check_rendering_contract(self)
        return self


def check_rendering_contract(spec: JudgeSpec) -> None:
    """Fails when a judge's backend options contradict its format's rendering contract.

    - ``chat_template`` on the transformers/vLLM backend replaces the model's own template; a
      format whose published prompt is assay's plain turn format or raw text (see
      :class:`~assay.engine.judges.Rendering`) would then be rendered differently, or a guard's
      moderation prompt wrapped twice;
    - the openai backend renders nothing itself: a raw-text format needs ``mode: completions``; a
      plain-format one works only where the served model's own template builds the prompt from the
      raw conversation (a guard with its moderation template, and its published policy).

    Raises:
        ConfigError: Naming the judge, the format and what to change; also for invalid format
            options.
    """
    judge = get_judge(spec.format, **spec.format_options)
    contract = judge.render_contract()
    template = spec.options.get("chat_template")
    where = f"judge {spec.name!r} (format {spec.format!r})"
    if (
        template is not None
        and contract.kind != "model"
        and spec.backend in ("transformers", "vllm")
    ):
        raise ConfigError(
            f"{where} renders its published prompt with {contract.describe()} "
            f"(source: {contract.source}); the backend option chat_template={template!r} would "
            "render another prompt: remove it"
        )
    if spec.backend == "openai":
        mode = spec.options.get("mode", "chat")
        probe = JudgeItem(prompt="p", response="r")
        own = contract.own_template_marker is not None and judge.own_template_applies(probe)
        if contract.kind == "raw" and mode != "completions":
            raise ConfigError(
                f"{where} writes its whole prompt as raw text ({contract.source}); with the openai "
                "backend set options.mode: completions, or the server's chat template wraps it"
            )
        if contract.kind == "plain" and not own:
            raise ConfigError(
                f"{where} renders with {contract.describe()}, which an OpenAI-compatible server "
                "cannot apply; use the transformers or vLLM backend"
                + (" (or the published policy)" if contract.own_template_marker else "")
            )
        if contract.kind == "plain" and mode == "completions":
            raise ConfigError(
                f"{where} needs chat messages rendered by the served model's own moderation "
                "template; use options.mode: chat with the openai backend"
            )


class GeneratorSpec(TargetSpec):
    """A generator model (``assay generate``, rewrite attacks): any backend, run on the same
    actors as ``assay run``'s targets."""

    sampling: SamplingParams = Field(
        default_factory=lambda: SamplingParams(max_tokens=200, temperature=0.9, top_p=0.95),
        description="Decoding parameters (each request gets its own seed).",
    )


class ExecutorSpec(_Strict):
    """Where the actors run."""

    kind: Literal["ray", "local"] = Field(
        default="ray", description="ray: Ray actors (local Ray or a cluster); local: in-process."
    )
    address: str | None = Field(
        default=None, description="Ray address to join ('auto', 'ray://...'); None starts one."
    )
    num_cpus: int | None = Field(
        default=None, ge=1, description="Logical CPUs of a Ray started here (default: 8)."
    )
    max_actor_restarts: int = Field(
        default=3,
        ge=0,
        description="Per model: how many dead replicas are replaced (their calls retried on "
        "the new one) before the run fails.",
    )
    placement_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="How long to wait for a tensor-parallel model's placement groups (GPUs on "
        "one node) before failing with the cluster's resources in the error.",
    )


class RunConfig(_Strict):
    """A run: a suite, targets that answer it, judges that label the answers, an output."""

    suite: SuiteSpec = Field(description="The suite.")
    targets: list[TargetSpec] = Field(
        default_factory=list,
        description="Models under test. May be empty when every suite row carries a response.",
    )
    judges: list[JudgeSpec] = Field(description="Judges; at least one.", min_length=1)
    output: str = Field(default="runs", description="Folder (any fsspec URL) holding run folders.")
    run_id: str | None = Field(default=None, description="Run id (default: derived from config).")
    shard_size: int = Field(
        default=1024,
        ge=1,
        description="Rows per shard: the unit of commit and of resume. Each shard costs a few "
        "storage round trips and actor calls, so small shards slow large runs down.",
    )
    max_shards_in_flight: int = Field(
        default=8, ge=1, description="Shards processed at once (bounds driver memory)."
    )
    lease_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="Shard leases (several drivers on one run folder): a shard's lease expires "
        "this long after its holder last renewed it, and another driver may then take the shard "
        "over (how long a SIGKILLed driver's shards wait). Does not change results.",
    )
    lease_heartbeat_s: float | None = Field(
        default=None,
        gt=0,
        description="How often a driver renews the leases of its shards in flight, and polls "
        "for shards other drivers hold (default: a quarter of lease_ttl_s; must be below it).",
    )
    max_retries: int = Field(default=3, ge=0, description="Retries of a failed backend call.")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="First retry delay, doubling.")
    taxonomy: str | None = Field(
        default=None,
        description="YAML extending S-Eval with L3/L4 (default: built-in S-Eval). Loaded when "
        "the config is validated: a file that is missing or breaks the format is an error.",
    )
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="Executor.")
    storage_options: StorageOptions = Field(
        default_factory=dict, description="fsspec options for suite and output."
    )
    progress: bool = Field(default=True, description="Show a progress bar on a terminal.")

    @model_validator(mode="after")
    def _taxonomy_loads(self) -> RunConfig:
        if self.taxonomy is not None:
            from .taxonomy import load_risk_tree  # the taxonomy package is light, but only here

            load_risk_tree(self.taxonomy, self.storage_options)  # TaxonomyFileError names it
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> RunConfig:
        for kind, specs in (("target", self.targets), ("judge", self.judges)):
            names = [s.name for s in specs]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate {kind} names: {sorted(dup)}")
        return self

    @model_validator(mode="after")
    def _lease_heartbeat(self) -> RunConfig:
        if self.lease_heartbeat_s is not None and self.lease_heartbeat_s >= self.lease_ttl_s:
            raise ValueError(
                f"lease_heartbeat_s ({self.lease_heartbeat_s}) must be below lease_ttl_s "
                f"({self.lease_ttl_s}), or a live driver's leases expire between renewals"
            )
        return self

    @property
    def lease_heartbeat(self) -> float:
        """Seconds between lease renewals (and polls for other drivers' shards)."""
        return self.lease_heartbeat_s or self.lease_ttl_s / 4

    def result_fields(self) -> dict[str, Any]:
        """The fields that change results; their hash names the run."""
        data = self.model_dump(mode="json")
        keep = ("suite", "targets", "judges", "taxonomy")
        out = {k: data[k] for k in keep}
        for spec in out["targets"] + out["judges"]:
            spec.pop("resources", None)  # where a model runs does not change what it answers
            spec.pop("max_in_flight", None)
            # max_batch stays: batched backends pad a batch to its longest prompt, and padding
            # changes what a model decodes (176 of 176 sampled responses differed), so runs
            # with another max_batch are other runs and never resume into each other.
        return out


class ModelJobConfig(_Strict):
    """What every job that runs models on the executor shares (generate, attack)."""

    storage_options: StorageOptions = Field(
        default_factory=dict,
        description="fsspec options for every URL of the config (credentials, endpoint).",
    )
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="Where work runs.")
    max_retries: int = Field(default=3, ge=0, description="Retries of a failed backend call.")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="First retry delay (s).")


class AttackConfig(ModelJobConfig):
    """``assay attack``: the attack variants of a suite's base prompts, written as a suite."""

    suite: str = Field(description="The base suite (any fsspec URL).")
    output: str = Field(description="URL of the suite folder to write.")
    name: str | None = Field(default=None, description="Suite name (default: the folder's).")
    overwrite: bool = Field(default=False, description="Replace a suite at the output.")
    attacks: str = Field(
        default="all", description="'all' (S-Eval's 10) or comma-separated attack keys."
    )
    seed: int = Field(default=0, description="Seed of every template choice and rewrite.")
    include_base: bool = Field(
        default=True, description="Write the base prompts too (a base + attack suite)."
    )
    skip_attack_rows: bool = Field(
        default=False,
        description="Pass over input rows that are already attacks (default: an error).",
    )
    generator: GeneratorSpec | None = Field(
        default=None,
        description="Model for the rewriting attacks (reverse induction, in-context, "
        "compositional); None: their template fallbacks, recorded in each row's meta.",
    )
    batch_rows: int = Field(
        default=2000, ge=1, description="Base rows per unit of work (a Ray task on a cluster)."
    )


C = TypeVar("C", bound=BaseModel)


@overload
def load_config(
    path: str | None, overrides: list[str] | None = None, base: dict[str, Any] | None = None
) -> RunConfig: ...


@overload
def load_config(
    path: str | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    *,
    model: type[C],
    explicit: dict[str, Any] | None = None,
) -> C: ...


def load_config(
    path: str | None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    *,
    model: type[BaseModel] = RunConfig,
    explicit: dict[str, Any] | None = None,
) -> BaseModel:
    """Reads a YAML config (any fsspec URL), applies ``key=value`` overrides, and validates it
    as ``model`` (a run config unless told otherwise).

    Precedence, lowest first: ``base``, the file, ``explicit`` (values given on the command
    line as options), the ``key=value`` overrides.
    """
    data: dict[str, Any] = copy.deepcopy(base) if base else {}
    if path is not None:
        data.update(read_config_file(path))
        _resolve_relative_paths(data, Path(path).parent if "://" not in path else None)
    data.update(explicit or {})
    for item in overrides or []:
        apply_override(data, item)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        what = f"{model.__name__.removesuffix('Config').lower() or model.__name__} config"
        raise ConfigError(describe_validation_error(exc, path, what)) from None


def read_config_file(path: str) -> dict[str, Any]:
    """The mapping a YAML config file (any fsspec URL) holds, with clear errors."""
    try:
        raw = read_yaml_bytes(Location.parse(path), path, what="config file")
    except FileNotFoundError:
        raise ConfigError(f"no config file at {path}") from None
    try:
        loaded = load_yaml(raw, path, what="config file") or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return loaded


def _resolve_relative_paths(data: dict[str, Any], folder: Path | None) -> None:
    """Paths starting with './' or '../' in a config file are relative to the file."""
    if folder is None:
        return

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(("./", "../")):
            return str((folder / value).resolve())
        return value

    suite = data.get("suite")
    if isinstance(suite, dict) and "url" in suite:
        suite["url"] = fix(suite["url"])
    specs = [*(data.get("targets") or []), *(data.get("judges") or [])]
    specs.append(data.get("generator"))
    for spec in specs:
        if isinstance(spec, dict) and "model" in spec:
            spec["model"] = fix(spec["model"])
        options = spec.get("format_options") if isinstance(spec, dict) else None
        if isinstance(options, dict) and "policy" in options:  # a judge's policy file
            options["policy"] = fix(options["policy"])
    for key in ("taxonomy", "suite", "seed_suite"):
        if key in data:
            data[key] = fix(data[key])


def apply_override(data: dict[str, Any], item: str) -> None:
    """Applies ``a.b.0.c=value`` (value parsed as YAML) to nested dicts and lists."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    try:
        value = load_yaml(raw, f"--set {key}")
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {part!r} is not an index of a {len(node)}-list")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:i])} is not a mapping or list")


_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def error_message(err: Mapping[str, Any]) -> str:
    """The text of one pydantic error, without the "Value error, " that pydantic puts before the
    message of a ``ValueError`` raised in a validator."""
    msg = str(err["msg"])
    for prefix in _PYDANTIC_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def describe_validation_error(
    exc: ValidationError, source: str | None, what: str = "run config"
) -> str:
    """One line per problem: where in the config, and what is wrong."""
    lines = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {where!r}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {where!r}")
        else:
            lines.append(f"{where}: {error_message(err)}")
    head = f"invalid {what}{f' {source}' if source else ''}: "
    more = f" (and {exc.error_count() - 8} more)" if exc.error_count() > 8 else ""
    return head + "; ".join(lines) + more
