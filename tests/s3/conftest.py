"""A real S3 server (Ceph radosgw on loopback, cluster/local/s3-server.sh) for the tests here.

The session fixture reuses a server that answers (state folder ``$ASSAY_S3_DIR``, default
/tmp/assay-s3), else starts one (installing the Debian packages if needed) and stops it at the end.
When no server can be started (no apt, no root, not Debian) the tests here are skipped with the
reason, unless ``ASSAY_S3_REQUIRED=1`` (CI: .ci/s3-tests.sh), which turns that into a failure.
``ASSAY_S3_TESTS=0`` skips them without trying.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "cluster" / "local" / "s3-server.sh"


@dataclass
class S3Server:
    """A running S3 server and this session's bucket on it."""

    endpoint: str
    env: dict[str, str]
    state: str
    bucket: str
    started_here: bool
    timings: list[str] = field(default_factory=list)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options for s3:// URLs (credentials come from the environment)."""
        return {"endpoint_url": self.endpoint}

    def url(self, *parts: str) -> str:
        """An s3:// URL in this session's bucket."""
        return "/".join([f"s3://{self.bucket}", *parts])

    def script(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Runs ``s3-server.sh COMMAND`` on this server's state folder."""
        return subprocess.run(
            ["bash", str(SCRIPT), command, self.state],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def s3fs(self) -> Any:
        """A fresh s3fs file system (no instance or listings cache), for checks from outside."""
        import s3fs

        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint, skip_instance_cache=True, use_listings_cache=False
        )

    def pyarrow_fs(self) -> Any:
        """A plain pyarrow S3 file system on this server (no assay, no fsspec)."""
        from pyarrow import fs

        host = self.endpoint.split("://", 1)[1]
        return fs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key=self.env["AWS_ACCESS_KEY_ID"],
            secret_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region="us-east-1",
        )


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            env[key.strip()] = value.strip()
    return env


def _unavailable(reason: str) -> None:
    if os.environ.get("ASSAY_S3_REQUIRED") == "1":
        pytest.fail(f"ASSAY_S3_REQUIRED=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The server (started if none answers), this session's bucket, and the environment set."""
    if os.environ.get("ASSAY_S3_TESTS") == "0":
        pytest.skip("ASSAY_S3_TESTS=0")
    try:
        import s3fs  # noqa: F401
    except ImportError:
        _unavailable('s3fs is not installed (pip install "assay[test]")')
    if shutil.which("bash") is None or shutil.which("setsid") is None:
        _unavailable("the S3 server script needs bash and setsid")
    state = os.environ.get("ASSAY_S3_DIR", "/tmp/assay-s3")

    def run(cmd: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), cmd, state],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    started = False
    t0 = time.monotonic()
    if run("status", 30).returncode == 0:
        proc = run("env", 30)
    else:
        proc = run("start", 600)
        started = proc.returncode == 0
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        _unavailable(f"no S3 server could be started with {SCRIPT.name}: {tail}")
    env = _parse_exports(proc.stdout)
    timings = [line for line in proc.stderr.splitlines() if line.startswith("[s3-server]")]
    timings.append(f"[s3-server] fixture ready in {time.monotonic() - t0:.1f}s")
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("AWS_DEFAULT_REGION", raising=False)  # bucket creation must not name a region
    mp.delenv("AWS_PROFILE", raising=False)
    server = S3Server(
        endpoint=env["AWS_ENDPOINT_URL"],
        env=env,
        state=state,
        bucket=f"assay-test-{uuid.uuid4().hex[:10]}",
        started_here=started,
        timings=timings,
    )
    fs = server.s3fs()
    fs.mkdir(server.bucket)
    try:
        yield server
    finally:
        try:
            if not started:  # a shared server: leave it as we found it
                fs = server.s3fs()
                fs.rm(server.bucket, recursive=True)
        except Exception:  # cleanup of a throwaway bucket must not fail the session
            pass
        mp.undo()
        if started:
            run("stop", 120)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    """The session's server; afterwards, makes sure the gateway is up again for the next test."""
    yield s3_server
    if s3_server.script("status", 30).returncode != 0:
        s3_server.script("start-gateway", 180)
