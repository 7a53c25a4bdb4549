"""Safety-judge formats: prompt building, strict output parsing and the risk score.

Each judge model has a :class:`JudgeFormat`, registered by name::

    from assay.engine.judges import JudgeItem, get_judge

    judge = get_judge("qwen3guard", mode="strict")
    request = judge.build_request(JudgeItem(prompt=p, response=r, lang="en"), "row-1")
    # ... a backend generates ``result`` for ``request`` ...
    parsed = judge.parse(result.text)              # label, categories, critique, parse_ok
    score = judge.risk_score(result.label_logprobs)  # P(unsafe) or None

Built in: ``llama-guard-3``, ``llama-guard-4``, ``aegis``, ``nemoguard``, ``qwen3guard``,
``shieldlm``, ``safety-j``, ``harmbench``, ``wildguard``, ``shieldgemma``, ``polyguard``,
``granite-guardian``, ``xguard``, ``gpt-oss-safeguard``, ``assay-critique`` and the model-free
``rule-match`` baseline. Each declares its :class:`Rendering` (how its published prompt is
rendered: the model's own template, a plain turn format of :mod:`.templates`, or raw text);
:mod:`.catalog` describes every format (``assay judges list``). Untrusted text is fenced into
its slot of the prompt (see :class:`Fence`; pass the backend tokenizer's special tokens to
``build_request`` as :class:`SpecialTokens`), and output that cannot be read strictly is left
without a label.
"""

from __future__ import annotations

from . import assay_critique, dialogue, harmbench, llama_guard, nemoguard, qwen3guard
from ._fence import FALLBACK_SPECIAL_TOKENS, Fence, SpecialTokens
from .assay_critique import AssayCritique, AssayCritiqueOptions
from .base import (
    Delimiters,
    JudgeFormat,
    JudgeItem,
    JudgeOptions,
    ParsedOutput,
    Rendering,
    StrictLooseOptions,
    get_judge,
    judge_names,
    register_judge,
)
from .dialogue import SafetyJ, ShieldLM
from .gpt_oss_safeguard import GptOssSafeguard, GptOssSafeguardOptions
from .granite_guardian import GraniteGuardian, GraniteGuardianOptions
from .harmbench import HarmBench
from .llama_guard import Aegis, AegisOptions, LlamaGuard3, LlamaGuard4
from .nemoguard import NemoGuard
from .polyguard import PolyGuard
from .qwen3guard import Qwen3Guard
from .rule_match import RuleMatch, RuleVerdict
from .shieldgemma import ShieldGemma, ShieldGemmaOptions
from .wildguard import WildGuard
from .xguard import XGuard, XGuardDistribution, XGuardOptions

del assay_critique, dialogue, harmbench, llama_guard, nemoguard, qwen3guard

__all__ = [
    "FALLBACK_SPECIAL_TOKENS",
    "Aegis",
    "AegisOptions",
    "AssayCritique",
    "AssayCritiqueOptions",
    "Delimiters",
    "Fence",
    "GptOssSafeguard",
    "GptOssSafeguardOptions",
    "GraniteGuardian",
    "GraniteGuardianOptions",
    "HarmBench",
    "JudgeFormat",
    "JudgeItem",
    "JudgeOptions",
    "LlamaGuard3",
    "LlamaGuard4",
    "NemoGuard",
    "ParsedOutput",
    "Rendering",
    "PolyGuard",
    "Qwen3Guard",
    "RuleMatch",
    "RuleVerdict",
    "SafetyJ",
    "ShieldGemma",
    "ShieldGemmaOptions",
    "ShieldLM",
    "SpecialTokens",
    "StrictLooseOptions",
    "WildGuard",
    "XGuard",
    "XGuardDistribution",
    "XGuardOptions",
    "get_judge",
    "judge_names",
    "register_judge",
]
