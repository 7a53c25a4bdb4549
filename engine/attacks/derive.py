"""Applying attacks to a batch of base cases, with one generator call for the whole batch."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from ..errors import ConfigError
from ..records import TestCase
from ..requests import GenerationRequest, GenerationResult
from .base import Attack, RewriteAttack, check_base
from .registry import resolve_attacks

Generate = Callable[[list[GenerationRequest]], list[GenerationResult]]
"""A batch generator: requests in, one result per request out (matched by ``request_id``).

The caller decides where it runs (in process, on Ray actors, over HTTP)."""


def derive_all(
    cases: Iterable[TestCase],
    attacks: str | Sequence[str | Attack],
    seed: int = 0,
    generate: Generate | None = None,
    *,
    on_attack_row: Literal["raise", "skip"] = "raise",
) -> list[TestCase]:
    """Applies attacks to a batch of base cases.

    Template attacks render directly. The requests of all rewrite attacks (attacks with
    ``needs_generator``) over the whole batch go to ``generate`` in one call (identical requests
    once); each result then goes to its attack's ``finish``. A result that is missing, failed or
    unusable gives that row its attack's fallback (``meta["rewrite"]`` says why); without
    ``generate``, every rewrite attack falls back with the reason ``no generator``.

    Args:
        cases: Base cases (``attack`` None).
        attacks: ``"all"``, comma-separated keys, or a sequence of keys or attack objects
            (an attack named twice is applied once).
        seed: The seed every choice of every attack derives from.
        generate: The batch generator for rewrite attacks, or None.
        on_attack_row: What to do with an input case that is already an attack row: ``raise``
            an :class:`~assay.engine.errors.InputError` naming it, or ``skip`` it.

    Returns:
        For each base case in input order, its attack rows in the order of ``attacks``.

    Raises:
        InputError: An input case is an attack row (with ``on_attack_row="raise"``).
        ConfigError: An attack name is unknown, or an attack that needs a generator is not a
            :class:`RewriteAttack`.
    """
    resolved = _resolve(attacks)
    bases: list[TestCase] = []
    for case in cases:
        if case.attack is not None and on_attack_row == "skip":
            continue
        check_base(case)
        bases.append(case)

    generated: dict[str, GenerationResult] = {}
    if generate is not None:
        requests: dict[str, GenerationRequest] = {}
        for case in bases:
            for attack in resolved:
                if isinstance(attack, RewriteAttack):
                    request = attack.build_request(case, seed)
                    requests.setdefault(request.request_id, request)
        if requests:
            generated = {r.request_id: r for r in generate(list(requests.values()))}

    rows: list[TestCase] = []
    for case in bases:
        for attack in resolved:
            if not isinstance(attack, RewriteAttack):
                rows.append(attack.derive(case, seed))
            elif generate is None:
                rows.append(attack.fallback_row(case, seed, "no generator"))
            else:
                result = generated.get(attack.request_id(case, seed))
                if result is None:
                    rows.append(attack.fallback_row(case, seed, "no result from the generator"))
                else:
                    error = result.error
                    if error is None and result.finish_reason == "error":
                        error = "finish_reason is error"
                    rows.append(attack.finish(case, seed, result.text, error))
    return rows


def _resolve(attacks: str | Sequence[str | Attack]) -> list[Attack]:
    items = [attacks] if isinstance(attacks, str) else attacks
    resolved: dict[str, Attack] = {}
    for item in items:
        for attack in resolve_attacks(item) if isinstance(item, str) else [item]:
            resolved.setdefault(attack.name, attack)
    for attack in resolved.values():
        if attack.needs_generator and not isinstance(attack, RewriteAttack):
            raise ConfigError(
                f"attack {attack.name!r} needs a generator but is not a RewriteAttack "
                "(it has no build_request/finish)"
            )
    return list(resolved.values())
