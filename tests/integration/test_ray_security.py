"""The Ray that assay starts is closed to everyone else (issue 12, section 2).

Two real starts, each in its own process as a user runs them: ``assay serve`` (a subprocess of the
console script) and the Ray executor of ``assay run`` (a driver script that builds a
:class:`~assay.cluster.executors.RayExecutor`, a fake judge on a Ray actor and a remote judge
pool calling that service, with the client token in ``ASSAY_SERVE_TOKEN``). For each:

1. a second process without the cluster's token cannot connect (``ray.init(address=...)``) nor
   run a remote function there: Ray refuses it as unauthenticated; with the token file it can
   (so the refusal is the token's doing, not a wrong address);
2. every socket the Ray processes (the driver and all its descendants) listen on is bound to
   127.0.0.1 or ::1;
3. no Ray process's environment (raylet, gcs_server, agents, workers, the Serve controller and
   judge replicas) holds the service tokens, the client token or ``ASSAY_SERVE_TOKENS``, and no
   file of the Ray session (its logs) holds a token.

Linux only: processes are found through /proc and sockets with ``ss`` (iproute2).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ASSAY = shutil.which("assay") or "assay"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc"),
    pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)"),
]

JUDGE = {
    "name": "fake",
    "format": "llama-guard-3",
    "backend": "fake",
    "model": "fake",
    "options": {"replies": [["", "safe"]]},
    "resources": {"replicas": 1, "num_cpus": 0.5},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Ray auth or address setting, plus ``extra``."""
    drop = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("ASSAY_")}
    return {**env, **extra}


# -- what runs: processes, sockets, environments -----------------------------------------------


def _descendants(root: int) -> list[int]:
    """The pids of every process below ``root`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    """(local address, pid, process name) of every listening TCP and bound UDP socket of
    ``pids``, from ``ss -ltunpH``."""
    out = subprocess.run(
        ["ss", "-ltunpH"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        local = fields[4]
        for name, pid in re.findall(r'\("([^"]*)",pid=(\d+)', line):
            if int(pid) in pids:
                found.append((local, int(pid), name))
    return found


def _is_loopback(local: str) -> bool:
    host = local.rpartition(":")[0].strip("[]").split("%")[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # "*": every address
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass
class RayProcs:
    """The Ray processes of one assay process (the driver excluded)."""

    driver: int
    pids: list[int]

    @classmethod
    def of(cls, driver: int) -> RayProcs:
        return cls(driver, _descendants(driver))

    def named(self, word: str) -> list[int]:
        return [p for p in self.pids if word in _cmdline(p)]

    def gcs(self) -> int:
        found = self.named("gcs_server")
        assert found, f"no gcs_server under pid {self.driver}"
        return found[0]

    def gcs_address(self) -> str:
        """The GCS's address on loopback (it picks its port; its one listening socket)."""
        ports = {local.rpartition(":")[2] for local, _, _ in _listeners({self.gcs()})}
        assert len(ports) == 1, ports
        return f"127.0.0.1:{ports.pop()}"

    def session_dir(self) -> Path:
        found = re.search(r"--session[-_]dir=(\S+)", _cmdline(self.gcs()))
        assert found, _cmdline(self.gcs())
        return Path(found.group(1))

    def token_path(self) -> str | None:
        found = re.search(rb"(?:^|\0)RAY_AUTH_TOKEN_PATH=([^\0]*)", _environ(self.gcs()))
        return found.group(1).decode() if found else None


# -- the second process ------------------------------------------------------------------------

INTRUDER = """
import json, os, sys
import ray

try:
    ray.init(address=sys.argv[1], logging_level="ERROR", configure_logging=False)

    @ray.remote
    def steal():
        return sorted(os.environ)

    print("CONNECTED", json.dumps(ray.get(steal.remote(), timeout=60)))
except Exception as exc:
    print("REFUSED", type(exc).__name__, exc)
"""


