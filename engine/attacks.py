"""Attack keys: the names an attack prompt's ``attack`` field may take.

The 10 S-Eval attacks are built in; packages add their own through the ``assay.attacks`` entry-point
group (the attack plugins themselves, which derive prompts, come with ``assay attack``).
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

SEVAL_ATTACKS: tuple[str, ...] = (
    "positive_induction",
    "reverse_induction",
    "code_injection",
    "instruction_jailbreak",
    "goal_hijacking",
    "instruction_encryption",
    "deepinception",
    "in_context_attack",
    "chain_of_utterances",
    "compositional_instructions",
)
"""S-Eval's 10 attacks, by the keys used in its data."""


@functools.cache
def known_attacks() -> frozenset[str]:
    """The S-Eval attacks plus those registered by installed packages."""
    extra = {ep.name for ep in entry_points(group="assay.attacks")}
    return frozenset(SEVAL_ATTACKS) | extra


def normalize_attack(value: str) -> str:
    """An attack key in canonical form: 'Goal Hijacking' -> 'goal_hijacking'."""
    return "_".join(value.strip().lower().replace("-", " ").split())
