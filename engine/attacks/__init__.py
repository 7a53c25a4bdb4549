"""Adversarial attacks: S-Eval's 10 attacks as plugins that derive attack prompts from base prompts.

::

    from assay.engine.attacks import derive_all, get_attack

    rows = derive_all(base_cases, "all", seed=0, generate=backend_generate)
    row = get_attack("goal_hijacking").derive(base_case, seed=0)

Built in, in S-Eval's order: ``positive_induction``, ``reverse_induction`` (generator),
``code_injection``, ``instruction_jailbreak``, ``goal_hijacking``, ``instruction_encryption``,
``deepinception``, ``in_context_attack`` (generator), ``chain_of_utterances`` and
``compositional_instructions`` (generator). The templates are assay's own, in English and Chinese
(other languages get the English ones); the attacks marked "generator" ask a generator LLM for part
of the prompt and fall back to templates without one. Packages add attacks through the
``assay.attacks`` entry-point group (see :mod:`.registry`); :func:`known_attacks` lists every key
an imported row's ``attack`` field may take.
"""

from __future__ import annotations

from ..lang import lang_key
from . import code_injection, compositional, encryption, hijacking, in_context, induction, roleplay
from .base import (
    Attack,
    Chooser,
    RejectedOutput,
    Rendered,
    RewriteAttack,
    SimpleTemplateAttack,
    TemplateAttack,
    check_base,
    fill,
    pick,
)
from .code_injection import CodeInjection
from .compositional import CompositionalInstructions
from .derive import Generate, derive_all
from .encryption import InstructionEncryption
from .hijacking import GoalHijacking
from .in_context import InContextAttack
from .induction import PositiveInduction, ReverseInduction
from .registry import (
    ENTRY_POINT_GROUP,
    SEVAL_ATTACKS,
    AttackFactory,
    get_attack,
    known_attacks,
    list_attacks,
    normalize_attack,
    refresh_plugins,
    register_attack,
    resolve_attacks,
)
from .roleplay import ChainOfUtterances, DeepInception, InstructionJailbreak

del code_injection, compositional, encryption, hijacking, in_context, induction, roleplay

__all__ = [
    "ENTRY_POINT_GROUP",
    "SEVAL_ATTACKS",
    "Attack",
    "AttackFactory",
    "ChainOfUtterances",
    "Chooser",
    "CodeInjection",
    "CompositionalInstructions",
    "DeepInception",
    "Generate",
    "GoalHijacking",
    "InContextAttack",
    "InstructionEncryption",
    "InstructionJailbreak",
    "PositiveInduction",
    "RejectedOutput",
    "Rendered",
    "ReverseInduction",
    "RewriteAttack",
    "SimpleTemplateAttack",
    "TemplateAttack",
    "check_base",
    "derive_all",
    "fill",
    "get_attack",
    "known_attacks",
    "lang_key",
    "list_attacks",
    "normalize_attack",
    "pick",
    "refresh_plugins",
    "register_attack",
    "resolve_attacks",
]