def _intrude(address: str, env: dict[str, str], home: Path) -> str:
    """What a second Ray driver in its own process gets from ``address`` (its output)."""
    home.mkdir(exist_ok=True)  # an empty home: no ~/.ray/auth_token to fall back on
    # Ray's "local Ray only" switch keeps 127.0.0.1 as given (else Ray swaps it for this host's
    # routable address, where nothing of a loopback cluster listens): the intruder reaches it
    done = subprocess.run(
        [sys.executable, "-c", INTRUDER, address],
        env={**env, "HOME": str(home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout + done.stderr


# -- the two starts ----------------------------------------------------------------------------


@dataclass
class Started:
    """A running assay process that started a local Ray, and the tokens it was given."""

    driver: int
    secrets: list[str]

    def procs(self) -> RayProcs:
        procs = RayProcs.of(self.driver)
        assert procs.named("raylet") and procs.named("gcs_server"), procs.pids
        return procs


@dataclass
class Serving(Started):
    url: str


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    """`assay serve` with a fake judge on its own Ray, two tokens in ASSAY_SERVE_TOKENS."""
    tmp = tmp_path_factory.mktemp("serve")
    tokens = [secrets.token_hex(16), secrets.token_hex(16)]
    port = _free_port()
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump({"port": port, "judges": [JUDGE], "num_cpus": 2}))
    out = open(tmp / "serve.out", "w")  # noqa: SIM115 - open for the process's lifetime
    proc = subprocess.Popen(
        [ASSAY, "serve", str(config)],
        env=_clean_env(ASSAY_SERVE_TOKENS=",".join(tokens)),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    token_path = None
    try:
        deadline = time.monotonic() + 300
        while "ready at" not in (tmp / "serve.out").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"assay serve: {(tmp / 'serve.out').read_text()[-3000:]}")
            time.sleep(1)
        headers = {"Authorization": f"Bearer {tokens[1]}"}
        assert httpx.get(f"{url}/v1/judges", headers=headers, timeout=30).status_code == 200
        serving = Serving(proc.pid, tokens, url)
        token_path = serving.procs().token_path()
        yield serving
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        out.close()
    printed = (tmp / "serve.out").read_text()
    assert not [t for t in tokens if t in printed], "a token in the service's output"
    assert proc.returncode == 0, printed[-3000:]
    if token_path is not None:
        assert not Path(token_path).parent.exists()  # the cluster's token went with it


RUN_DRIVER = """
import asyncio, sys
from assay.cluster.executors import RayExecutor
from assay.engine.config import ExecutorSpec, JudgeSpec

async def main():
    executor = RayExecutor(ExecutorSpec(kind="ray", num_cpus=2))
    local = JudgeSpec.model_validate(JUDGES[0])
    remote = JudgeSpec.model_validate(JUDGES[1])
    await executor.pool("judge", local, 0, 0.1)  # a judge actor: a Ray worker
    await executor.pool("judge", remote, 0, 0.1)  # checks the service with the client token
    print("READY", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the test closes stdin
    await executor.shutdown()
    print("DONE", flush=True)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def running(serving: Serving) -> Iterator[Started]:
    """The Ray executor of `assay run` in its own driver: a fake judge actor, and a remote judge
    pool on the service with the client token in ASSAY_SERVE_TOKEN."""
    client_token = serving.secrets[0]
    remote = {
        "name": "shared",
        "format": "llama-guard-3",
        "backend": "remote",
        "model": serving.url,
        "options": {"judge": "fake", "token_env": "ASSAY_SERVE_TOKEN"},
    }
    script = f"JUDGES = {json.dumps([JUDGE, remote])}\n{RUN_DRIVER}"
    token_path = None
    with subprocess.Popen(
        [sys.executable, "-c", script],
        env=_clean_env(ASSAY_SERVE_TOKEN=client_token),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as driver:
        assert driver.stdout is not None and driver.stdin is not None
        try:
            lines = []
            for line in driver.stdout:
                lines.append(line)
                if line.startswith("READY"):
                    break
            assert lines and lines[-1].startswith("READY"), "".join(lines)[-3000:]
            started = Started(driver.pid, [client_token])
            token_path = started.procs().token_path()
            yield started
            driver.stdin.close()
            rest = driver.stdout.read()
            assert driver.wait(120) == 0 and "DONE" in rest, rest[-3000:]
        finally:
            if driver.poll() is None:
                os.killpg(driver.pid, signal.SIGKILL)
    if token_path is not None:
        assert not Path(token_path).parent.exists()  # the cluster's token went with it


@pytest.fixture(params=["serve", "run"])
def started(request: pytest.FixtureRequest) -> Started:
    """Each start in turn: `assay serve`'s, then `assay run`'s."""
    fixture = "serving" if request.param == "serve" else "running"
    value: Started = request.getfixturevalue(fixture)
    return value


# -- the checks --------------------------------------------------------------------------------


def test_a_process_without_the_token_cannot_connect_nor_run_code(
    started: Started, tmp_path: Path
) -> None:
    procs = started.procs()
    address = procs.gcs_address()
    for mode in ({}, {"RAY_AUTH_MODE": "token"}):  # with token mode on, a wrong token
        env = _clean_env(**mode, **({"RAY_AUTH_TOKEN": secrets.token_hex(32)} if mode else {}))
        got = _intrude(address, env, tmp_path / "home")
        assert "CONNECTED" not in got, f"a process without the token ran code: {got[-2000:]}"
        assert re.search(r"Unauthenticated|InvalidAuthToken|AuthenticationError", got), got[-2000:]
    # The cluster's own token: a 0600 file in a 0700 folder, given to Ray by path only.
    token_path = procs.token_path()
    assert token_path is not None, "the Ray processes have no RAY_AUTH_TOKEN_PATH"
    assert Path(token_path).stat().st_mode & 0o077 == 0
    assert Path(token_path).parent.stat().st_mode & 0o077 == 0
    assert Path(token_path).read_text() not in started.secrets
    # With it the same process gets in: the refusal was the token's doing.
    env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_path)
    got = _intrude(address, env, tmp_path / "home")
    assert got.startswith("CONNECTED"), got[-2000:]
    seen = json.loads(got.split(" ", 1)[1].splitlines()[0])
    assert not [k for k in seen if k.startswith("ASSAY_") or k == "RAY_AUTH_TOKEN"], seen


def test_ray_listens_on_loopback_only(started: Started) -> None:
    procs = started.procs()
    listening = _listeners({started.driver, *procs.pids})
    assert any(pid == procs.gcs() for _, pid, _ in listening), listening
    names = {name for _, _, name in listening}
    assert {"gcs_server", "raylet"} <= names, names
    reachable = [entry for entry in listening if not _is_loopback(entry[0])]
    assert not reachable, f"Ray sockets reachable from the network: {reachable}"


def test_no_token_in_ray_environments_or_logs(started: Started) -> None:
    procs = started.procs()
    kinds = ("ServeReplica", "ServeController") if isinstance(started, Serving) else ("Judge",)
    for kind in kinds:  # the workers that matter are among those looked at
        assert procs.named(kind), [_cmdline(p)[:80] for p in procs.pids]
    for pid in procs.pids:
        environ = _environ(pid)
        where = f"pid {pid} ({_cmdline(pid)[:120]})"
        assert b"ASSAY_SERVE_TOKEN" not in environ, f"ASSAY_SERVE_TOKEN(S) in {where}"
        assert not [t for t in started.secrets if t.encode() in environ], f"a token in {where}"
    session = procs.session_dir()
    assert (session / "logs").is_dir(), session
    for path in session.rglob("*"):
        if path.is_file() and not path.is_socket():
            data = path.read_bytes()
            assert not [t for t in started.secrets if t.encode() in data], f"a token in {path}"
