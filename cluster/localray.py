"""Starting and joining Ray: a Ray that assay starts is closed to everyone else.

Every local Ray that assay starts (``assay run`` / ``select`` / ``generate`` with the Ray
executor and no address, ``assay serve`` without ``--address``) goes through :func:`init`:

- **Token authentication on**, with a token of its own: 256 random bits written to a 0600 file
  in a fresh 0700 directory (``/tmp/assay-ray-*/auth_token``). Ray is pointed at it with
  ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` (Ray's own, documented mechanism; the
  token sources, highest precedence first, are ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``,
  ``~/.ray/auth_token``). The Ray processes inherit the *path*, never the token: ``RAY_AUTH_TOKEN``
  is removed while the cluster runs, so a token the user keeps for another cluster neither
  overrides this one nor reaches its processes. A process without the file cannot connect,
  submit work or call the dashboard agents (Ray answers ``Unauthenticated``). The directory is
  removed when the cluster is shut down (or when the process exits).
- **Loopback only.** The node address is 127.0.0.1, so the GCS, the raylet, the object manager,
  the workers, the dashboard and runtime-env agents and the metrics endpoints listen on 127.0.0.1
  alone. ``ray.init(_node_ip_address="127.0.0.1")`` alone is not enough: Ray swaps a loopback
  node address for the machine's routable one unless Ray clusters are off
  (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``, the switch behind
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``: "local Ray only"), so that switch is turned off for the
  duration of the start. The node address is checked afterwards; any other address fails the
  start.
- **Secrets stay in the driver.** assay's service token variables (``ASSAY_SERVE_TOKENS``,
  ``ASSAY_SERVE_TOKEN`` and any other ``ASSAY_*TOKEN*``) are taken out of the environment while
  Ray starts its processes, which copy the driver's environment (and workers copy the raylet's),
  then put back for the driver alone.

Joining a cluster (an address given) uses that cluster's authentication as the user configured it
(``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH``/``~/.ray/auth_token``); nothing here
changes the mode or the token then.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.engine.errors import FatalError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
TOKEN_FILE = "auth_token"
WITHHELD = ("ASSAY_SERVE_TOKENS", "ASSAY_SERVE_TOKEN")
"""Variables never handed to the processes of a local Ray (besides any ``ASSAY_*TOKEN*``)."""
_SECRET_NAME = re.compile(r"^ASSAY_.*TOKEN", re.IGNORECASE)


@dataclass
class _Local:
    """The local Ray this process started: its token's folder and the environment it replaced."""

    token_dir: Path
    saved_env: dict[str, str | None]


_local: _Local | None = None


def init(address: str | None, **options: Any) -> bool:
    """Starts a private local Ray (``address`` None) or joins the cluster at ``address``.

    ``options`` go to ``ray.init`` (``num_cpus``, ``runtime_env``, ``logging_level``...).
    Returns True when Ray was started here (then :func:`shutdown` stops it and removes its token).
    """
    if address is None:
        start(**options)
        return True
    join(address, **options)
    return False


def join(address: str, **options: Any) -> None:
    """Connects to the cluster at ``address`` with its own authentication, as configured.

    Ray's core caches the auth mode and token the first time it reads them; a process that ran
    a local Ray before (or whose environment changed since) would otherwise join with stale
    settings and be refused (``Failed to connect to Ray cluster``). They are read afresh here.
    """
    import ray

    if ray.is_initialized():
        raise FatalError("a Ray is already running in this process; shut it down first")
    _refresh_ray_auth()
    ray.init(address=address, **options)


