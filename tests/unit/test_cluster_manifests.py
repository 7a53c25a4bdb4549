"""The cluster manifests parse and say what the README promises (no cluster needed).

Kubernetes and KubeRay schemas are not available offline, so the checks are the essentials:
kinds and API versions, the entrypoint, GPU limits where the GPUs are, a valid cron schedule,
secrets referenced rather than inlined, one Ray version and one image everywhere, and the nightly
config is a run config assay accepts. ``ray-up.yaml`` goes through Ray's own validation (the
JSON schema ``ray up`` applies after filling in the provider's defaults).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.engine.config import load_config

CLUSTER = Path(__file__).parents[2] / "cluster"
K8S = CLUSTER / "k8s"
IMAGE = "registry.example.com/assay:0.1.0-ray2.60.0-gpu"
RAY_VERSION = "2.60.0"
GPU = "nvidia.com/gpu"


def docs(path: Path) -> list[dict[str, Any]]:
    loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert loaded, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in loaded), path
    return loaded


def one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs(path) if d.get("kind") == kind]
    return doc


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_template["spec"]["containers"])


def ray_resources(group: dict[str, Any]) -> dict[str, float]:
    """The custom resources a group's raylets offer (KubeRay's doubly quoted JSON string)."""
    raw = group.get("rayStartParams", {}).get("resources")
    return dict(json.loads(json.loads(raw))) if raw else {}


# -- every file --------------------------------------------------------------------------------

MANIFESTS = sorted(K8S.glob("*.yaml")) + [CLUSTER / "ray-up.yaml"]
SECRET_WORDS = re.compile(
    r"(password|passwd|secret|(^|_)token($|_)|access_key|api_key|credential)", re.I
)


def test_the_expected_files_exist() -> None:
    names = {p.name for p in MANIFESTS}
    assert {"raycluster.yaml", "rayjob.yaml", "nightly-cronjob.yaml", "nightly.yaml"} <= names
    assert "ray-up.yaml" in names
    assert (K8S / "README.md").is_file() and (K8S / "Dockerfile").is_file()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_no_secret_is_inlined(path: Path) -> None:
    for doc in docs(path):
        assert doc.get("kind") != "Secret", f"{path.name}: create Secrets with kubectl, not here"
        for where, key, value in walk(doc):
            # an env var named like a secret must come from a Secret, never a literal value
            if key == "env" and isinstance(value, list):
                for var in value:
                    if SECRET_WORDS.search(var["name"]):
                        assert "value" not in var, f"{path.name}{where}: {var['name']} inlined"
                        assert "secretKeyRef" in var["valueFrom"], f"{path.name}: {var['name']}"
            # no credential-looking key holds a literal anywhere (storage options, provider...)
            if isinstance(key, str) and SECRET_WORDS.search(key) and key != "secretKeyRef":
                assert not isinstance(value, str | int), f"{path.name}{where}.{key} is inlined"


# nightly.yaml is an assay run config (checked below) that travels in a ConfigMap
KUBERNETES = [p for p in sorted(K8S.glob("*.yaml")) if p.name != "nightly.yaml"]


@pytest.mark.parametrize("path", KUBERNETES, ids=lambda p: p.name)
def test_kubernetes_documents_have_kind_api_version_and_name(path: Path) -> None:
    for doc in docs(path):
        assert doc["apiVersion"] and doc["kind"], path.name
        meta = doc["metadata"]
        assert meta.get("name") or meta.get("generateName"), f"{path.name}: {doc['kind']}"
        assert meta["labels"]["app.kubernetes.io/name"] == "assay"


def test_one_ray_version_and_one_image_everywhere() -> None:
    images = set()
    for path in MANIFESTS:
        for doc in docs(path):
            images |= {v for _, k, v in walk(doc) if k == "image" and "assay" in str(v)}
    assert images == {IMAGE}
    for path in (K8S / "raycluster.yaml", K8S / "rayjob.yaml"):
        spec = docs(path)[0]["spec"]
        spec = spec.get("rayClusterSpec", spec)
        assert spec["rayVersion"] == RAY_VERSION, path.name
    dockerfile = (K8S / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{RAY_VERSION}-py311-gpu" in dockerfile
    assert docs(CLUSTER / "ray-up.yaml")[0]["docker"]["image"] == IMAGE


# -- RayCluster --------------------------------------------------------------------------------


def _check_cluster_spec(spec: dict[str, Any], where: str) -> Any:
    """Head without GPUs or Ray CPUs; a GPU worker group with GPU limits; returns that group."""
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", f"{where}: models must not run on the head"
    for c in containers(head["template"]):
        assert GPU not in c.get("resources", {}).get("limits", {}), where
        assert {p["containerPort"] for p in c["ports"]} >= {6379, 8265}, where
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu_groups = [
        g
        for g in groups.values()
        if any(GPU in c["resources"].get("limits", {}) for c in containers(g["template"]))
    ]
    assert len(gpu_groups) == 1, f"{where}: one GPU worker group"
    gpu = gpu_groups[0]
    for c in containers(gpu["template"]):
        limits, requests = c["resources"]["limits"], c["resources"]["requests"]
        assert int(limits[GPU]) >= 1
        assert requests.get(GPU, limits[GPU]) == limits[GPU], "GPU requests must equal limits"
        assert "/dev/shm" in {m["mountPath"] for m in c["volumeMounts"]}
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    tolerations = gpu["template"]["spec"].get("tolerations", [])
    assert any(t["key"] == GPU for t in tolerations), f"{where}: GPU nodes are usually tainted"
    return gpu


def test_raycluster_has_a_head_a_gpu_group_and_a_cpu_group() -> None:
    (doc,) = docs(K8S / "raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    gpu = _check_cluster_spec(doc["spec"], "raycluster.yaml")
    assert ray_resources(gpu) == {"assay_gpu": 8}
    cpu = [g for g in doc["spec"]["workerGroupSpecs"] if g is not gpu]
    assert len(cpu) == 1 and cpu[0]["groupName"] == "cpu"
    assert all(GPU not in c["resources"]["limits"] for c in containers(cpu[0]["template"]))


# -- RayJob and the nightly config -------------------------------------------------------------


def test_rayjob_runs_assay_on_the_config_from_the_configmap() -> None:
    (doc,) = docs(K8S / "rayjob.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["metadata"]["generateName"].endswith("-")  # one RayJob per night, own name
    spec = doc["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["assay", "run", "/configs/nightly.yaml"]
    assert "--set" in argv and argv[argv.index("--set") + 1].startswith("run_id=nightly-$(date")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["activeDeadlineSeconds"] < 24 * 3600  # never overlaps the next night
    assert spec["backoffLimit"] >= 1
    cluster = spec["rayClusterSpec"]
    gpu = _check_cluster_spec(cluster, "rayjob.yaml")
    # the config is mounted from the ConfigMap on the head, where the driver runs
    head = cluster["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for c in head["containers"] for m in c["volumeMounts"]}
    (volume,) = [v for v in head["volumes"] if mounts.get(v["name"]) == "/configs"]
    assert volume["configMap"]["name"] == "assay-nightly-config"
    assert [i["key"] for i in volume["configMap"]["items"]] == ["nightly.yaml"]
    # every custom resource the nightly config asks for is offered by the GPU group
    cfg = load_config(str(K8S / "nightly.yaml"))
    asked = {k for m in [*cfg.targets, *cfg.judges] for k in m.resources.custom}
    assert asked and asked <= set(ray_resources(gpu))
    gpus = sum(m.resources.num_gpus * m.resources.replicas for m in [*cfg.targets, *cfg.judges])
    per_pod = int(containers(gpu["template"])[0]["resources"]["limits"][GPU])
    assert gpus <= per_pod * gpu["maxReplicas"], "the nightly models do not fit the GPU group"


def test_nightly_config_is_a_valid_run_config_for_a_cluster() -> None:
    cfg = load_config(str(K8S / "nightly.yaml"))
    assert cfg.executor.kind == "ray" and cfg.executor.address == "auto"
    assert cfg.suite.url.startswith("s3://") and cfg.output.startswith("s3://")
    assert cfg.judges and all(m.resources.num_gpus >= 1 for m in [*cfg.targets, *cfg.judges])
    assert cfg.run_id is None  # the RayJob sets one per night


# -- the nightly CronJob -----------------------------------------------------------------------

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: list[tuple[int, int, dict[str, int]]] = [  # (low, high, names)
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    (0, 7, {d: i for i, d in enumerate(_DAYS)}),
]


def valid_cron(expr: str) -> bool:
    """A standard 5-field cron expression (numbers, names, *, ranges, lists, steps)."""
    fields = expr.split()
    if len(fields) != 5:
        return False
    for field, (low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and (not step.isdigit() or int(step) < 1):
                return False
            if base == "*":
                continue
            bounds = base.split("-")
            if len(bounds) > 2:
                return False
            values = []
            for b in bounds:
                value = names.get(b.upper()) if not b.isdigit() else int(b)
                if value is None or not low <= value <= high:
                    return False
                values.append(value)
            if len(values) == 2 and values[0] > values[1]:
                return False
    return True


@pytest.mark.parametrize(
    ("expr", "ok"),
    [
        ("0 1 * * *", True),
        ("*/15 0-6,22-23 * JAN-MAR mon-fri", True),
        ("0 1 * *", False),
        ("60 1 * * *", False),
        ("0 24 * * *", False),
        ("0 1 * * 8", False),
        ("0 1 5-2 * *", False),
        ("0 1 */0 * *", False),
        ("@daily", False),
    ],
)
def test_cron_checker(expr: str, ok: bool) -> None:
    assert valid_cron(expr) is ok


def test_nightly_cronjob_creates_the_rayjob_with_minimal_rights() -> None:
    path = K8S / "nightly-cronjob.yaml"
    kinds = {d["kind"]: d for d in docs(path)}
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "CronJob"}
    cron = kinds["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert valid_cron(spec["schedule"]), spec["schedule"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    manifest = Path(container["command"][3])
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [v for v in pod["volumes"] if mount.get(v["name"]) == str(manifest.parent)]
    assert volume["configMap"]["name"] == "assay-nightly-rayjob"
    assert manifest.name == "rayjob.yaml"
    assert volume["configMap"]["items"] == [{"key": "rayjob.yaml", "path": "rayjob.yaml"}]
    # the service account may create RayJobs and nothing else
    (rule,) = kinds["Role"]["rules"]
    assert rule["apiGroups"] == ["ray.io"] and rule["resources"] == ["rayjobs"]
    assert "create" in rule["verbs"] and not {"delete", "*", "update", "patch"} & set(rule["verbs"])
    binding = kinds["RoleBinding"]
    assert binding["roleRef"]["name"] == kinds["Role"]["metadata"]["name"]
    assert binding["subjects"][0]["name"] == kinds["ServiceAccount"]["metadata"]["name"]
    # the README documents the ConfigMaps these names refer to
    readme = (K8S / "README.md").read_text()
    for name in ("assay-nightly-rayjob", "assay-nightly-config", "assay-s3"):
        assert name in readme


# -- ray up ------------------------------------------------------------------------------------


def test_ray_up_config_passes_rays_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    (cfg,) = docs(CLUSTER / "ray-up.yaml")
    validate_config(prepare_config(copy.deepcopy(cfg)))  # what `ray up` runs first
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"]["CPU"] == 0  # drivers only on the head
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU", 0) > 0]
    assert len(gpu) == 1 and gpu[0]["resources"]["assay_gpu"] == gpu[0]["resources"]["GPU"]
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert "ray start --head" in starts and "--address=$RAY_HEAD_IP:6379" in starts
    # a broken config is caught by the same validation
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["gpu"]["resurces"] = {}
    with pytest.raises(Exception, match="resurces"):
        validate_config(prepare_config(bad))
