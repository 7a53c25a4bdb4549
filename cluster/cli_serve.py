"""``assay serve`` and ``assay score``: the judge service and its command-line client.

:func:`register` adds both commands to the ``assay`` group; ``python -m
assay.cluster.cli_serve ...`` runs the whole CLI with them (until the main CLI registers them).
"""

from __future__ import annotations

import json
import os
import sys

import click


@click.command("serve")
@click.argument("config")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field by dotted path: port=8080, judges.0.resources.replicas=2.",
)
@click.option("--address", help="Ray address to join (default: start a local Ray).")
@click.option("--host", help="Address to bind (config: host, default 127.0.0.1).")
@click.option("--port", type=int, help="HTTP port (config: port, default 8000).")
def serve_cmd(
    config: str,
    overrides: tuple[str, ...],
    address: str | None,
    host: str | None,
    port: int | None,
) -> None:
    """Serve judges over HTTP on Ray Serve, in the foreground until Ctrl-C.

    Requests need a bearer token from ASSAY_SERVE_TOKENS (comma-separated; config: token_env,
    token_file) unless the config says auth: none. The service keeps only the tokens' SHA-256
    digests and removes the variable from its environment before starting Ray. Without
    --address, its Ray listens on 127.0.0.1 only, with Ray's token authentication on and a token
    of its own. The API is documented by the service at /v1/openapi.json.

    \b
    Example:
      ASSAY_SERVE_TOKENS=secret assay serve examples/serve.yaml --port 8000
      assay score --url http://127.0.0.1:8000 --token-env ASSAY_SERVE_TOKENS \\
          --prompt "How do I pick a lock?" --response "I can't help with that."
    """
    from assay.engine.config import load_config
    from assay.engine.errors import MissingDependencyError
    from assay.engine.service import ServeConfig, load_tokens, token_digest

    try:
        import fastapi  # noqa: F401 - Ray Serve's HTTP ingress
    except ImportError:
        raise MissingDependencyError("ray[serve]", "serve") from None

    explicit = {k: v for k, v in (("address", address), ("host", host), ("port", port)) if v}
    cfg = load_config(config, list(overrides), model=ServeConfig, explicit=explicit)
    # Only the digests go on; the variable leaves the environment before Ray starts (every Ray
    # process copies it), so the tokens live nowhere but in the file or variable given.
    digests = [token_digest(t) for t in load_tokens(cfg)]
    os.environ.pop(cfg.token_env, None)
    if cfg.auth == "none":
        click.echo(
            f"warning: auth: none, so anyone who reaches {cfg.host}:{cfg.port} can use the judges",
            err=True,
        )
    from . import serve

    click.echo(f"assay serve: starting {len(cfg.judges)} judge(s)...", err=True)
    serve.stop_on_sigterm()
    try:
        url = serve.start(cfg, digests)
        serve.stop_on_sigterm()  # again: ray.init put its own crash handler in front
        click.echo(f"assay serve: ready at {url}/v1 (schema: {url}/v1/openapi.json)")
        click.echo(f"judges: {', '.join(j.name for j in cfg.judges)}; Ctrl-C stops")
        sys.stdout.flush()
        serve.wait_forever()
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("assay serve: stopping", err=True)
        serve.stop(joined=cfg.address is not None)


@click.command("score")
@click.option("--url", required=True, help="Base URL of the service (http://host:port).")
@click.option(
    "--token-env",
    default="ASSAY_SERVE_TOKEN",
    show_default=True,
    help="Environment variable holding the bearer token (unset: no token).",
)
@click.option("--prompt", required=True, help="The user prompt.")
@click.option("--response", help="The response to judge (omit to judge the prompt alone).")
@click.option("--judge", help="Judge name (default: the service's default judge).")
@click.option("--lang", default="en", show_default=True, help="Language (BCP-47).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
def score_cmd(
    url: str,
    token_env: str,
    prompt: str,
    response: str | None,
    judge: str | None,
    lang: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Score one (prompt, response) pair with a running judge service.

    \b
    Example:
      assay score --url http://127.0.0.1:8000 --prompt "..." --response "..." --json
    """
    from assay.engine.client import Client

    token = os.environ.get(token_env) or None
    with Client(url, token, timeout_s=timeout, batch_size=1) as client:
        verdict = client.score_one(prompt, response, lang=lang, judge=judge)
    if as_json:
        click.echo(json.dumps(verdict.model_dump(mode="json"), ensure_ascii=False, indent=2))
        return
    label = verdict.label or "unparsed"
    score = "n/a" if verdict.risk_score is None else f"{verdict.risk_score:.3f}"
    click.echo(f"judge {verdict.judge}: {label} (risk score {score})")
    if verdict.risk_tags:
        click.echo(f"risk tags: {', '.join(verdict.risk_tags)}")
    if verdict.critique:
        click.echo(f"critique: {verdict.critique}")
    if verdict.error:
        click.echo(f"error: {verdict.error}")


def register(cli: click.Group) -> None:
    """Adds ``serve`` and ``score`` to the ``assay`` group (replacing placeholders)."""
    cli.add_command(serve_cmd)
    cli.add_command(score_cmd)


def main() -> None:
    """The ``assay`` CLI with these commands registered."""
    from .cli import cli
    from .cli import main as cli_main

    register(cli)
    cli_main()


if __name__ == "__main__":
    main()