def start(*, withhold: Iterable[str] = (), **options: Any) -> dict[str, Any]:
    """Starts a local single-node Ray on 127.0.0.1 with token authentication and a token of its
    own; ``withhold`` names more variables kept from its processes. Returns Ray's address info.

    Raises:
        FatalError: Ray is already running in this process, or it came up on another address.
    """
    global _local
    import ray

    if ray.is_initialized():
        raise FatalError("a Ray is already running in this process; shut it down first")
    token_dir = new_token_dir()
    saved = {name: os.environ.get(name) for name in (AUTH_MODE_ENV, TOKEN_ENV, TOKEN_PATH_ENV)}
    os.environ[AUTH_MODE_ENV] = "token"
    os.environ[TOKEN_PATH_ENV] = str(token_dir / TOKEN_FILE)
    os.environ.pop(TOKEN_ENV, None)
    _refresh_ray_auth()
    _local = _Local(token_dir, saved)
    runtime_env = dict(options.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", f"{__name__}.{loopback_servers.__name__}")
    try:
        with _withheld([*WITHHELD, *withhold]), _loopback_node():
            # "local": a new cluster even when RAY_ADDRESS names another one
            context: Any = ray.init(
                address="local", _node_ip_address=LOOPBACK, runtime_env=runtime_env, **options
            )
        info: dict[str, Any] = dict(context.address_info)
        if info.get("node_ip_address") != LOOPBACK:
            raise FatalError(
                f"the local Ray came up on {info.get('node_ip_address')}, not {LOOPBACK}; "
                "refusing to run a Ray reachable from the network"
            )
    except BaseException:
        shutdown()
        raise
    log.debug("local Ray on %s, token auth on (token in %s)", info.get("gcs_address"), token_dir)
    return info


def shutdown() -> None:
    """Stops Ray in this process; a local Ray's token folder is removed and the Ray variables it
    replaced are put back."""
    global _local
    import ray

    try:
        ray.shutdown()
    finally:
        local, _local = _local, None
        if local is not None:
            for name, value in local.saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            _refresh_ray_auth()
            shutil.rmtree(local.token_dir, ignore_errors=True)


def started_here() -> bool:
    """True while a local Ray started by :func:`start` runs in this process."""
    return _local is not None


def loopback_servers() -> None:
    """Worker setup hook of a local Ray: a gRPC server a worker opens on every interface binds
    to 127.0.0.1 instead.

    Ray Serve's replicas open their inter-deployment gRPC server on ``[::]:0`` whatever the node
    address (``ray.serve._private.replica``, Ray 2.60); it checks Ray's token, but the network
    should not reach it at all. Callers (the replica's handles) reach it at the node address,
    127.0.0.1 here.
    """
    import sys

    from ray._common import tls_utils

    add_port: Callable[[Any, str], Any] = tls_utils.add_port_to_grpc_server
    if getattr(add_port, "_assay_loopback", False):
        return

    def add_loopback_port(server: Any, address: str) -> Any:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{LOOPBACK}:{port}"
        return add_port(server, address)

    add_loopback_port._assay_loopback = True  # type: ignore[attr-defined]
    tls_utils.add_port_to_grpc_server = add_loopback_port
    replica = sys.modules.get("ray.serve._private.replica")  # imported before the hook ran
    if replica is not None:
        replica.add_port_to_grpc_server = add_loopback_port  # type: ignore[attr-defined]


def new_token_dir() -> Path:
    """A fresh 0700 folder holding a new random token in a 0600 file (``TOKEN_FILE``): what a
    local Ray gets, and what a cluster started with ``ray start`` can be given
    (``RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<folder>/auth_token``)."""
    folder = Path(tempfile.mkdtemp(prefix="assay-ray-"))  # mkdtemp: 0700, owner only
    fd = os.open(folder / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32))  # 256 bits, as `ray get-auth-token --generate`
    return folder


def _refresh_ray_auth() -> None:
    """Makes this process's Ray core read the auth mode and token again (it caches both), as
    Ray's own token setup does after changing them."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")  # the config first: it says whether a token is needed at all
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _withheld(names: Iterable[str]) -> Iterator[None]:
    """Takes the named variables (and any ``ASSAY_*TOKEN*``) out of the environment inside."""
    wanted = set(names) | {n for n in os.environ if _SECRET_NAME.match(n)}
    held = {n: os.environ.pop(n) for n in sorted(wanted) if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(held)


@contextmanager
def _loopback_node() -> Iterator[None]:
    """Lets Ray keep 127.0.0.1 as the node address (see the module docstring)."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


@atexit.register
def _stop_at_exit() -> None:
    # Ray first, then its token: a Ray process still up must not find its token file gone.
    if _local is not None:
        shutdown()


__all__ = [
    "LOOPBACK",
    "TOKEN_FILE",
    "WITHHELD",
    "init",
    "join",
    "loopback_servers",
    "new_token_dir",
    "shutdown",
    "start",
    "started_here",
]
