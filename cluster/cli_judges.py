"""``assay judges list`` and ``assay judges show NAME``: the judge formats and their contracts."""

from __future__ import annotations

import json

import click


def register(cli: click.Group) -> None:
    """Adds the ``judges`` group to ``cli``."""

    @cli.group()
    def judges() -> None:
        """Show the judge formats: how each prompt is rendered, its label tokens and policy."""

    @judges.command("list")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per format.")
    def judges_list(as_json: bool) -> None:
        """List every judge format (built-in and plugins) with its rendering contract.

        \b
        Example:
          assay judges list
        """
        from assay.engine.judges.catalog import judge_cards

        for card in judge_cards():
            if as_json:
                click.echo(card.model_dump_json())
                continue
            labels = ", ".join(repr(t) for t in next(iter(card.labels.values()), {})) or "-"
            click.echo(f"{card.name:<20} {card.rendering_kind:<6} labels {labels}")
            click.echo(f"{'':<20} {card.summary}")

    @judges.command("show")
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True, help="The card as JSON.")
    def judges_show(name: str, as_json: bool) -> None:
        """Show one judge format: rendering, source, label tokens, policy and options.

        \b
        Examples:
          assay judges show llama-guard-3
          assay judges show qwen3guard --json
        """
        from assay.engine.judges.catalog import judge_card

        card = judge_card(name)
        if as_json:
            click.echo(json.dumps(card.model_dump(), indent=2, ensure_ascii=False, default=str))
            return
        click.echo(f"{card.name}: {card.summary}")
        click.echo(f"  rendering   {card.rendering}")
        if card.own_template_marker:
            click.echo(f"  own template recognised by {card.own_template_marker!r}")
        click.echo(f"  source      {card.source}")
        click.echo(
            f"  labels read after the assistant prefix {card.assistant_prefix!r}, in context"
        )
        for lang, labels in card.labels.items():
            shown = ", ".join(f"{token!r} -> {label}" for token, label in labels.items())
            click.echo(f"  labels[{lang}]  {shown}")
        click.echo(
            f"  prompt only {'yes' if card.prompt_only else 'no'}; max_tokens {card.max_tokens}"
        )
        if card.policy:
            published = "published" if card.policy.get("published") == "yes" else "NOT published"
            policy, source = card.policy.get("name"), card.policy.get("source")
            click.echo(f"  policy      {policy} ({published}): {source}")
        for key, option in card.options.items():
            click.echo(f"  option {key} = {option['default']!r}: {option['description']}")
